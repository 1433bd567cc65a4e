-- The schema as the thirteen numbered migrations of the first development cycle
-- (001_core .. 013_channel_webhook_secrets) left it, squashed into one file: tables,
-- columns, constraints, indexes, row level security, grants and seed rows.
--
-- Applied once, in a transaction, and recorded in realtime.schema_migrations. A
-- database migrated by those thirteen files is recorded as at this file without
-- running it (pgrealtime/db/migrate.py). From here on this folder is append-only: a
-- later change of a table is a new numbered file (002_..., 003_...), never an edit.
--
-- Function bodies are not here: they live in ../functions/*.sql, one file per function
-- or small concern, re-applied at every start-up after these files (so changing a
-- function is editing its file). Triggers are created there too, right after their
-- function: a CREATE TRIGGER needs its function to exist.
--
-- Compatible with InsForge's `realtime` schema: an application written against its
-- tables, functions and policies works unchanged.

CREATE SCHEMA IF NOT EXISTS realtime;
CREATE SCHEMA IF NOT EXISTS auth;

-- Roles the server switches to for permission checks. NOLOGIN: nobody connects as them.
-- The same list as realtime.allowed_roles() (functions/allowed_roles.sql) and
-- pgrealtime.auth.ROLES; tests/db/test_role_allow_list.py holds the three equal.
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

-- Channels: the patterns a client may subscribe and publish to.
CREATE TABLE realtime.channels (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pattern text UNIQUE NOT NULL,
  description text,
  webhook_urls text[],
  enabled boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- '%' (InsForge) and '*' are the same wildcard: 'order:%' and 'order:*' are one pattern.
CREATE UNIQUE INDEX channels_pattern_normalized_key
  ON realtime.channels ((replace(pattern, '%', '*')));

-- Messages. `position` is the message's number within its concrete channel name
-- (1, 2, 3, ...), given by the BEFORE INSERT trigger (functions/messages_before_insert.sql):
-- clients resume with `since`, and servers tell a gap from a duplicate.
CREATE TABLE realtime.messages (
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
  seq bigint GENERATED ALWAYS AS IDENTITY,
  position bigint NOT NULL
);

CREATE INDEX messages_created_at_idx ON realtime.messages (created_at DESC, seq DESC);
CREATE INDEX messages_channel_created_idx
  ON realtime.messages (channel_id, created_at DESC, seq DESC);
-- every read of a channel's messages in order goes by (channel_name, position)
CREATE UNIQUE INDEX messages_channel_name_position_key
  ON realtime.messages (channel_name, position);

-- The last position of each channel name. Its row stays locked until the inserting
-- transaction ends, so positions of one channel are committed in order and without
-- holes: once position n is visible, every position below it is visible too (unless
-- retention or DELETE /messages removed it since).
CREATE TABLE realtime.channel_positions (
  channel_name text PRIMARY KEY,
  position bigint NOT NULL
);

-- Settings kept in the database. A fresh database keeps messages 30 days, so one
-- account cannot fill the disk by default; GET/PATCH /api/realtime/config change it.
CREATE TABLE realtime.config (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  retention_days integer DEFAULT 30 CHECK (retention_days IS NULL OR retention_days > 0)
);
INSERT INTO realtime.config (id) VALUES (true);

-- Durable webhook deliveries: one row per (message, URL), written by triggers in the
-- same transaction as the message, so a committed message always has its deliveries
-- and a rolled-back one never does. Server processes claim due rows with
-- FOR UPDATE SKIP LOCKED and a lease, so exactly one of them sends each attempt.
CREATE TABLE realtime.webhook_deliveries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  message_id uuid NOT NULL REFERENCES realtime.messages(id) ON DELETE CASCADE,
  url text NOT NULL,
  -- lower-cased host of url, the key of per-host concurrency limits
  host text NOT NULL DEFAULT '',
  status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
  attempts integer NOT NULL DEFAULT 0,
  -- when a pending row is due; while claimed, when the claim's lease runs out
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- the claim holding the row; results are recorded only by the holder
  lease_token uuid,
  last_error text,
  last_status_code integer,
  -- retries run for a period counted from here: creation, or the last manual requeue
  retry_from timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  -- when a receiver asked for a wait (Retry-After), the earliest time it allows the
  -- next attempt: a host seen answering again makes its deliveries in backoff due at
  -- once, except these (pgrealtime/webhooks/store.py, pull_forward). NULL for a plain
  -- backoff step.
  retry_not_before timestamptz,
  UNIQUE (message_id, url)
);

-- The claim query walks pending rows by due time; finished rows stay out of the index.
CREATE INDEX webhook_deliveries_due_idx
  ON realtime.webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- A webhook signing secret per channel (optional; the server's --webhook-secret signs
-- the others). Its own table rather than a column of realtime.channels: anon and
-- authenticated may SELECT every column of realtime.channels (subscribe policies read
-- it), and a secret must never be readable by clients.
CREATE TABLE realtime.channel_webhook_secrets (
  channel_id uuid PRIMARY KEY REFERENCES realtime.channels(id) ON DELETE CASCADE,
  secret text NOT NULL CHECK (length(secret) > 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Secure by default: RLS on, and only the two policies of the specification for the
-- client roles. Deliveries and secrets are for the server's own login alone.
ALTER TABLE realtime.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.channel_webhook_secrets ENABLE ROW LEVEL SECURITY;

CREATE POLICY allow_authenticated_subscribe ON realtime.channels
  FOR SELECT TO authenticated USING (enabled = true);
CREATE POLICY allow_authenticated_publish ON realtime.messages
  FOR INSERT TO authenticated WITH CHECK (true);
CREATE POLICY project_admin_all_channels ON realtime.channels
  FOR ALL TO project_admin USING (true) WITH CHECK (true);
CREATE POLICY project_admin_all_messages ON realtime.messages
  FOR ALL TO project_admin USING (true) WITH CHECK (true);
CREATE POLICY project_admin_all_webhook_deliveries ON realtime.webhook_deliveries
  FOR ALL TO project_admin USING (true) WITH CHECK (true);

-- Table privileges. Function privileges are granted and revoked in the function's
-- own file, after its CREATE.
GRANT USAGE ON SCHEMA realtime, auth TO anon, authenticated, project_admin;
GRANT SELECT ON realtime.channels TO anon, authenticated;
GRANT INSERT ON realtime.messages TO anon, authenticated;
GRANT ALL ON realtime.channels, realtime.messages, realtime.config TO project_admin;
REVOKE ALL ON realtime.webhook_deliveries FROM PUBLIC, anon, authenticated;
GRANT ALL ON realtime.webhook_deliveries TO project_admin;
REVOKE ALL ON realtime.channel_webhook_secrets FROM PUBLIC;
