-- The distinct, non-blank URLs of a channel: what realtime.messages_before_insert
-- counts and realtime.webhook_enqueue inserts.
CREATE OR REPLACE FUNCTION realtime.webhook_targets(p_channel_id uuid) RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, realtime AS $$
  SELECT DISTINCT u
  FROM realtime.channels c, unnest(c.webhook_urls) AS u
  WHERE c.id = p_channel_id AND u IS NOT NULL AND btrim(u) <> ''
$$;
REVOKE ALL ON FUNCTION realtime.webhook_targets(uuid) FROM PUBLIC;
