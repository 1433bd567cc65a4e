"""Today's bus (`pg_notify.Listener`) and its sink (`Ordering`) meet the Protocols in
`engine/bus/base`, by member and by signature, so the seam a second bus will plug
into is the one the server really uses. No database: nothing here connects."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from pgrealtime.engine.bus.base import Bus, BusSink
from pgrealtime.engine.bus.pg_notify import Listener
from pgrealtime.engine.hub import Hub
from pgrealtime.engine.ordering import Ordering

pytestmark = pytest.mark.pure


def _protocol_methods(protocol: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


def _same_shape(protocol: type, concrete: type) -> None:
    for name, wanted in _protocol_methods(protocol).items():
        actual = getattr(concrete, name, None)
        assert inspect.isfunction(actual), f"{concrete.__name__}.{name} is missing"
        assert list(inspect.signature(actual).parameters) == list(
            inspect.signature(wanted).parameters
        ), f"{concrete.__name__}.{name} takes other parameters than {protocol.__name__}"
        assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(wanted), (
            f"{concrete.__name__}.{name}: async in one and not the other"
        )


def _ordering() -> Ordering:
    return Ordering(Hub(1 << 20), None)  # type: ignore[arg-type]


def test_the_protocols_name_what_the_server_uses() -> None:
    assert set(_protocol_methods(Bus)) == {"start", "stop", "deliver_own"}
    assert "connected" in Bus.__annotations__
    assert set(_protocol_methods(BusSink)) == {"deliver", "tracked"}


def test_pg_notify_listener_is_a_bus_without_connecting() -> None:
    listener = Listener("postgresql://unused/", _ordering(), "origin")
    assert isinstance(listener, Bus)
    assert isinstance(listener.connected, asyncio.Event)
    assert not listener.connected.is_set()
    _same_shape(Bus, Listener)


def test_ordering_is_the_bus_sink() -> None:
    assert isinstance(_ordering(), BusSink)
    _same_shape(BusSink, Ordering)


def test_an_object_without_the_lost_reply_hand_off_is_no_bus() -> None:
    class Partial:
        connected = asyncio.Event()

        def start(self) -> None: ...

        async def stop(self) -> None: ...

    assert not isinstance(Partial(), Bus)


def test_nats_bus_is_a_bus_without_connecting() -> None:
    from pgrealtime.engine.bus.nats_bus import NatsBus

    bus = NatsBus(["nats://unused:4222"], "postgresql://unused/", None, _ordering(), "origin")  # type: ignore[arg-type]
    assert isinstance(bus, Bus)
    assert not bus.connected.is_set()
    assert bus.problem() == "message bus (NATS) not connected"
    _same_shape(Bus, NatsBus)
