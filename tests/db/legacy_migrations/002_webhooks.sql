-- Durable webhook deliveries: one row per (message, URL), written by triggers in the
-- same transaction as the message, so a committed message always has its deliveries
-- and a rolled-back one never does. Server processes claim due rows with
-- FOR UPDATE SKIP LOCKED and a lease, so exactly one of them sends each attempt.

CREATE TABLE IF NOT EXISTS realtime.webhook_deliveries (
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
  UNIQUE (message_id, url)
);

-- The claim query walks pending rows by due time; finished rows stay out of the index.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx
  ON realtime.webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Only the server's own login reads or writes deliveries.
ALTER TABLE realtime.webhook_deliveries ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON realtime.webhook_deliveries FROM PUBLIC, anon, authenticated;
GRANT ALL ON realtime.webhook_deliveries TO project_admin;
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'realtime'
                 AND tablename = 'webhook_deliveries'
                 AND policyname = 'project_admin_all_webhook_deliveries') THEN
    CREATE POLICY project_admin_all_webhook_deliveries ON realtime.webhook_deliveries
      FOR ALL TO project_admin USING (true) WITH CHECK (true);
  END IF;
END $$;

-- The distinct, non-blank URLs of a channel: what both triggers below count and insert.
CREATE OR REPLACE FUNCTION realtime.webhook_targets(p_channel_id uuid) RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, realtime AS $$
  SELECT DISTINCT u
  FROM realtime.channels c, unnest(c.webhook_urls) AS u
  WHERE c.id = p_channel_id AND u IS NOT NULL AND btrim(u) <> ''
$$;
REVOKE ALL ON FUNCTION realtime.webhook_targets(uuid) FROM PUBLIC;

-- Host part of a URL, lower-cased ('' when it has none).
CREATE OR REPLACE FUNCTION realtime.webhook_url_host(p_url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(lower(substring(p_url
    FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\[[^]/?#]*\]|[^:/?#]*)')), '')
$$;

-- BEFORE INSERT: the message's webhook audience is its channel's URL count, whatever the
-- inserter wrote. Runs as the owner (SECURITY DEFINER): messages are inserted as the
-- caller's role under RLS, which may hide the channel row from the caller.
CREATE OR REPLACE FUNCTION realtime.webhook_set_audience() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, realtime AS $$
DECLARE
  v_urls text[];
BEGIN
  SELECT c.webhook_urls INTO v_urls FROM realtime.channels c WHERE c.id = NEW.channel_id;
  IF coalesce(cardinality(v_urls), 0) = 0 THEN
    NEW.wh_audience_count := 0;  -- the common case, kept cheap: no webhooks
  ELSE
    NEW.wh_audience_count := (SELECT count(*) FROM realtime.webhook_targets(NEW.channel_id));
  END IF;
  NEW.wh_delivered_count := 0;
  RETURN NEW;
END $$;

-- AFTER INSERT (only when there is an audience): one pending delivery per URL, and a
-- wake-up for the workers. If the channel's URLs changed between the two triggers,
-- the count is corrected to what was actually queued.
CREATE OR REPLACE FUNCTION realtime.webhook_enqueue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, realtime AS $$
DECLARE
  v_queued integer;
BEGIN
  INSERT INTO realtime.webhook_deliveries (message_id, url, host, next_attempt_at,
                                           retry_from, created_at, updated_at)
  SELECT NEW.id, t.url, realtime.webhook_url_host(t.url), now(), now(), now(), now()
  FROM realtime.webhook_targets(NEW.channel_id) AS t(url)
  ON CONFLICT (message_id, url) DO NOTHING;
  GET DIAGNOSTICS v_queued = ROW_COUNT;
  IF v_queued <> NEW.wh_audience_count THEN
    UPDATE realtime.messages SET wh_audience_count = v_queued WHERE id = NEW.id;
  END IF;
  IF v_queued > 0 THEN
    PERFORM pg_notify('realtime_webhook', '');
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS messages_webhook_audience ON realtime.messages;
CREATE TRIGGER messages_webhook_audience BEFORE INSERT ON realtime.messages
  FOR EACH ROW EXECUTE FUNCTION realtime.webhook_set_audience();

DROP TRIGGER IF EXISTS messages_webhook_enqueue ON realtime.messages;
CREATE TRIGGER messages_webhook_enqueue AFTER INSERT ON realtime.messages
  FOR EACH ROW WHEN (NEW.wh_audience_count > 0) EXECUTE FUNCTION realtime.webhook_enqueue();
