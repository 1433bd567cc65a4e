-- The roles a caller may act as: the one allow-list of the SQL. Every function that
-- switches to a caller's role checks it against this list (realtime.assume_caller,
-- realtime.publish_items, realtime.visible_keys). Equal to pgrealtime.auth.ROLES and to
-- the roles schema/001_baseline.sql creates (tests/db/test_role_allow_list.py).
-- IMMUTABLE: a constant, folded into the plans that use it.
CREATE OR REPLACE FUNCTION realtime.allowed_roles() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT '{anon,authenticated,project_admin}'::text[]
$$;
