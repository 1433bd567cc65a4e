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
