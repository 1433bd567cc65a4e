-- A channel's updated_at follows its last UPDATE.
CREATE OR REPLACE FUNCTION realtime.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

-- Created once (no lock on the table at later start-ups). To change a trigger's
-- definition, a new schema file drops it and this file creates the new one.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'realtime.channels'::regclass
                 AND tgname = 'channels_touch_updated_at') THEN
    CREATE TRIGGER channels_touch_updated_at BEFORE UPDATE ON realtime.channels
      FOR EACH ROW EXECUTE FUNCTION realtime.touch_updated_at();
  END IF;
END $$;
