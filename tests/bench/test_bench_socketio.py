"""`bench fanout --protocol socketio`: the fan-out run through the load generator's
Socket.IO client, end to end (so the client cannot break silently again), and the
client's handshake when the answer is read before the send has returned."""

from __future__ import annotations

import asyncio

import pytest
from tests.bench.test_bench_quick import _server_available, check, run_quick

from bench.harness.loadgen import Recorder
from bench.harness.socketio_client import SioSession


def test_quick_fanout_over_socketio(db_url: str) -> None:
    """Every message delivered to every Socket.IO session, the presence events of
    their joining counted apart (not as malformed), and the baseline column the
    same server over the raw protocol."""
    if not _server_available():
        pytest.skip("`pgrealtime serve` is not available yet")
    run = run_quick(
        "fanout", "--protocol", "socketio", "--target", "both", "--database-url", db_url
    )
    assert run["sizes"]["protocol"] == "socketio"
    for kind in ("server", "baseline"):
        check("fanout", run, kind)
    assert run["results"]["server"]["system_events"] > 0  # presence:join of each session
    assert any("raw protocol" in note for note in run["notes"])


class AnswersAtOnce:
    """A wire whose peer's answer is read before send_text returns: what uvloop can
    do when the CONNECT answer is already in the socket as the sender resumes."""

    closed = False

    def __init__(self, session: SioSession) -> None:
        self.session = session
        self.sent: list[bytes] = []

    def send_text(self, payload: bytes) -> None:
        self.sent.append(payload)
        if payload.startswith(b"40"):
            self.session.on_text(b'40{"sid":"x"}')


async def test_connect_answer_read_before_the_send_returns() -> None:
    session = SioSession(0, Recorder())
    session.conn = AnswersAtOnce(session)
    session.on_text(b'0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
    await asyncio.wait_for(session.auth("token"), 5)
    assert session.conn.sent == [b'40{"token":"token"}']
    assert not session.recorder.errors


def test_presence_events_are_counted_apart() -> None:
    async def run() -> Recorder:
        rec = Recorder()
        session = SioSession(0, rec)
        session.on_text(b'42["presence:join",{"member":{"userId":"u"},"meta":{"channel":"c",'
                        b'"senderType":"system"}}]')  # fmt: skip
        session.on_text(b'42["presence:leave",{"member":{"userId":"u"},"meta":{"channel":"c"}}]')
        session.on_text(b'42["tick",{"nope":1}]')  # a broken message still counts
        return rec

    rec = asyncio.run(run())
    assert rec.system_events == 2
    assert rec.malformed == 1
