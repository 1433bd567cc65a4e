-- The caller as policies see it: claims set per transaction by the server as
-- `request.jwt.claims`, and the concrete channel being asked for (e.g. 'order:123').
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT CASE
    WHEN auth.jwt() ->> 'sub' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    THEN (auth.jwt() ->> 'sub')::uuid
  END
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT auth.jwt() ->> 'role'
$$;

-- The concrete channel being asked for, for subscribe policies.
CREATE OR REPLACE FUNCTION realtime.channel_name() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('realtime.channel_name', true), '')
$$;

GRANT EXECUTE ON FUNCTION auth.jwt(), auth.uid(), auth.role(), realtime.channel_name()
  TO anon, authenticated, project_admin;
