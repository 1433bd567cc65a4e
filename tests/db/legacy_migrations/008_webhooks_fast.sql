-- Webhook outcomes written in batches: one call records every delivery of a batch that
-- a worker sent successfully, and counts them on their messages, in one round trip
-- (one statement per delivery before). Each row is written only while it still
-- carries the claim's token, so a stale claim's late result changes nothing.
--
-- The messages' counters are locked in id order before they are incremented: two
-- processes recording batches that share messages (a message with several URLs) take
-- the locks in the same order and cannot deadlock.

CREATE OR REPLACE FUNCTION realtime.webhook_mark_delivered(
  p_ids uuid[], p_tokens uuid[], p_status_codes integer[]
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, realtime AS $$
DECLARE
  v_messages uuid[];
BEGIN
  WITH done AS (
    UPDATE realtime.webhook_deliveries d
    SET status = 'delivered', delivered_at = now(), updated_at = now(), lease_token = NULL,
        last_status_code = r.status_code, last_error = NULL
    FROM unnest(p_ids, p_tokens, p_status_codes) AS r(id, token, status_code)
    WHERE d.id = r.id AND d.lease_token = r.token AND d.status = 'pending'
    RETURNING d.message_id
  )
  SELECT array_agg(message_id ORDER BY message_id) INTO v_messages FROM done;
  IF v_messages IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM 1 FROM realtime.messages WHERE id = ANY(v_messages) ORDER BY id FOR UPDATE;
  UPDATE realtime.messages m SET wh_delivered_count = m.wh_delivered_count + c.n
  FROM (SELECT id, count(*)::integer AS n FROM unnest(v_messages) AS id GROUP BY id) c
  WHERE m.id = c.id;
  RETURN cardinality(v_messages);
END $$;
REVOKE ALL ON FUNCTION realtime.webhook_mark_delivered(uuid[], uuid[], integer[]) FROM PUBLIC;
