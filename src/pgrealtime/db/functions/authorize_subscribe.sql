-- Subscribe: which channel governs the name, may the caller SELECT it, and the
-- channel's current position (where live delivery to the new subscriber starts).
-- status: 'ok' | 'no_channel' | 'denied'.
CREATE OR REPLACE FUNCTION realtime.authorize_subscribe(p_role text, p_claims text, p_channel text)
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

-- Subscribe checks in batches: during a reconnect storm many sessions subscribe at
-- once, and one round trip for all of them costs far less than one each. Every item
-- is still checked on its own, under its caller's role and claims.
CREATE OR REPLACE FUNCTION realtime.authorize_subscribe_batch(
  p_roles text[], p_claims text[], p_channels text[]
)
RETURNS TABLE (idx integer, status text, channel_id uuid, "position" bigint)
LANGUAGE plpgsql AS $$
DECLARE
  i integer;
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_roles, 1), 0) LOOP
    RETURN QUERY SELECT i, a.status, a.channel_id, a.position
                 FROM realtime.authorize_subscribe(p_roles[i], p_claims[i], p_channels[i]) a;
  END LOOP;
END $$;
