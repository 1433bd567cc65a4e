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

REVOKE ALL ON FUNCTION realtime.publish_table(text, text, text) FROM PUBLIC;
