"""ClusterPresenceStore without servers: stores wired to each other by a loss-free (or
lossy) in-memory link, driven by hand, so every merge rule is checked exactly: one
member per user across processes, changes only on the cluster's first join and last
leave, repair of a lost message through the heartbeat's seq, leases, and messages
nobody should trust."""

from __future__ import annotations

import asyncio

import orjson

from pgrealtime.engine.presence import LEAVE, PresenceChange
from pgrealtime.engine.presence_cluster import ClusterPresenceStore

U = ("user", "u1")


class Net:
    """Stores that hear each other; `lose` drops the next n messages of one sender."""

    def __init__(self, *origins: str, lease: float = 60.0) -> None:
        self.stores = {o: ClusterPresenceStore(o, 0.01, lease) for o in origins}
        self.seen: dict[str, list[tuple[str, str]]] = {o: [] for o in origins}
        self.lose: dict[str, int] = {}
        self.queue: list[tuple[str, bytes]] = []
        for origin, store in self.stores.items():
            store.attach(lambda c, o=origin: self._record(o, c))
            store.send = lambda data, o=origin: self.queue.append((o, data))

    def _record(self, origin: str, change: PresenceChange) -> None:
        self.seen[origin].append((change.event, change.member["presenceId"]))

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)  # ops are flushed once per loop turn
            queue, self.queue = self.queue, []
            for sender, data in queue:
                if self.lose.get(sender, 0) > 0:
                    self.lose[sender] -= 1
                    continue
                for store in self.stores.values():
                    store.receive(data)
            if not self.queue:
                return

    async def meet(self) -> None:
        for store in self.stores.values():
            store.connected()
        await self.settle()


async def test_a_user_on_two_processes_is_one_member() -> None:
    net = Net("a", "b", "c")
    await net.meet()
    a, b, c = net.stores.values()
    assert a.join("r", U, "c1") is not None  # the first connection anywhere
    await net.settle()
    assert b.join("r", U, "c2") is None  # present already: nobody sees a join
    await net.settle()
    assert [m["presenceId"] for m in c.snapshot("r", 0)[0]] == ["u1"]
    assert a.leave("r", "c1") is None  # still on b
    await net.settle()
    assert c.member_count("r") == 1
    change = b.leave("r", "c2")
    assert change is not None and change.event == LEAVE  # the last connection anywhere
    await net.settle()
    assert net.seen["c"] == [("join", "u1"), ("leave", "u1")]
    assert net.seen["a"] == [("leave", "u1")]  # its own join was returned to it
    assert net.seen["b"] == [("join", "u1")]


async def test_updates_reach_every_process_and_keep_joined_at() -> None:
    net = Net("a", "b")
    await net.meet()
    a, b = net.stores.values()
    joined = a.join("r", U, "c1")
    assert joined is not None
    await net.settle()
    b.join("r", U, "c2")
    change = b.update("r", "c2", {"typing": True})
    assert change is not None and change.member["joinedAt"] == joined.member["joinedAt"]
    await net.settle()
    assert net.seen["a"] == [("update", "u1")]
    assert a.snapshot("r", 0)[0][0]["state"] == {"typing": True}


async def test_a_lost_message_is_repaired_by_the_heartbeat() -> None:
    net = Net("a", "b")
    await net.meet()
    a, b = net.stores.values()
    net.lose["a"] = 1
    a.join("r", U, "c1")  # its ops message is lost
    await net.settle()
    assert b.member_count("r") == 0
    a.beat(asyncio.get_running_loop().time())  # its heartbeat shows the seq b missed
    await net.settle()
    assert [m["presenceId"] for m in b.snapshot("r", 0)[0]] == ["u1"]
    assert net.seen["b"] == [("join", "u1")]
    assert b.syncs_asked == 1


async def test_an_expired_lease_leaves_all_members_and_a_return_rejoins() -> None:
    net = Net("a", "b", lease=5.0)
    await net.meet()
    a, b = net.stores.values()
    a.join("r", U, "c1")
    a.join("s", ("anonymous", "x"), "c2")
    await net.settle()
    b.expire(asyncio.get_running_loop().time() + 6)  # a fell silent for longer
    assert sorted(net.seen["b"]) == [("join", "u1"), ("join", "x"), ("leave", "u1"),
                                     ("leave", "x")]  # fmt: skip
    assert b.member_count("r") == 0 and b.expired == 1
    a.beat(asyncio.get_running_loop().time())  # only cut off: back, unknown, asked
    await net.settle()
    assert b.member_count("r") == 1 and b.member_count("s") == 1


async def test_alone_no_ops_are_sent_and_a_newcomer_learns_everything() -> None:
    net = Net("a")
    a = net.stores["a"]
    a.join("r", U, "c1")
    await net.settle()
    assert net.queue == [] and a.sent == 0
    newcomer = ClusterPresenceStore("n", 0.01, 60)
    newcomer.send = lambda data: net.queue.append(("n", data))
    net.stores["n"] = newcomer
    newcomer.connected()  # its full view and a sync request: a answers with its own
    await net.settle()
    assert [m["presenceId"] for m in newcomer.snapshot("r", 0)[0]] == ["u1"]


async def test_a_full_view_in_parts_and_malformed_messages() -> None:
    net = Net("a", "b")
    for store in net.stores.values():
        store.max_message_bytes = 400  # a full view of many parts
    a, b = net.stores.values()
    for i in range(30):
        a.join("r", ("user", f"u{i}"), f"c{i}")
    await net.meet()
    assert b.member_count("r") == 30
    assert sum(1 for _, d in net.queue if b'"full"' in d) == 0  # all delivered
    for junk in (b"", b"[]", b"{}", b'{"o":"x","k":"ops","s":"z","ops":1}',
                 b'{"o":"x","k":"ops","s":1,"ops":[["j","r",{"type":1}]]}',
                 orjson.dumps({"o": "x", "k": "full", "s": 1, "id": "q", "i": 0, "n": 1,
                               "m": [["r", "not a member"]]})):  # fmt: skip
        b.receive(junk)
    assert b.member_count("r") == 30
    extra = {"type": "user", "presenceId": "p", "joinedAt": "t0", "admin": True}
    b.receive(orjson.dumps({"o": "x", "k": "ops", "s": 2, "ops": [["j", "t", extra]]}))
    assert b.snapshot("t", 0)[0] == [{"type": "user", "presenceId": "p", "joinedAt": "t0"}]


async def test_a_goodbye_leaves_at_once() -> None:
    net = Net("a", "b")
    await net.meet()
    a = net.stores["a"]
    a.join("r", U, "c1")
    await net.settle()
    await a.stop()
    await net.settle()
    assert net.seen["b"] == [("join", "u1"), ("leave", "u1")]


async def test_a_newcomer_sees_the_state_whichever_holder_it_hears_first() -> None:
    net = Net("a", "b")
    await net.meet()
    a, b = net.stores.values()
    a.join("r", U, "c1")
    await net.settle()
    b.join("r", U, "c2")
    b.update("r", "c2", {"typing": True})  # a's own connection has no state
    await net.settle()
    for first in ("a", "b"):
        newcomer = ClusterPresenceStore("n" + first, 0.01, 60)
        newcomer.receive(orjson.dumps({"o": "x", "k": "hb", "s": 0}))  # knows someone
        for origin in (first, "b" if first == "a" else "a"):
            held = net.stores[origin].local.snapshot("r", 0)[0][0]
            full = {"o": origin, "k": "full", "s": 9, "id": origin, "i": 0, "n": 1}
            newcomer.receive(orjson.dumps({**full, "m": [["r", held]]}))
        assert newcomer.snapshot("r", 0)[0][0]["state"] == {"typing": True}


async def test_a_state_too_large_for_the_link_is_shared_without_it() -> None:
    net = Net("a", "b")
    await net.meet()
    a, b = net.stores.values()
    a.max_message_bytes = 1000
    sizes: list[int] = []
    send = a.send
    assert send is not None
    a.send = lambda data: (sizes.append(len(data)), send(data))[1]
    a.join("r", U, "c1")
    a.update("r", "c1", {"blob": "x" * 2000})
    a.join("s", ("user", "u2"), "c2")
    await net.settle()
    assert sizes and max(sizes) < 1000
    assert b.member_count("s") == 1 and "state" not in b.snapshot("r", 0)[0][0]
    assert a.states_left_out == 1
