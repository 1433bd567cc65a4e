-- Host part of a URL, lower-cased ('' when it has none).
CREATE OR REPLACE FUNCTION realtime.webhook_url_host(p_url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(lower(substring(p_url
    FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\[[^]/?#]*\]|[^:/?#]*)')), '')
$$;
