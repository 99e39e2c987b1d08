"""LateBackend (compute/late.py) over a recording stand-in for the backend it starts late: nodes added before
the start reach the backend in order, calls made meanwhile wait for it, and a failed start is reported."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from kiln.compute.late import LateBackend
from kiln.compute.protocol import NodeUnavailable


class Recording:
    """The backend seam: records the calls it gets; `fail` makes its start raise."""

    node_files_here = True

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []

    async def start(self) -> None:
        self.calls.append(("start",))
        if self.fail:
            raise OSError("no port")

    async def close(self) -> None:
        self.calls.append(("close",))

    async def add_node(self, node_id: str, node_root: str) -> None:
        self.calls.append(("add_node", node_id, node_root))
        await asyncio.sleep(0)  # a start may add more meanwhile

    async def remove_node(self, node_id: str) -> None:
        self.calls.append(("remove_node", node_id))

    def is_up(self, node_id: str) -> bool:
        return True


async def _ignored(*args: Any) -> None:
    """The scheduler's callbacks: this stand-in makes none."""


def late(backend: Recording, gate: threading.Event, events: list[str]) -> LateBackend:
    stand_in = LateBackend(
        lambda: backend,  # type: ignore[arg-type,return-value]
        prepare=gate.wait,
        node_files_here=True,
        on_started=lambda: events.append("started"),
        on_failed=lambda: events.append("failed"),
    )
    stand_in.on_results = stand_in.on_node_up = stand_in.on_node_down = stand_in.on_node_failed = _ignored
    return stand_in


async def test_nodes_added_before_the_start_reach_the_backend_in_order_and_other_calls_wait() -> None:
    backend, gate, events = Recording(), threading.Event(), []
    stand_in = late(backend, gate, events)
    await stand_in.add_node("n1", "/r1")  # as a restarted scheduler does, before the port opens
    await stand_in.start()
    await stand_in.add_node("n2", "/r2")
    with pytest.raises(ValueError, match="n2"):
        await stand_in.add_node("n2", "/r2")
    removing = asyncio.create_task(stand_in.remove_node("n1"))
    await asyncio.sleep(0.05)
    assert not removing.done() and not stand_in.is_up("n1") and backend.calls == []
    gate.set()
    await removing
    assert backend.calls == [("start",), ("add_node", "n1", "/r1"), ("add_node", "n2", "/r2"), ("remove_node", "n1")]
    assert events == ["started"] and stand_in.is_up("n1")
    await stand_in.add_node("n3", "/r3")
    await stand_in.close()
    assert backend.calls[-2:] == [("add_node", "n3", "/r3"), ("close",)]


async def test_a_failed_start_is_reported_and_calls_then_fail() -> None:
    backend, gate, events = Recording(fail=True), threading.Event(), []
    stand_in = late(backend, gate, events)
    await stand_in.add_node("n1", "/r1")
    gate.set()
    await stand_in.start()
    with pytest.raises(NodeUnavailable, match="failed to start"):
        await stand_in.remove_node("n1")
    assert events == ["failed"]
    assert backend.calls == [("start",), ("close",)]  # what it had started of itself is closed
    await stand_in.close()


async def test_close_before_any_start_does_nothing() -> None:
    backend, events = Recording(), []
    await late(backend, threading.Event(), events).close()
    assert backend.calls == [] and events == []
