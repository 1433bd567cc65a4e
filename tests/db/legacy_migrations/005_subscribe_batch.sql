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
