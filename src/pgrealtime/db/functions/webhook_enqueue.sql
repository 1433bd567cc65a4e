-- AFTER INSERT (only when there is an audience): one pending delivery per URL, and a
-- wake-up for the workers. If the channel's URLs changed since the BEFORE INSERT
-- trigger (messages_before_insert) counted them,
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

-- Created once (see touch_updated_at.sql).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'realtime.messages'::regclass
                 AND tgname = 'messages_webhook_enqueue') THEN
    CREATE TRIGGER messages_webhook_enqueue AFTER INSERT ON realtime.messages
      FOR EACH ROW WHEN (NEW.wh_audience_count > 0) EXECUTE FUNCTION realtime.webhook_enqueue();
  END IF;
END $$;
