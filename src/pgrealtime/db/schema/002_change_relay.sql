-- The change relay: decoded row changes from the one server process that holds the
-- replication slot to every other process on this database (pgrealtime/changes/relay.py).
-- One row per delivered batch; the holder inserts it and NOTIFYs realtime_change_relay
-- with the id, the others read what is past the last id they saw. The rows are
-- application data as the server sees it, before row level security is applied: for the
-- server's own login alone. The holder deletes rows past --changes-relay-keep-seconds.
CREATE TABLE realtime.change_relay (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- the process that read the changes (it delivered them to its own subscribers)
  origin text NOT NULL,
  -- end LSN of the last transaction in the batch
  end_lsn bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- JSON array of changes (pgrealtime.changes.model.RowChange fields)
  changes bytea NOT NULL
);

CREATE INDEX change_relay_created_idx ON realtime.change_relay (created_at);

ALTER TABLE realtime.change_relay ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON realtime.change_relay FROM PUBLIC, anon, authenticated;
