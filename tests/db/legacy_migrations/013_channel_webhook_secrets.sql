-- A webhook signing secret per channel (optional; the server's --webhook-secret signs
-- the others). Kept in its own table rather than a column of realtime.channels:
-- anon and authenticated may SELECT every column of realtime.channels (subscribe
-- policies read it), and a secret must never be readable by clients. Only the
-- server's own role reads this table: no grants, and RLS with no policy for the
-- roles clients act as.
CREATE TABLE IF NOT EXISTS realtime.channel_webhook_secrets (
  channel_id uuid PRIMARY KEY REFERENCES realtime.channels(id) ON DELETE CASCADE,
  secret text NOT NULL CHECK (length(secret) > 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE realtime.channel_webhook_secrets ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON realtime.channel_webhook_secrets FROM PUBLIC;
