-- The one BEFORE INSERT trigger of realtime.messages: the message's position and its
-- webhook audience. One call for both jobs (they were two SECURITY DEFINER triggers
-- before: 4-7 % less time per row). Runs as the table owner: callers publish under
-- their own role and may neither write the counters nor see every channel row.
CREATE OR REPLACE FUNCTION realtime.messages_before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, realtime AS $$
DECLARE
  v_urls text[];
BEGIN
  -- the name's next position, under the row lock of its counter (gapless, in
  -- commit order per channel name)
  INSERT INTO realtime.channel_positions AS p (channel_name, position)
  VALUES (NEW.channel_name, 1)
  ON CONFLICT (channel_name) DO UPDATE SET position = p.position + 1
  RETURNING p.position INTO NEW.position;
  -- how many webhook deliveries this message will have
  SELECT c.webhook_urls INTO v_urls FROM realtime.channels c WHERE c.id = NEW.channel_id;
  IF coalesce(cardinality(v_urls), 0) = 0 THEN
    NEW.wh_audience_count := 0;  -- the common case, kept cheap: no webhooks
  ELSE
    NEW.wh_audience_count := (SELECT count(*) FROM realtime.webhook_targets(NEW.channel_id));
  END IF;
  NEW.wh_delivered_count := 0;
  RETURN NEW;
END $$;

-- Created once (see touch_updated_at.sql).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'realtime.messages'::regclass
                 AND tgname = 'messages_before_insert') THEN
    CREATE TRIGGER messages_before_insert BEFORE INSERT ON realtime.messages
      FOR EACH ROW EXECUTE FUNCTION realtime.messages_before_insert();
  END IF;
END $$;
