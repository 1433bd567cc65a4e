-- Row level security checks of change batches that scale with the number of viewers.
-- Same rules as 003's realtime.visible_rows (kept there for history, dropped here):
-- each viewer's rows are decided by PostgreSQL, by a SELECT under that viewer's role
-- and claims; a viewer without SELECT, or whose policy raises, sees nothing, and only
-- that viewer is affected.
--
-- What is cheaper, and why it matters (with 1,000 distinct users, the old function
-- spent ~10 ms per viewer per 1,000-row batch: a re-planned dynamic query, a
-- jsonb_populate_record per key, and the policy evaluated for every key row):
--   * the keys arrive once, as text per key column, and are cast ONCE per call to the
--     column's type (format_type of pg_attribute) into an array constant;
--   * the per-viewer query is PREPAREd once per call and only EXECUTEd per viewer, so
--     it is planned once (again only when the role changes: RLS plans are per role);
--   * it filters with `key = ANY(<constant array>)` (hashed by PostgreSQL), so the
--     planner can drive the scan from the policy instead: `owner = auth.uid()` with an
--     index on `owner` becomes an index condition evaluated once per viewer, and only
--     that viewer's rows are read. Without such an index it still looks the batch's
--     keys up by primary key, as before;
--   * role and claims are set with set_config(), in a subtransaction per viewer (a
--     few microseconds), instead of a PL/pgSQL call that runs dynamic SET ROLE.

DROP FUNCTION IF EXISTS realtime.visible_rows(text, text, text[], jsonb, text[], text[]);

-- The per-viewer loop: runs the prepared statement p_statement (which returns
-- (viewer, key text) rows of the table that the current role and claims may SELECT)
-- once per viewer, each in its own subtransaction. A row (viewer, NULL) marks a viewer
-- whose query finished: rows of a viewer whose query failed midway (a policy raising
-- on some row) already went out, and the caller drops them for want of that marker.
-- Viewers are taken grouped by role, so the prepared plan is re-planned only when the
-- role changes. Only for realtime.visible_rows (EXECUTE is revoked from PUBLIC).
CREATE OR REPLACE FUNCTION realtime.visible_keys(
  p_statement text, p_roles text[], p_claims text[], p_channel text
)
RETURNS TABLE (viewer integer, key text)
LANGUAGE plpgsql AS $$
DECLARE
  i integer;
  v_execute text := format('EXECUTE %I(%%s)', p_statement);
BEGIN
  PERFORM set_config('realtime.channel_name', coalesce(p_channel, ''), true);
  FOR i IN
    SELECT v.n::integer FROM unnest(p_roles) WITH ORDINALITY AS v(r, n)
    WHERE v.r IN ('anon', 'authenticated', 'project_admin')  -- the allow-list
    ORDER BY v.r, v.n
  LOOP
    BEGIN
      PERFORM set_config('request.jwt.claims', coalesce(p_claims[i], '{}'), true),
              set_config('role', p_roles[i], true);
      RETURN QUERY EXECUTE format(v_execute, i);
      viewer := i;
      key := NULL;
      RETURN NEXT;
    EXCEPTION WHEN OTHERS THEN
      NULL;  -- no SELECT on the table, or its policy failed: this viewer sees nothing
    END;
  END LOOP;
  PERFORM set_config('role', 'none', true);
END $$;

-- Which rows of a batch may each caller SELECT now? One call per table per batch for a
-- whole group of subscribers. Returns (viewer, row_index) pairs, both 1-based
-- positions in p_roles/p_claims and in the keys.
--
-- p_keys holds the keys' values as PostgreSQL text, column by column: the n values of
-- the first key column, then the n values of the second, and so on (n is the number
-- of keys, cardinality(p_keys) / cardinality(p_key_columns)). Each column's values are
-- cast to the column's own type, so keys compare with the type's equality.
CREATE OR REPLACE FUNCTION realtime.visible_rows(
  p_schema text, p_table text, p_key_columns text[], p_keys text[],
  p_roles text[], p_claims text[]
)
RETURNS TABLE (viewer integer, row_index integer)
LANGUAGE plpgsql AS $$
DECLARE
  c_statement CONSTANT text := 'realtime_visible_rows';
  v_ncols integer := coalesce(cardinality(p_key_columns), 0);
  v_nkeys integer;
  v_rel oid;
  v_filter text[] := '{}';  -- per key column: t.col = ANY(<typed constant>)
  v_texts text[] := '{}';  -- per key column: its text as the statement returns it
  v_key_texts_sql text[] := '{}';  -- the same, of the batch's keys
  v_arrays text[] := '{}';  -- per key column: the typed constant
  v_key_sql text;
  v_batch_key_sql text;
  v_key_texts text[];
  r record;
  j integer := 0;
  v_low text;
  v_high text;
  v_range text;
  v_in_range bigint;
BEGIN
  IF v_ncols = 0 THEN
    RAISE EXCEPTION 'visible_rows needs the key columns of %.%', p_schema, p_table;
  END IF;
  v_nkeys := coalesce(cardinality(p_keys), 0) / v_ncols;
  IF v_nkeys = 0 OR coalesce(cardinality(p_roles), 0) = 0 THEN
    RETURN;
  END IF;
  IF v_nkeys * v_ncols <> cardinality(p_keys) THEN
    RAISE EXCEPTION 'visible_rows: % key values for % key columns', cardinality(p_keys), v_ncols;
  END IF;
  SELECT c.oid INTO v_rel
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = p_schema AND c.relname = p_table AND c.relkind IN ('r', 'p');
  IF v_rel IS NULL THEN
    RETURN;  -- dropped since: nobody sees its rows
  END IF;

  FOR r IN
    SELECT k.name, a.attname, format_type(a.atttypid, NULL) AS type,
           t.typcategory = 'A' AS is_array, a.attcollation <> 0 AS collatable
    FROM unnest(p_key_columns) WITH ORDINALITY AS k(name, n)
    LEFT JOIN pg_catalog.pg_attribute a
      ON a.attrelid = v_rel AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    ORDER BY k.n
  LOOP
    IF r.attname IS NULL THEN
      RETURN;  -- a key column dropped or renamed since: the rows cannot be looked up
    END IF;
    j := j + 1;
    IF r.is_array THEN
      -- an array can't be an element of an array constant: compare its text
      v_arrays := v_arrays || format('%L::text[]', p_keys[(j - 1) * v_nkeys + 1 : j * v_nkeys]);
      v_filter := v_filter || format('t.%I::text = ANY(%s)', r.attname, v_arrays[j]);
      v_texts := v_texts || format('t.%I::text', r.attname);
      v_key_texts_sql := v_key_texts_sql || format('k.c%s::text', j);
    ELSE
      v_arrays := v_arrays || format('%L::%s[]', p_keys[(j - 1) * v_nkeys + 1 : j * v_nkeys],
                                     r.type);
      v_filter := v_filter || format('t.%I = ANY(%s)', r.attname, v_arrays[j]);
      v_texts := v_texts || format('t.%I::text', r.attname);
      v_key_texts_sql := v_key_texts_sql || format('k.c%s::text', j);
    END IF;
  END LOOP;
  -- A single key column whose batch keys lie close together (serial ids): filter by
  -- their range instead of `= ANY`. PostgreSQL builds the hash table of an `= ANY`
  -- array on every execution, i.e. once per viewer (~70 us per 1,000 keys); two
  -- comparisons cost nothing. Taken only when the range holds at most twice as many
  -- rows as the batch has keys, so a viewer's query stays bounded by the batch even
  -- when no index serves the policy; the join below keeps the batch's keys only.
  -- Not for collatable types (the range would follow the column's collation).
  IF v_ncols = 1 AND NOT r.is_array AND NOT r.collatable THEN
    BEGIN
      EXECUTE format('SELECT (SELECT x FROM unnest(%1$s) x ORDER BY x LIMIT 1)::text, '
                     '(SELECT x FROM unnest(%1$s) x ORDER BY x DESC LIMIT 1)::text',
                     v_arrays[1])
        INTO v_low, v_high;
      v_range := format('t.%I BETWEEN %L::%s AND %L::%s',
                        r.attname, v_low, r.type, v_high, r.type);
      EXECUTE format('SELECT count(*) FROM (SELECT FROM %I.%I AS t WHERE %s LIMIT %s) s',
                     p_schema, p_table, v_range, 2 * v_nkeys + 1)
        INTO v_in_range;
      IF v_in_range <= 2 * v_nkeys THEN
        v_filter := ARRAY[v_range];
      END IF;
    EXCEPTION WHEN OTHERS THEN
      NULL;  -- no ordering, or the table may not be read as the server: keep `= ANY`
    END;
  END IF;
  -- one text per key (an array's text form, so composite keys stay unambiguous),
  -- produced the same way for the batch's keys and for the rows a viewer may see
  v_key_sql := format('ARRAY[%s]::text', array_to_string(v_texts, ', '));
  v_batch_key_sql := format('ARRAY[%s]::text', array_to_string(v_key_texts_sql, ', '));

  IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE name = c_statement) THEN
    EXECUTE format('DEALLOCATE %I', c_statement);  -- left by a call that was cancelled
  END IF;
  BEGIN
    -- the batch's keys, cast once, in the same text form as the statement returns
    EXECUTE format('SELECT array_agg(%s ORDER BY k.ord) FROM ROWS FROM (%s) WITH ORDINALITY '
                   'AS k(%s, ord)',
                   v_batch_key_sql,
                   (SELECT string_agg(format('unnest(%s)', a), ', ') FROM unnest(v_arrays) a),
                   (SELECT string_agg('c' || g, ', ') FROM generate_series(1, v_ncols) g))
      INTO v_key_texts;
    EXECUTE format('PREPARE %I(integer) AS SELECT $1, %s FROM %I.%I AS t WHERE %s',
                   c_statement, v_key_sql, p_schema, p_table,
                   array_to_string(v_filter, ' AND '));
  EXCEPTION WHEN OTHERS THEN
    -- a key that no longer parses as its column's type (the type changed since):
    -- the rows cannot be checked, so nobody gets them
    RAISE WARNING 'realtime.visible_rows: cannot look up rows of %.%: %',
      p_schema, p_table, SQLERRM;
    RETURN;
  END;

  RETURN QUERY
    WITH seen AS MATERIALIZED (
      SELECT * FROM realtime.visible_keys(c_statement, p_roles, p_claims, 'db:' || p_table)
    )
    SELECT s.viewer, k.n::integer
    FROM seen s
    JOIN unnest(v_key_texts) WITH ORDINALITY AS k(key, n) ON k.key = s.key
    WHERE s.viewer IN (SELECT d.viewer FROM seen d WHERE d.key IS NULL);
  EXECUTE format('DEALLOCATE %I', c_statement);
END $$;

REVOKE ALL ON FUNCTION realtime.visible_keys(text, text[], text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.visible_rows(text, text, text[], text[], text[], text[]) FROM PUBLIC;
