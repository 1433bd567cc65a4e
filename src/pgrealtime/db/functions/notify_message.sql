-- Wake-up for the servers' listeners: only '<id>:<origin>' travels (NOTIFY payloads
-- are small). A server fans out its own publishes directly and sets realtime.origin,
-- so it can skip its own notifications; other server processes deliver them.
-- An origin starting with 'quiet:' is a server whose messages a broker (NATS) carries
-- to the others: no NOTIFY, so its commits do not queue for PostgreSQL's NOTIFY lock.
CREATE OR REPLACE FUNCTION realtime.notify_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  origin text := coalesce(current_setting('realtime.origin', true), '');
BEGIN
  IF left(origin, 6) = 'quiet:' THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('realtime_message', NEW.id::text || ':' || origin);
  RETURN NULL;
END $$;

-- Created once (see touch_updated_at.sql).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'realtime.messages'::regclass
                 AND tgname = 'messages_notify') THEN
    CREATE TRIGGER messages_notify AFTER INSERT ON realtime.messages
      FOR EACH ROW EXECUTE FUNCTION realtime.notify_message();
  END IF;
END $$;
