-- Host part of a webhook URL ('' when it has none), by the one rule written out in
-- webhooks/policy.py (url_host), step by step: scheme and `//`; the authority up to the
-- first / ? #; userinfo up to the last @ dropped; from the first [ to the next ], or
-- up to the first :; ASCII letters lower-cased (translate, not lower(): that one depends on the
-- database's locale beyond ASCII); trailing dots dropped.
-- tests/webhooks/test_url_host_sql.py holds it equal to the Python rule.
CREATE OR REPLACE FUNCTION realtime.webhook_url_host(p_url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT rtrim(translate(
           CASE WHEN strpos(a, '[') > 0
                THEN coalesce(substring(a FROM '\[([^]]*)\]'), '')
                ELSE split_part(a, ':', 1) END,
           'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), '.')
  FROM (SELECT regexp_replace(
                 coalesce(substring(p_url FROM '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)'), ''),
                 '^.*@', '') AS a) AS authority
$$;
