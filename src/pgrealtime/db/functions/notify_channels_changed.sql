-- Channel changes made anywhere (REST on another process, or SQL) wake every server,
-- which then ends the subscriptions whose governing channel is gone or different. The
-- payload is the changing server's origin (realtime.origin, set by its REST handler in
-- the transaction; '' from SQL): that server re-checked already and skips its own.
CREATE OR REPLACE FUNCTION realtime.notify_channels_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('realtime_channels', coalesce(current_setting('realtime.origin', true), ''));
  RETURN NULL;
END $$;

-- Created once (see touch_updated_at.sql).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'realtime.channels'::regclass
                 AND tgname = 'channels_changed') THEN
    CREATE TRIGGER channels_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
      ON realtime.channels FOR EACH STATEMENT EXECUTE FUNCTION realtime.notify_channels_changed();
  END IF;
END $$;
