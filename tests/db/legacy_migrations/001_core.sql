-- Core schema, compatible with InsForge's `realtime` schema: an application written
-- against its tables, functions and policies works unchanged.

CREATE SCHEMA IF NOT EXISTS realtime;
CREATE SCHEMA IF NOT EXISTS auth;

-- Roles the server switches to for permission checks. NOLOGIN: nobody connects as them.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'project_admin'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
    END IF;
    -- the server's own login must be able to SET ROLE to each of them
    IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
      EXECUTE format('GRANT %I TO %I', r, current_user);
    END IF;
  END LOOP;
END $$;

-- Claims of the caller, set per transaction by the server as `request.jwt.claims`.
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

-- The concrete channel being asked for (e.g. 'order:123'), for subscribe policies.
CREATE OR REPLACE FUNCTION realtime.channel_name() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('realtime.channel_name', true), '')
$$;

CREATE TABLE IF NOT EXISTS realtime.channels (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pattern text UNIQUE NOT NULL,
  description text,
  webhook_urls text[],
  enabled boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- '%' (InsForge) and '*' are the same wildcard: 'order:%' and 'order:*' are one pattern.
CREATE UNIQUE INDEX IF NOT EXISTS channels_pattern_normalized_key
  ON realtime.channels ((replace(pattern, '%', '*')));

CREATE OR REPLACE FUNCTION realtime.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS channels_touch_updated_at ON realtime.channels;
CREATE TRIGGER channels_touch_updated_at BEFORE UPDATE ON realtime.channels
  FOR EACH ROW EXECUTE FUNCTION realtime.touch_updated_at();

CREATE TABLE IF NOT EXISTS realtime.messages (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  event_name text NOT NULL,
  channel_id uuid REFERENCES realtime.channels(id) ON DELETE SET NULL,
  channel_name text NOT NULL,
  payload jsonb NOT NULL DEFAULT '{}',
  sender_type text NOT NULL DEFAULT 'system' CHECK (sender_type IN ('system', 'user')),
  sender_id uuid,
  ws_audience_count integer NOT NULL DEFAULT 0,
  wh_audience_count integer NOT NULL DEFAULT 0,
  wh_delivered_count integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  seq bigint GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX IF NOT EXISTS messages_created_at_idx ON realtime.messages (created_at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS messages_channel_created_idx
  ON realtime.messages (channel_id, created_at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS messages_channel_name_seq_idx ON realtime.messages (channel_name, seq);

CREATE TABLE IF NOT EXISTS realtime.config (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  retention_days integer CHECK (retention_days IS NULL OR retention_days > 0)
);
INSERT INTO realtime.config (id, retention_days) VALUES (true, NULL) ON CONFLICT DO NOTHING;

-- Pattern matching, shared by SQL and mirrored in pgrealtime.channels (Python):
-- '*' and '%' match any run of characters; every other character is literal.
CREATE OR REPLACE FUNCTION realtime.pattern_to_like(p_pattern text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT replace(replace(replace(p_pattern, '\', '\\'), '_', '\_'), '*', '%')
$$;

CREATE OR REPLACE FUNCTION realtime.pattern_wildcards(p_pattern text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT length(p_pattern) - length(replace(replace(p_pattern, '*', ''), '%', ''))
$$;

-- The enabled channel that governs a concrete name: exact name first, then fewer
-- wildcards, then the longer literal text, then the pattern text (deterministic).
CREATE OR REPLACE FUNCTION realtime.match_channel(p_name text)
RETURNS realtime.channels
LANGUAGE sql STABLE AS $$
  SELECT c.* FROM realtime.channels c
  WHERE c.enabled AND p_name LIKE realtime.pattern_to_like(c.pattern)
  ORDER BY realtime.pattern_wildcards(c.pattern),
           length(c.pattern) - realtime.pattern_wildcards(c.pattern) DESC,
           c.pattern COLLATE "C"
  LIMIT 1
$$;

-- Publish from SQL (e.g. an application's trigger): stores a 'system' message on the
-- governing channel and returns its id, or NULL when no enabled channel matches.
CREATE OR REPLACE FUNCTION realtime.publish(channel_name text, event_name text, payload jsonb)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, realtime AS $$
DECLARE
  v_channel realtime.channels;
  v_id uuid;
BEGIN
  v_channel := realtime.match_channel(publish.channel_name);
  IF v_channel.id IS NULL THEN
    RETURN NULL;
  END IF;
  INSERT INTO realtime.messages (event_name, channel_id, channel_name, payload, sender_type)
  VALUES (publish.event_name, v_channel.id, publish.channel_name,
          coalesce(publish.payload, '{}'::jsonb), 'system')
  RETURNING id INTO v_id;
  RETURN v_id;
END $$;

-- Wake-up for the servers' listeners: only '<id>:<origin>' travels (NOTIFY payloads
-- are small). A server fans out its own publishes directly and sets realtime.origin,
-- so it can skip its own notifications; other server processes deliver them.
CREATE OR REPLACE FUNCTION realtime.notify_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('realtime_message',
                    NEW.id::text || ':' || coalesce(current_setting('realtime.origin', true), ''));
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS messages_notify ON realtime.messages;
CREATE TRIGGER messages_notify AFTER INSERT ON realtime.messages
  FOR EACH ROW EXECUTE FUNCTION realtime.notify_message();

-- Permission checks run as the caller. One round trip each: these functions switch to
-- the caller's role (from the allow-list) with the caller's claims bound as values.
CREATE OR REPLACE FUNCTION realtime.assume_caller(p_role text, p_claims text, p_channel text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_role NOT IN ('anon', 'authenticated', 'project_admin') THEN
    RAISE EXCEPTION 'role % is not allowed', p_role USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('request.jwt.claims', coalesce(p_claims, '{}'), true);
  PERFORM set_config('realtime.channel_name', coalesce(p_channel, ''), true);
  EXECUTE format('SET LOCAL ROLE %I', p_role);
END $$;

-- Subscribe: which channel governs the name, and may the caller SELECT it?
-- status: 'ok' | 'no_channel' | 'denied'.
CREATE OR REPLACE FUNCTION realtime.authorize_subscribe(p_role text, p_claims text, p_channel text)
RETURNS TABLE (status text, channel_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
  v_channel realtime.channels;
  v_visible boolean;
BEGIN
  v_channel := realtime.match_channel(p_channel);
  IF v_channel.id IS NULL THEN
    RETURN QUERY SELECT 'no_channel'::text, NULL::uuid;
    RETURN;
  END IF;
  BEGIN
    PERFORM realtime.assume_caller(p_role, p_claims, p_channel);
    SELECT EXISTS (SELECT 1 FROM realtime.channels c WHERE c.id = v_channel.id) INTO v_visible;
    RESET ROLE;
  EXCEPTION WHEN OTHERS THEN
    -- a policy that fails on this input (say, a bad uuid in the name) cannot grant access
    v_visible := false;
  END;
  RETURN QUERY SELECT CASE WHEN v_visible THEN 'ok' ELSE 'denied' END, v_channel.id;
END $$;

-- Publish a batch of messages, each as its own caller: the INSERT under the caller's
-- role is the permission check (RLS WITH CHECK decides). One item's refusal does not
-- affect the others. status: 'ok' | 'no_channel' | 'denied'.
CREATE OR REPLACE FUNCTION realtime.publish_batch(
  p_roles text[], p_claims text[], p_channels text[], p_events text[],
  p_payloads jsonb[], p_senders uuid[], p_origin text
)
RETURNS TABLE (idx integer, status text, message_id uuid, channel_id uuid, created_at timestamptz,
               seq bigint, detail text)
LANGUAGE plpgsql AS $$
DECLARE
  i integer;
  v_channel realtime.channels;
  v_id uuid;
  v_ts timestamptz;
BEGIN
  PERFORM set_config('realtime.origin', coalesce(p_origin, ''), true);
  FOR i IN 1 .. coalesce(array_length(p_roles, 1), 0) LOOP
    v_channel := realtime.match_channel(p_channels[i]);
    IF v_channel.id IS NULL THEN
      RETURN QUERY SELECT i, 'no_channel'::text, NULL::uuid, NULL::uuid, NULL::timestamptz,
                          NULL::bigint, NULL::text;
      CONTINUE;
    END IF;
    v_id := gen_random_uuid();
    v_ts := clock_timestamp();
    BEGIN
      PERFORM realtime.assume_caller(p_roles[i], p_claims[i], p_channels[i]);
      INSERT INTO realtime.messages
        (id, event_name, channel_id, channel_name, payload, sender_type, sender_id, created_at)
      VALUES (v_id, p_events[i], v_channel.id, p_channels[i], p_payloads[i], 'user', p_senders[i],
              v_ts);
      RESET ROLE;
      RETURN QUERY SELECT i, 'ok'::text, v_id, v_channel.id, v_ts,
                          (SELECT m.seq FROM realtime.messages m WHERE m.id = v_id), NULL::text;
    EXCEPTION WHEN OTHERS THEN  -- refused by a policy, or a policy that failed on it
      RETURN QUERY SELECT i, 'denied'::text, NULL::uuid, v_channel.id, NULL::timestamptz,
                          NULL::bigint, SQLERRM;
    END;
  END LOOP;
END $$;

-- Secure by default: RLS on, and only the two policies of the specification.
ALTER TABLE realtime.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'realtime'
                 AND tablename = 'channels' AND policyname = 'allow_authenticated_subscribe') THEN
    CREATE POLICY allow_authenticated_subscribe ON realtime.channels
      FOR SELECT TO authenticated USING (enabled = true);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'realtime'
                 AND tablename = 'messages' AND policyname = 'allow_authenticated_publish') THEN
    CREATE POLICY allow_authenticated_publish ON realtime.messages
      FOR INSERT TO authenticated WITH CHECK (true);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'realtime'
                 AND tablename = 'channels' AND policyname = 'project_admin_all_channels') THEN
    CREATE POLICY project_admin_all_channels ON realtime.channels
      FOR ALL TO project_admin USING (true) WITH CHECK (true);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'realtime'
                 AND tablename = 'messages' AND policyname = 'project_admin_all_messages') THEN
    CREATE POLICY project_admin_all_messages ON realtime.messages
      FOR ALL TO project_admin USING (true) WITH CHECK (true);
  END IF;
END $$;

GRANT USAGE ON SCHEMA realtime, auth TO anon, authenticated, project_admin;
GRANT EXECUTE ON FUNCTION auth.jwt(), auth.uid(), auth.role(), realtime.channel_name()
  TO anon, authenticated, project_admin;
GRANT SELECT ON realtime.channels TO anon, authenticated;
GRANT INSERT ON realtime.messages TO anon, authenticated;
GRANT ALL ON realtime.channels, realtime.messages, realtime.config TO project_admin;
REVOKE ALL ON FUNCTION realtime.publish(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.publish(text, text, jsonb) TO authenticated, project_admin;
