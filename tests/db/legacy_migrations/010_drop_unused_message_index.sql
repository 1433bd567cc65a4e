-- (channel_name, seq) served reading a channel's messages in order before per-channel
-- positions existed (004). Every such read now goes by (channel_name, position), which
-- has its own unique index, so this one was only written: one index entry per stored
-- message for nothing (about 3 % of a publish's PostgreSQL time, measured with
-- realtime.publish() over 10,000 rows: 127-128 us per row with it, 122-124 without).
DROP INDEX IF EXISTS realtime.messages_channel_name_seq_idx;
