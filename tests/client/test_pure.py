"""The client's pure parts: frame decoding, backoff delays, the resume bookkeeping."""

from __future__ import annotations

import pytest

from pgrealtime.client import Backoff, Message, Subscribed
from pgrealtime.client.connection import normalize_url, token_lifetime
from pgrealtime.client.frames import Error, Published, decode
from pgrealtime.client.subscription import Subscription

pytestmark = pytest.mark.pure


def test_frames_decode_typed_and_tolerate_newer_servers() -> None:
    published = decode(
        b'{"type":"published","messageId":"m1","channel":"c","event":"e","position":4,'
        b'"id":7,"addedLater":true}'
    )
    assert published == Published(message_id="m1", channel="c", event="e", position=4, id=7)
    assert decode(b'{"type":"something_new","x":1}') is None
    error = decode(b'{"type":"error","code":"RATE_LIMITED","message":"slow down"}')
    assert isinstance(error, Error) and error.id is None and error.channel is None
    change = decode(b'{"type":"message","channel":"db:t","event":"INSERT","payload":{}}')
    assert isinstance(change, Message) and change.position is None


def test_backoff_is_jittered_growing_and_bounded() -> None:
    delays = list(Backoff(initial=1, maximum=4, attempts=6).delays())
    caps = [1, 2, 4, 4, 4, 4]
    assert len(delays) == 6 and all(0 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert next(Backoff(immediate=True).delays()) == 0.0
    with pytest.raises(ValueError):
        Backoff(initial=5, maximum=1)


def test_urls_and_token_lifetime() -> None:
    assert normalize_url("http://h:1") == "ws://h:1/realtime"
    assert normalize_url("https://h/realtime") == "wss://h/realtime"
    assert normalize_url("ws://h:1/custom") == "ws://h:1/custom"
    assert token_lifetime("ik_api_key") is None
    assert token_lifetime("x.eyJleHAiOjB9.y") < 0  # {"exp":0}


def _sub(since: int | str | None = None) -> Subscription:
    return Subscription(None, "c", since=since, filter=None, on_message=None, on_presence=None)  # type: ignore[arg-type]


def _message(position: int) -> Message:
    return Message(channel="c", event="e", payload={}, position=position)


def test_resume_position_and_duplicates_dropped() -> None:
    sub = _sub()
    sub._subscribed(Subscribed(channel="c", position=10), None, resumed=False)
    assert sub.resume_since() == 10  # nothing yet: resume from where live began
    for position in (11, 12, 11, 12, 13):  # a replay overlapping what was handed out
        sub._deliver(_message(position))
    assert sub.resume_since() == 13
    assert [sub._queue.get_nowait().position for _ in range(3)] == [11, 12, 13]
    assert sub._queue.empty()


def test_a_resume_that_could_not_recover_starts_where_the_server_says() -> None:
    sub = _sub()
    sub.last_position = 100
    # the database was reset: the channel is at 3 now, nothing replayed
    reset = Subscribed(channel="c", position=3, recovered=False, missed=0)
    sub._subscribed(reset, 100, resumed=True)
    assert not sub.recovered
    sub._deliver(_message(4))
    assert sub._queue.get_nowait().position == 4


def test_since_a_message_id_learns_the_position_from_the_reply() -> None:
    sub = _sub(since="660e8400-e29b-41d4-a716-446655440000")
    assert sub.resume_since() == "660e8400-e29b-41d4-a716-446655440000"
    sub._subscribed(Subscribed(channel="c", position=9, recovered=True, missed=2), sub.since, False)
    assert sub.last_position == 7
    sub._deliver(_message(8))
    assert sub.resume_since() == 8
