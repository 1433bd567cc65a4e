"""Finding 8: publish batches are capped by bytes, not only by count.

A lane sends everything queued in one round trip as one jsonb value, and jsonb stops
at 255 MiB: about 256 queued publishes of 1 MiB failed together. The cap is lowered
here (1 MiB instead of 8) so the test stays small; the batches are observed for real:
a trigger notes the (top-level) transaction each message was stored in, and one round
trip is one transaction.
"""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Server, eventually, make_settings

from pgrealtime import keys
from pgrealtime.config import Settings

MiB = 1024 * 1024
CAP = MiB
ITEM = 200 * 1024  # five fit in a batch of CAP
COUNT = 30


@pytest.fixture
def server_settings() -> Settings:
    settings = make_settings(max_frame_bytes=4 * MiB)
    # set as attributes: before the fix these were no settings at all, and the test
    # must fail on what the server did, not on a constructor argument
    settings.max_payload_bytes = 3 * MiB
    settings.publish_batch_bytes = CAP
    return settings


BATCH_LOG_SQL = """
CREATE TABLE public.batch_log (id uuid PRIMARY KEY, tx bigint NOT NULL);
CREATE FUNCTION public.log_batch() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  INSERT INTO public.batch_log VALUES (NEW.id, txid_current());
  RETURN NULL;
END $$;
CREATE TRIGGER log_batch AFTER INSERT ON realtime.messages
  FOR EACH ROW EXECUTE FUNCTION public.log_batch();
"""


async def test_big_publishes_queued_on_one_lane_go_in_capped_batches(server: Server) -> None:
    await server.db.execute(BATCH_LOG_SQL)
    await server.create_channel("big:*")
    client = await server.connect(server.token())
    await client.subscribe("big:1")
    first = await client.publish("big:1", "e", {"n": -1})  # the counter row exists now
    assert first["type"] == "published", first

    # Hold the channel's position counter: the next batch waits in PostgreSQL and
    # everything sent meanwhile queues in the lane, as under load.
    blocker = await server.db.acquire()
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute(
        "SELECT 1 FROM realtime.channel_positions WHERE channel_name = 'big:1' FOR UPDATE"
    )
    publisher = server.app[keys.PUBLISHER]
    ids = [uuid.uuid4().hex for _ in range(COUNT)]
    sizes = [ITEM] * COUNT
    sizes[COUNT // 2] = 2 * MiB  # larger than the cap on its own: goes alone
    try:
        for n, (request_id, size) in enumerate(zip(ids, sizes, strict=True)):
            payload = {"n": n, "pad": "x" * size}
            frame = {"type": "publish", "channel": "big:1", "event": "e", "payload": payload}
            await client.send({**frame, "id": request_id})
        await eventually(lambda: publisher.in_flight == COUNT)
    finally:
        await tx.commit()
        await server.db.release(blocker)

    replies = {}
    while len(replies) < COUNT:
        frame = await client.recv(timeout=30)
        if frame.get("id") in ids:
            replies[frame["id"]] = frame
    assert all(r["type"] == "published" for r in replies.values()), [
        r for r in replies.values() if r["type"] != "published"
    ]

    rows = await server.db.fetch(
        "SELECT b.tx, count(*) AS n, sum(octet_length(m.payload::text)) AS bytes"
        " FROM realtime.messages m JOIN public.batch_log b USING (id)"
        " WHERE m.channel_name = 'big:1' AND m.payload ? 'pad' GROUP BY 1"
    )
    assert sum(r["n"] for r in rows) == COUNT
    assert len(rows) < COUNT  # batches did form
    for row in rows:
        assert row["n"] == 1 or row["bytes"] <= CAP, dict(row)
    positions = await server.db.fetch(
        "SELECT (payload->>'n')::int AS n FROM realtime.messages"
        " WHERE channel_name = 'big:1' ORDER BY position"
    )
    assert [r["n"] for r in positions] == [-1, *range(COUNT)]  # order kept across batches
