-- Pattern matching, shared by SQL and mirrored in pgrealtime.channels (Python):
-- '*' and '%' match any run of characters; every other character is literal.
CREATE OR REPLACE FUNCTION realtime.pattern_to_like(p_pattern text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT replace(replace(replace(p_pattern, '\', '\\'), '_', '\_'), '*', '%')
$$;

CREATE OR REPLACE FUNCTION realtime.pattern_wildcards(p_pattern text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT length(p_pattern) - length(replace(replace(p_pattern, '*', ''), '%', ''))
$$;

-- The enabled channel that governs a concrete name: exact name first, then fewer
-- wildcards, then the longer literal text, then the pattern text (deterministic).
-- realtime.publish_items finds the same channel for many names at once.
CREATE OR REPLACE FUNCTION realtime.match_channel(p_name text)
RETURNS realtime.channels
LANGUAGE sql STABLE AS $$
  SELECT c.* FROM realtime.channels c
  WHERE c.enabled AND p_name LIKE realtime.pattern_to_like(c.pattern)
  ORDER BY realtime.pattern_wildcards(c.pattern),
           length(c.pattern) - realtime.pattern_wildcards(c.pattern) DESC,
           c.pattern COLLATE "C"
  LIMIT 1
$$;
