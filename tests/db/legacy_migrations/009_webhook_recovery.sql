-- When a receiver asked for a wait (Retry-After), the earliest time it allows the next
-- attempt. A worker that sees a failing host answer again makes that host's deliveries
-- in backoff due at once (pgrealtime/webhooks/store.py, pull_forward), except those:
-- the receiver's own word outranks our guess that it has recovered. NULL for a plain
-- backoff step. A nullable column without default: no table rewrite.

ALTER TABLE realtime.webhook_deliveries ADD COLUMN IF NOT EXISTS retry_not_before timestamptz;
