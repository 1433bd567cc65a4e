-- Database change notifications (`db:<table>` channels): permission checks that run as
-- the subscriber, with the subscriber's claims, so the application's own grants and RLS
-- policies decide who sees which row. The publication and the replication slot are not
-- created here: the change feed creates them at start-up, and only where wal_level
-- allows it. The publication starts empty; `realtime.publish_table` adds a table to it
-- when a caller first subscribes to that table (never FOR ALL TABLES: that would make
-- PostgreSQL refuse UPDATE and DELETE on every table without a primary key).

-- May this caller subscribe to changes of schema.table at all?
-- 'ok' | 'no_table' | 'denied'. Needs USAGE on the schema and SELECT on the table
-- (column-level grants alone are not enough: a change carries whole rows).
-- A missing table is 'no_table' only for a caller with USAGE on the schema and SELECT
-- on every table in it: whatever it asks, an existing table would be 'ok' for it, so
-- telling it apart reveals nothing. For anyone else a missing table is 'denied', like a
-- forbidden one, so refusals do not reveal which tables exist.
CREATE OR REPLACE FUNCTION realtime.authorize_table(
  p_role text, p_claims text, p_schema text, p_table text
)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  v_rel oid;
  v_ok boolean;
BEGIN
  SELECT c.oid INTO v_rel
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = p_schema AND c.relname = p_table AND c.relkind IN ('r', 'p');
  IF v_rel IS NULL THEN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = p_schema) THEN
      RETURN 'denied';
    END IF;
    PERFORM realtime.assume_caller(p_role, p_claims, 'db:' || p_table);
    v_ok := has_schema_privilege(p_schema, 'USAGE') AND NOT EXISTS (
      SELECT 1
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = p_schema AND c.relkind IN ('r', 'p')
        AND NOT has_table_privilege(c.oid, 'SELECT'));
    RESET ROLE;
    RETURN CASE WHEN v_ok THEN 'no_table' ELSE 'denied' END;
  END IF;
  PERFORM realtime.assume_caller(p_role, p_claims, 'db:' || p_table);
  v_ok := has_schema_privilege(p_schema, 'USAGE') AND has_table_privilege(v_rel, 'SELECT');
  RESET ROLE;
  RETURN CASE WHEN v_ok THEN 'ok' ELSE 'denied' END;
END $$;

-- Can UPDATE and DELETE of this table still work once it is published? PostgreSQL
-- refuses them on a published table without a usable replica identity: a primary key
-- (identity DEFAULT), an identity index that still exists (USING INDEX), or FULL.
-- For a partitioned table every leaf partition must have one.
CREATE OR REPLACE FUNCTION realtime.has_replica_identity(p_rel oid)
RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT NOT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_class c
    WHERE (c.oid = p_rel OR c.oid IN (
            SELECT t.relid FROM pg_catalog.pg_partition_tree(p_rel) t WHERE t.isleaf))
      AND c.relkind = 'r' AND NOT (
      c.relreplident = 'f'
      OR (c.relreplident = 'd' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
      OR (c.relreplident = 'i' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))))
$$;

-- Make sure the changes of schema.table are published. Called by the server on its own
-- connection, as its own role, after the caller was authorized (never under
-- assume_caller: EXECUTE is revoked from PUBLIC, so a caller's role cannot run it).
-- ALTER PUBLICATION ... ADD TABLE needs the table's owner or a superuser.
-- 'published' (already was) | 'added' | 'no_publication' (the change feed is off) |
-- 'no_table' | 'no_identity' (adding it would break the application's UPDATE and
-- DELETE) | 'not_owner' | 'busy' (the table stayed locked, e.g. by CREATE INDEX).
CREATE OR REPLACE FUNCTION realtime.publish_table(
  p_publication text, p_schema text, p_table text
)
RETURNS text
LANGUAGE plpgsql
SET lock_timeout = '5s'  -- for this call only
AS $$
DECLARE
  v_rel oid;
  v_all boolean;
BEGIN
  SELECT c.oid INTO v_rel
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = p_schema AND c.relname = p_table AND c.relkind IN ('r', 'p');
  IF v_rel IS NULL THEN
    RETURN 'no_table';
  END IF;
  SELECT puballtables INTO v_all FROM pg_catalog.pg_publication WHERE pubname = p_publication;
  IF v_all OR EXISTS (
    SELECT 1 FROM pg_catalog.pg_publication_tables
    WHERE pubname = p_publication AND schemaname = p_schema AND tablename = p_table
  ) THEN
    RETURN 'published';
  END IF;
  IF NOT realtime.has_replica_identity(v_rel) THEN
    RETURN 'no_identity';
  END IF;
  IF v_all IS NULL THEN
    RETURN 'no_publication';
  END IF;
  BEGIN
    EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', p_publication, p_schema, p_table);
  EXCEPTION
    WHEN duplicate_object THEN
      RETURN 'published';  -- added by a concurrent subscribe
    WHEN insufficient_privilege THEN
      RETURN 'not_owner';
    WHEN lock_not_available THEN
      RETURN 'busy';
  END;
  RETURN 'added';
END $$;

-- Which rows of a batch may each caller SELECT now? One call per table per batch for a
-- whole group of subscribers: for each distinct (role, claims) pair it switches to that
-- caller and runs one query over all the batch's keys. Returns (viewer, row_index)
-- pairs, both 1-based positions in p_roles/p_claims and p_keys.
--
-- p_keys is a jsonb array of objects {key column: PostgreSQL text of the value}; each is
-- turned into a typed record with jsonb_populate_record, so keys of any type compare
-- with the column's own equality. A caller without SELECT sees nothing.
CREATE OR REPLACE FUNCTION realtime.visible_rows(
  p_schema text, p_table text, p_key_columns text[], p_keys jsonb,
  p_roles text[], p_claims text[]
)
RETURNS TABLE (viewer integer, row_index integer)
LANGUAGE plpgsql AS $$
DECLARE
  v_sql text;
  i integer;
BEGIN
  IF coalesce(array_length(p_key_columns, 1), 0) = 0 THEN
    RAISE EXCEPTION 'visible_rows needs the key columns of %.%', p_schema, p_table;
  END IF;
  SELECT format(
    'SELECT $2, e.n::integer FROM jsonb_array_elements($1) WITH ORDINALITY AS e(doc, n) '
    'CROSS JOIN LATERAL jsonb_populate_record(NULL::%1$I.%2$I, e.doc) AS k '
    'WHERE EXISTS (SELECT 1 FROM %1$I.%2$I AS t WHERE %3$s)',
    p_schema, p_table,
    string_agg(format('t.%1$I = k.%1$I', c), ' AND '))
  INTO v_sql
  FROM unnest(p_key_columns) AS c;

  FOR i IN 1 .. coalesce(array_length(p_roles, 1), 0) LOOP
    BEGIN
      PERFORM realtime.assume_caller(p_roles[i], p_claims[i], 'db:' || p_table);
      RETURN QUERY EXECUTE v_sql USING p_keys, i;
      RESET ROLE;
    EXCEPTION WHEN insufficient_privilege THEN
      NULL;  -- no SELECT (or a role outside the allow-list): sees nothing
    END;
  END LOOP;
  RESET ROLE;
END $$;

REVOKE ALL ON FUNCTION realtime.authorize_table(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.visible_rows(text, text, text[], jsonb, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.publish_table(text, text, text) FROM PUBLIC;
