"""The host agent's handlers, called directly (as distributed would, with keyword arguments): many nodes in one
process, each with its own root, steps and processes."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kiln.compute.node import host as host_module
from kiln.compute.node import reaper
from kiln.compute.node.host import GONE, HostAgent
from kiln.compute.protocol import Step

from ..helpers import alive, eventually


@pytest.fixture
async def host() -> AsyncIterator[HostAgent]:
    agent = HostAgent(limit=3)
    yield agent
    await agent.close()


def step(root: Path, name: str, command: str) -> dict[str, Any]:
    return Step(name, "task", str(root), f"workitems/j/job-1/{name}", command).to_message()


async def poll(host: HostAgent, nodes: dict[str, dict[str, Any]], count: int) -> dict[str, list[dict[str, Any]]]:
    """Long-poll until count results came, acknowledging each batch, as the backend's pump does."""
    got: dict[str, list[dict[str, Any]]] = {}
    acks: dict[str, list[str]] = {}
    async with asyncio.timeout(10):
        while sum(map(len, got.values())) < count:
            reply = await host.results(timeout=1.0, nodes={n: {**r, "ack": acks.get(n, [])} for n, r in nodes.items()})
            nodes = {n: {} for n in nodes}
            for node_id, messages in reply["results"].items():
                got.setdefault(node_id, []).extend(messages)
                acks[node_id] = [m["step_id"] for m in messages]
    return got


def test_handlers_do_not_take_the_comm(host: HostAgent) -> None:
    # distributed passes the comm only to handlers whose first parameter is named "comm"
    for name, handler in host.handlers().items():
        assert name.startswith("kiln_")
        params = list(inspect.signature(handler).parameters)
        assert not params or params[0] != "comm"


async def test_nodes_run_their_steps_in_their_own_roots(host: HostAgent, open_tmp: Path) -> None:
    roots = {n: open_tmp / n for n in ("a", "b")}
    for node_id, root in roots.items():
        assert "ok" in await host.start_node(node_id=node_id, node_root=str(root))
        assert (root / "workitems").is_dir()
    requests = {n: {"run": [step(root, f"{n}-1", f"sh -c 'echo {n}'")]} for n, root in roots.items()}
    got = await poll(host, requests, 2)
    assert {n: [m["step_id"] for m in ms] for n, ms in got.items()} == {"a": ["a-1"], "b": ["b-1"]}
    for node_id, root in roots.items():
        assert (root / f"workitems/j/job-1/{node_id}-1/stdout.txt").read_text() == f"{node_id}\n"
        listing = await host.list_files(node_id=node_id, path="workitems/j/job-1", recursive=False)
        assert [e["name"] for e in listing["ok"]] == [f"{node_id}-1"]


async def test_a_node_beyond_the_limit_is_refused_with_why(host: HostAgent, open_tmp: Path) -> None:
    for n in range(3):
        assert "ok" in await host.start_node(node_id=f"n{n}", node_root=str(open_tmp / f"n{n}"))
    refused = await host.start_node(node_id="n3", node_root=str(open_tmp / "n3"))
    assert host_module.MAX_NODES_ENV in refused["error"]
    assert "n3" not in host.nodes
    assert "ok" in await host.start_node(node_id="n0", node_root=str(open_tmp / "n0"))  # again: idempotent


async def test_a_root_that_cannot_be_laid_out_is_refused(host: HostAgent, open_tmp: Path) -> None:
    (open_tmp / "file").write_text("not a directory")
    refused = await host.start_node(node_id="n", node_root=str(open_tmp / "file" / "node"))
    assert "could not be laid out" in refused["error"]
    assert host.nodes == {}


async def test_stopping_or_losing_one_node_leaves_the_others(host: HostAgent, open_tmp: Path) -> None:
    for node_id in ("a", "b", "c"):
        await host.start_node(node_id=node_id, node_root=str(open_tmp / node_id))
    tree = "sh -c 'sleep 300 & echo $! > child.pid; wait'"
    for node_id in ("a", "b", "c"):
        await host.run(node_id=node_id, steps=[step(open_tmp / node_id, "long", tree)])
    pids = {}
    for node_id in ("a", "b", "c"):
        pid_file = open_tmp / node_id / "workitems/j/job-1/long/wd/child.pid"
        await eventually(lambda f=pid_file: f.exists() and f.read_text().strip(), what=f"{node_id}'s command")
        pids[node_id] = int(pid_file.read_text())
    assert await host.stop_node(node_id="a") and await host.lose_node(node_id="b")
    await eventually(lambda: not alive(pids["a"]) and not alive(pids["b"]), what="a's and b's commands to die")
    assert alive(pids["c"])
    assert await host.run(node_id="a", steps=[]) == {GONE: "a"}
    reply = await host.results(timeout=0, nodes={"b": {}, "c": {}})
    assert reply == {"results": {}, GONE: ["b"]}  # b's lost step is never reported


async def test_a_result_of_a_node_not_polled_wakes_the_poll(host: HostAgent, open_tmp: Path) -> None:
    """A node started while a poll is open: its first result ends that poll at once, so the next one (which
    asks for it) brings it without waiting out the timeout."""
    for node_id in ("a", "b"):
        await host.start_node(node_id=node_id, node_root=str(open_tmp / node_id))
    waiting = asyncio.create_task(host.results(timeout=30, nodes={"a": {}}))
    await host.run(node_id="b", steps=[step(open_tmp / "b", "quick", "true")])
    assert (await asyncio.wait_for(waiting, 10))["results"] == {}
    assert [m["step_id"] for m in (await host.results(timeout=5, nodes={"b": {}}))["results"]["b"]] == ["quick"]


async def test_leftovers_of_a_predecessor_are_killed_when_their_node_starts(open_tmp: Path) -> None:
    root = open_tmp / "n"
    leftover = subprocess.Popen(["sleep", "300"], env={"AZ_BATCH_NODE_ROOT_DIR": str(root)}, start_new_session=True)
    try:
        await eventually(lambda: reaper.node_processes(root), what="the leftover to run")  # exec'd, its env set
        agent = HostAgent()
        agent.find_leftovers()
        assert "ok" in await agent.start_node(node_id="n", node_root=str(root))
        assert leftover.wait(10) < 0
        await agent.close()
    finally:
        leftover.kill()
        leftover.wait(10)


async def test_dask_setup_installs_the_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = SimpleNamespace(handlers={}, extensions={})
    host_module.dask_setup(worker)
    assert set(worker.handlers) >= {"kiln_node_start", "kiln_run", "kiln_results", "kiln_kill", "kiln_list_files"}
    await host_module.dask_teardown(worker)
