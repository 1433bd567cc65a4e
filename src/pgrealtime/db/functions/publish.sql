-- Publish from SQL (e.g. an application's trigger): stores a 'system' message on the
-- governing channel and returns its id, or NULL when no enabled channel matches.
--
-- Runs as its owner and stores 'system' messages past the publish policies: for the
-- application's own code (triggers, jobs running as the owner), not for clients. No
-- client role may call it unless the operator grants it (docs/permissions.md).
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

REVOKE ALL ON FUNCTION realtime.publish(text, text, jsonb) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION realtime.publish(text, text, jsonb) TO project_admin;
