-- Hardening of the publish path (review issue 11).
--
-- 1. Retention: a database nobody has used yet (no channel, no message) keeps messages
--    30 days instead of forever, so one account cannot fill the disk by default. A
--    database in use keeps its setting, also NULL (unlimited): it cannot be told apart
--    from an explicit choice, and an upgrade must not start deleting history. GET/PATCH
--    /api/realtime/config read and change it as before; `serve` prints it at start-up.
UPDATE realtime.config SET retention_days = 30
WHERE retention_days IS NULL
  AND NOT EXISTS (SELECT 1 FROM realtime.channels)
  AND NOT EXISTS (SELECT 1 FROM realtime.messages);
ALTER TABLE realtime.config ALTER COLUMN retention_days SET DEFAULT 30;

-- 2. SQL realtime.publish() runs as its owner and stores 'system' messages past the
--    publish policies: for the application's own code (triggers, jobs running as the
--    owner), not for clients. No client role may call it unless the operator grants it
--    (docs/permissions.md). publish_items and publish_batch choose the caller's role
--    and sender id from their arguments: only the server (the owner) calls them.
REVOKE ALL ON FUNCTION realtime.publish(text, text, jsonb) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION realtime.publish(text, text, jsonb) TO project_admin;
REVOKE ALL ON FUNCTION realtime.publish_items(jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION
  realtime.publish_batch(text[], text[], text[], text[], jsonb[], uuid[], text) FROM PUBLIC;

-- 3. publish_items tells a refusal from a failure. Before, any error storing an item
--    (a deadlock, a lock timeout, an application trigger raising) was 'denied' and the
--    client was told REALTIME_UNAUTHORIZED, so it did not retry. Now:
--      'denied'      insufficient_privilege (RLS WITH CHECK), or a data exception
--                    (class 22) in a policy evaluated on this message
--      'unavailable' a transient failure (classes 40, 53, 57P, 58; 55P03, 55006, 57014)
--      'failed'      any other error
--    detail is 'SQLSTATE: message'. Otherwise as in 006.
CREATE OR REPLACE FUNCTION realtime.publish_items(p_items jsonb, p_origin text)
RETURNS TABLE (idx integer, status text, channel_id text, created_at timestamptz,
               seq bigint, "position" bigint, detail text)
LANGUAGE plpgsql
-- the final query's custom plans were re-planned on every call (arrays as constants)
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  n integer := coalesce(jsonb_array_length(p_items), 0);
  i integer;
  v_item jsonb;
  v_name text;
  v_role text;
  v_channel uuid;
  v_governing jsonb;
  v_ts timestamptz;
  v_status text[] := '{}';
  v_ids uuid[] := '{}';
  v_channels uuid[] := '{}';
  v_times timestamptz[] := '{}';
  v_details text[] := '{}';
  v_state text;
BEGIN
  PERFORM set_config('realtime.origin', coalesce(p_origin, ''), true);
  -- realtime.match_channel for every distinct name at once, as {name: channel id}
  -- (same order of preference; tests/test_publisher.py checks that both agree)
  SELECT jsonb_object_agg(g.name, g.id) INTO v_governing
  FROM (
    SELECT DISTINCT ON (d.name) d.name, c.id
    FROM (SELECT DISTINCT e ->> 'n' AS name FROM jsonb_array_elements(p_items) e) d
    JOIN realtime.channels c ON c.enabled AND d.name LIKE realtime.pattern_to_like(c.pattern)
    ORDER BY d.name, realtime.pattern_wildcards(c.pattern),
             length(c.pattern) - realtime.pattern_wildcards(c.pattern) DESC,
             c.pattern COLLATE "C"
  ) g;
  FOR i IN 0 .. n - 1 LOOP
    v_item := p_items -> i;
    v_name := v_item ->> 'n';
    v_channel := (v_governing ->> v_name)::uuid;
    v_channels := v_channels || v_channel;
    IF v_channel IS NULL THEN
      v_status := v_status || 'no_channel'::text;
      v_ids := v_ids || NULL::uuid;
      v_times := v_times || NULL::timestamptz;
      v_details := v_details || NULL::text;
      CONTINUE;
    END IF;
    v_ts := clock_timestamp();
    BEGIN
      v_role := v_item ->> 'r';
      IF v_role IS NULL OR v_role NOT IN ('anon', 'authenticated', 'project_admin') THEN
        RAISE EXCEPTION 'role % is not allowed', v_role USING ERRCODE = 'insufficient_privilege';
      END IF;
      -- as realtime.assume_caller: transaction-local claims, channel name and role
      PERFORM set_config('request.jwt.claims', coalesce(v_item ->> 'c', '{}'), true),
              set_config('realtime.channel_name', v_name, true),
              set_config('role', v_role, true);
      INSERT INTO realtime.messages
        (id, event_name, channel_id, channel_name, payload, sender_type, sender_id, created_at)
      VALUES ((v_item ->> 'i')::uuid, v_item ->> 'e', v_channel, v_name,
              coalesce(v_item -> 'p', '{}'::jsonb), 'user', (v_item ->> 's')::uuid, v_ts);
      PERFORM set_config('role', 'none', true);
      v_status := v_status || 'ok'::text;
      v_ids := v_ids || (v_item ->> 'i')::uuid;
      v_times := v_times || v_ts;
      v_details := v_details || NULL::text;
    EXCEPTION WHEN OTHERS THEN
      v_state := SQLSTATE;
      v_status := v_status || (CASE
        -- refused by a policy (or no INSERT grant), or a policy that failed on this
        -- message's values (a claim or a name that does not cast): a refusal
        WHEN v_state = '42501' OR v_state LIKE '22%' THEN 'denied'
        -- deadlock, serialization, lock or statement timeout, out of resources,
        -- shutting down: nothing wrong with the message, trying again may work
        WHEN v_state LIKE '40%' OR v_state LIKE '53%' OR v_state LIKE '57P%'
          OR v_state LIKE '58%' OR v_state IN ('55P03', '55006', '57014') THEN 'unavailable'
        -- anything else, e.g. an application trigger or constraint refusing it
        ELSE 'failed'
      END);
      v_ids := v_ids || NULL::uuid;
      v_times := v_times || NULL::timestamptz;
      v_details := v_details || (v_state || ': ' || SQLERRM);
    END;
  END LOOP;
  -- LATERAL with LIMIT (not pulled up into a join): one primary-key probe per item,
  -- whatever the statistics say; a plain join was planned as a scan of the whole
  -- table on every batch while the table was young and not yet analyzed.
  RETURN QUERY
    SELECT t.o::integer, t.s, t.c::text, t.ts, m.seq, m.position, t.d
    FROM unnest(v_status, v_ids, v_channels, v_times, v_details)
         WITH ORDINALITY AS t(s, id, c, ts, d, o)
    LEFT JOIN LATERAL (
      SELECT msg.seq, msg.position FROM realtime.messages msg WHERE msg.id = t.id LIMIT 1
    ) m ON true
    ORDER BY t.o;
END $$;
