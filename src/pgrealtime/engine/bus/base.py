"""The seam between server processes, named: what app.py, the health check and the
publisher use of a bus, so a second one (NATS, with the scale-out issue) has a
contract to meet instead of a class to imitate.

Only names and types live here; `pg_notify.Listener` is today's implementation and
`tests/engine/test_bus_contract.py` holds it to these Protocols.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from pgrealtime.engine.messages import StoredMessage


@runtime_checkable
class BusSink(Protocol):
    """What a bus hands messages to, given at construction (`engine/ordering.Ordering`).

    This is the bus's `on_message`: `deliver` takes one stored message (its return
    value is the sink's, unused by the bus); a message already handed out is dropped
    there, so a bus may deliver the same one twice. `tracked` is where catch-up starts:
    (channel, last position handed out) for every channel someone here watches.
    """

    def deliver(self, message: StoredMessage) -> object: ...

    def tracked(self) -> list[tuple[str, int]]: ...


@runtime_checkable
class Bus(Protocol):
    """Carries the notice that a message was stored, from the process or SQL that
    stored it to every server process; the message itself is read from the table.

    What a bus guarantees:
    - At-least-once notice. Every message committed to `realtime.messages` by another
      writer (SQL `realtime.publish()`, another server process) reaches the sink at
      least once while the bus is connected; duplicates are allowed (the sink drops
      positions it has handed out). A process's own publishes are fanned out by its
      publisher and skipped here, except those handed over by `deliver_own`.
    - The table is the source of truth. A notice names a message; the bus reads the
      row (id, channel, position, payload) and delivers that, never the notice's text.
    - Gaps are filled by position. While disconnected, notices are lost; `connected`
      is cleared and the bus reconnects on its own for as long as it takes. Before it
      sets `connected` again it catches up: it reads, for each channel in
      `sink.tracked()`, every message past that position, in position order.

    Lifecycle: `start()` returns at once and connects in the background; `stop()`
    ends it and waits. `connected` is set while notices are being received (the
    health check reports it; tests wait on it).

    `deliver_own(ids)` is the publisher's lost-reply hand-off (`Publisher.on_lost_reply`):
    a batch of this process's publishes whose commit is unknown. The bus reads those
    ids now and again when their notice arrives, so each is delivered if it committed.

    The two buses: `pg_notify.Listener` (no broker: the table's trigger NOTIFYs in the
    publishing transaction and every process reads the row) and `nats_bus.NatsBus`
    (`--broker`: the publisher hands each stored batch to `publish_stored` after the
    commit and the bytes travel, so nobody reads them back; a crash between commit and
    send, a lost NATS message or an outage leaves a gap in positions that `Ordering`
    fills from the table, and a reconnect triggers a cluster-wide catch-up).
    What a broker needs besides, and where it is:
    - Leadership for once-per-cluster jobs: `pg_leader.PgLeadership` (an advisory lock
      on a connection named after the process, whose sessions are also the member
      list). SQL `realtime.publish()` is read by the elected process; the change feed's
      slot reader is elected the same way (changes/cluster.py). A broker-native
      election (a NATS KV key with a TTL) could replace it behind the same two callbacks.
    - Channel-change notices stay on PostgreSQL's second NOTIFY channel (rare).
    - Presence: each process sends its members' joins, leaves and updates and a
      heartbeat on `pgrt.<cluster>.presence` (`NatsBus.stream`; without a broker
      over NOTIFY), keeps the others' members under a lease, and counts one member
      per user over all processes (engine/presence_cluster, engine/bus/presence_link).
    """

    connected: asyncio.Event

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def deliver_own(self, message_ids: list[str]) -> None: ...
