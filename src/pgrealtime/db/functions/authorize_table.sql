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

REVOKE ALL ON FUNCTION realtime.authorize_table(text, text, text, text) FROM PUBLIC;
