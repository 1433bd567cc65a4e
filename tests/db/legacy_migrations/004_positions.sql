-- Per-channel positions: every stored message gets the next number of its concrete
-- channel name (1, 2, 3, ...), so a client can resume with `since` and a server can
-- tell a gap from a duplicate. The counter row is locked until the inserting
-- transaction ends, so positions of one channel are committed in order and without
-- holes: once position n is visible, every position below it is visible too
-- (unless retention or DELETE /messages removed it since).

CREATE TABLE IF NOT EXISTS realtime.channel_positions (
  channel_name text PRIMARY KEY,
  position bigint NOT NULL
);

ALTER TABLE realtime.messages ADD COLUMN IF NOT EXISTS position bigint;

-- Messages stored before this migration get positions in their original order.
WITH numbered AS (
  SELECT id, row_number() OVER (PARTITION BY channel_name ORDER BY seq) AS n
  FROM realtime.messages WHERE position IS NULL
)
UPDATE realtime.messages m SET position = numbered.n FROM numbered WHERE m.id = numbered.id;

INSERT INTO realtime.channel_positions (channel_name, position)
SELECT channel_name, max(position) FROM realtime.messages GROUP BY channel_name
ON CONFLICT (channel_name) DO UPDATE SET position = EXCLUDED.position;

ALTER TABLE realtime.messages ALTER COLUMN position SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS messages_channel_name_position_key
  ON realtime.messages (channel_name, position);

-- Runs as the table owner: callers publish under their own role and may not write
-- the counters themselves.
CREATE OR REPLACE FUNCTION realtime.assign_position() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, realtime AS $$
BEGIN
  INSERT INTO realtime.channel_positions AS p (channel_name, position)
  VALUES (NEW.channel_name, 1)
  ON CONFLICT (channel_name) DO UPDATE SET position = p.position + 1
  RETURNING p.position INTO NEW.position;
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS messages_assign_position ON realtime.messages;
CREATE TRIGGER messages_assign_position BEFORE INSERT ON realtime.messages
  FOR EACH ROW EXECUTE FUNCTION realtime.assign_position();

-- Subscribe now also answers the channel's current position, where live delivery
-- to the new subscriber starts.
DROP FUNCTION IF EXISTS realtime.authorize_subscribe(text, text, text);
CREATE FUNCTION realtime.authorize_subscribe(p_role text, p_claims text, p_channel text)
RETURNS TABLE (status text, channel_id uuid, "position" bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_channel realtime.channels;
  v_visible boolean;
BEGIN
  v_channel := realtime.match_channel(p_channel);
  IF v_channel.id IS NULL THEN
    RETURN QUERY SELECT 'no_channel'::text, NULL::uuid, NULL::bigint;
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
  RETURN QUERY SELECT CASE WHEN v_visible THEN 'ok' ELSE 'denied' END, v_channel.id,
    coalesce((SELECT p.position FROM realtime.channel_positions p
              WHERE p.channel_name = p_channel), 0);
END $$;

-- publish_batch also answers each message's position.
DROP FUNCTION IF EXISTS realtime.publish_batch(text[], text[], text[], text[], jsonb[], uuid[], text);
CREATE FUNCTION realtime.publish_batch(
  p_roles text[], p_claims text[], p_channels text[], p_events text[],
  p_payloads jsonb[], p_senders uuid[], p_origin text
)
RETURNS TABLE (idx integer, status text, message_id uuid, channel_id uuid, created_at timestamptz,
               seq bigint, "position" bigint, detail text)
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
                          NULL::bigint, NULL::bigint, NULL::text;
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
      RETURN QUERY SELECT i, 'ok'::text, v_id, v_channel.id, v_ts, m.seq, m.position, NULL::text
                   FROM realtime.messages m WHERE m.id = v_id;
    EXCEPTION WHEN OTHERS THEN  -- refused by a policy, or a policy that failed on it
      RETURN QUERY SELECT i, 'denied'::text, NULL::uuid, v_channel.id, NULL::timestamptz,
                          NULL::bigint, NULL::bigint, SQLERRM;
    END;
  END LOOP;
END $$;

-- Channel changes made anywhere (REST on another process, or SQL) wake every server,
-- which then ends the subscriptions whose governing channel is gone or different.
CREATE OR REPLACE FUNCTION realtime.notify_channels_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('realtime_channels', '');
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS channels_changed ON realtime.channels;
CREATE TRIGGER channels_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
  ON realtime.channels FOR EACH STATEMENT EXECUTE FUNCTION realtime.notify_channels_changed();
