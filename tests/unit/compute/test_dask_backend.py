"""A real DaskBackend: in-process scheduler, a nanny-supervised host agent serving the nodes, real commands."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kiln.compute.dask_backend import DaskBackend
from kiln.compute.node.files import DirectoryNotEmpty
from kiln.compute.protocol import NodeUnavailable, ResourceFile, Step, StepResult

from .helpers import FileServer, alive, eventually


@dataclass
class Recorder:
    """The backend plus everything its callbacks reported, in order."""

    backend: DaskBackend
    data_dir: Path
    events: list[tuple[str, str]] = field(default_factory=list)
    results: dict[str, StepResult] = field(default_factory=dict)
    batches: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    async def on_up(self, node_id: str) -> None:
        self.events.append(("up", node_id))

    async def on_down(self, node_id: str) -> None:
        self.events.append(("down", node_id))

    async def on_failed(self, node_id: str, message: str) -> None:
        self.events.append(("failed", node_id))
        self.failures[node_id] = message

    async def on_results(self, node_id: str, results: list[StepResult]) -> None:
        self.batches.append(len(results))
        for r in results:
            if r.step_id in self.results:
                self.duplicates.append(r.step_id)
            self.results[r.step_id] = r

    def root(self, node_id: str) -> Path:
        return self.data_dir / "nodes" / node_id

    async def add(self, *node_ids: str) -> None:
        """The nodes are up and their up callbacks have run: a node is up before its callback is made (the
        backend makes each node's callbacks in order on a task of its own), and tests assert on the events."""
        before = {n: self.count(("up", n)) for n in node_ids}
        for node_id in node_ids:
            await self.backend.add_node(node_id, str(self.root(node_id)))
        await eventually(
            lambda: all(self.backend.is_up(n) and self.count(("up", n)) > before[n] for n in node_ids), 30, "nodes up"
        )

    def step(self, node_id: str, name: str, command: str, **fields: object) -> Step:
        return Step(
            step_id=name,
            kind="task",
            node_root=str(self.root(node_id)),
            task_dir=f"workitems/j1/job-1/{name}",
            command_line=command,
            **fields,
        )  # type: ignore[arg-type]

    def count(self, event: tuple[str, str]) -> int:
        return self.events.count(event)


@pytest.fixture
async def rec(open_tmp: Path) -> AsyncIterator[Recorder]:
    backend = DaskBackend(open_tmp / "data")
    rec = Recorder(backend, open_tmp / "data")
    backend.on_node_up, backend.on_node_down, backend.on_results = rec.on_up, rec.on_down, rec.on_results
    backend.on_node_failed = rec.on_failed
    await backend.start()
    try:
        yield rec
    finally:
        pids = [p for h in backend._hosts.values() if (p := h.pid)]
        await asyncio.wait_for(backend.close(), 30)
        await eventually(lambda: not any(alive(p) for p in pids), what="worker processes to exit")
    assert rec.duplicates == [], "results delivered twice"


async def grandchild_of(path: Path) -> int:
    await eventually(lambda: path.exists() and path.read_text().strip(), what=f"{path}")
    return int(path.read_text())


TREE = "sh -c 'sleep 300 & echo $! > grandchild.pid; wait'"


async def test_two_nodes_run_batches(rec: Recorder) -> None:
    await rec.add("n1", "n2")
    assert sorted(rec.events) == [("up", "n1"), ("up", "n2")]
    batches = {
        n: [rec.step(n, f"{n}-{i}", f"sh -c 'echo {n} {i}; exit {i % 3}'") for i in range(20)] for n in ("n1", "n2")
    }
    await asyncio.gather(*(rec.backend.run(n, steps) for n, steps in batches.items()))
    await eventually(lambda: len(rec.results) == 40, 30, "40 results")
    for n, steps in batches.items():
        for i, s in enumerate(steps):
            assert rec.results[s.step_id].exit_code == i % 3
        assert (rec.root(n) / "workitems/j1/job-1" / f"{n}-7" / "stdout.txt").read_text() == f"{n} 7\n"
    assert sum(rec.batches) == 40
    info = await rec.backend._rpc(rec.backend._nodes["n1"].host.address or "").kiln_ping()
    assert info["pid"] == rec.backend.worker_pid("n1") == rec.backend.worker_pid("n2")  # one host agent serves both
    assert info["nodes"] == 2
    assert info["profile"] is False  # the sampling profiler is off in workers
    assert info["tick"] == "1s"  # and the loop is not woken every 20 ms to be timed (dask_backend.DASK_ENV)
    assert info["loop"].startswith("uvloop")


async def test_files_through_the_backend(rec: Recorder) -> None:
    await rec.add("n1")
    await rec.backend.run("n1", [rec.step("n1", "t1", "sh -c 'printf 0123456789; mkdir -p sub; echo x > sub/f'")])
    await eventually(lambda: "t1" in rec.results, what="t1")
    backend = rec.backend
    root = [e.name for e in await backend.list_files("n1", "", False)]
    assert root == ["applications", "fsmounts", "shared", "startup", "volatile", "workitems"]
    listing = await backend.list_files("n1", "workitems/j1/job-1/t1", True)
    assert [e.name for e in listing] == ["wd", "stderr.txt", "stdout.txt", "wd/sub", "wd/sub/f"]
    assert (await backend.stat_file("n1", "workitems/j1/job-1/t1/stdout.txt")).size == 10
    assert await backend.read_file("n1", "workitems/j1/job-1/t1/stdout.txt", 3, 5) == b"345"
    with pytest.raises(FileNotFoundError):
        await backend.read_file("n1", "workitems/nope")
    with pytest.raises(ValueError):
        await backend.stat_file("n1", "../etc")
    with pytest.raises(DirectoryNotEmpty):
        await backend.delete_file("n1", "workitems/j1", False)
    await backend.delete_file("n1", "workitems/j1", True)
    assert await backend.list_files("n1", "workitems", False) == []


async def test_kill_through_the_backend(rec: Recorder) -> None:
    await rec.add("n1")
    await rec.backend.run("n1", [rec.step("n1", "slow", TREE), rec.step("n1", "quick", "true")])
    grandchild = await grandchild_of(rec.root("n1") / "workitems/j1/job-1/slow/wd/grandchild.pid")
    await rec.backend.kill("n1", ["slow"])
    # SIGKILLed with its group when kill() returns; it may take the kernel a moment to finish it
    await eventually(lambda: not alive(grandchild), 2, "the grandchild to die")
    await eventually(lambda: "quick" in rec.results, what="quick")
    assert "slow" not in rec.results


async def test_a_lost_node_dies_alone_and_comes_back(rec: Recorder) -> None:
    await rec.add("n1", "n2")
    await rec.backend.run("n1", [rec.step("n1", "lost", TREE)])
    grandchild = await grandchild_of(rec.root("n1") / "workitems/j1/job-1/lost/wd/grandchild.pid")
    assert await rec.backend.lose("n1")
    await eventually(lambda: rec.count(("up", "n1")) == 2, 30, "n1 up again")
    assert sorted(rec.events[:2]) == [("up", "n1"), ("up", "n2")]
    assert rec.events[2:] == [("down", "n1"), ("up", "n1")]
    await eventually(lambda: not alive(grandchild), what="its command to be killed")
    await rec.backend.run("n1", [rec.step("n1", "after", "true")])
    await eventually(lambda: "after" in rec.results, what="a step after the restart")
    assert "lost" not in rec.results


async def test_a_killed_host_is_the_loss_of_its_nodes_and_they_come_back(rec: Recorder) -> None:
    await rec.add("n1", "n2")
    await rec.backend.run("n1", [rec.step("n1", "lost", TREE)])
    grandchild = await grandchild_of(rec.root("n1") / "workitems/j1/job-1/lost/wd/grandchild.pid")
    pid = rec.backend.worker_pid("n1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: rec.count(("down", "n1")) == rec.count(("down", "n2")) == 1, 10, "n1 and n2 down")
    assert not rec.backend.is_up("n1")
    with pytest.raises(NodeUnavailable):
        await rec.backend.run("n1", [rec.step("n1", "too-early", "true")])
    await eventually(lambda: rec.count(("up", "n1")) == rec.count(("up", "n2")) == 2, 30, "n1 and n2 up again")
    assert rec.backend.worker_pid("n1") not in (None, pid)
    await eventually(lambda: not alive(grandchild), what="the orphaned command to be killed")
    await rec.backend.run("n1", [rec.step("n1", "after", "true")])
    await eventually(lambda: "after" in rec.results, what="a step after the restart")
    assert "lost" not in rec.results


async def test_many_nodes_start_admitted_and_a_node_that_cannot_start_fails_once(rec: Recorder) -> None:
    """Node starts are admitted a few at a time (no timeout storm); a node whose root cannot be laid out fails
    with why, and is not tried again."""
    names = [f"m{i}" for i in range(40)]
    await rec.add(*names)
    (rec.data_dir / "blocked").write_text("not a directory")
    await rec.backend.add_node("bad", str(rec.data_dir / "blocked" / "bad"))
    await eventually(lambda: ("failed", "bad") in rec.events, 30, "the bad node to fail")
    assert "could not be laid out" in rec.failures["bad"]
    await rec.backend.run("m39", [rec.step("m39", "probe", "true")])
    await eventually(lambda: "probe" in rec.results, what="a step on the last node")
    assert rec.events.count(("failed", "bad")) == 1 and ("up", "bad") not in rec.events
    assert not rec.backend.is_up("bad")
    await rec.backend.remove_node("bad")


async def test_restart_and_reimage(rec: Recorder) -> None:
    await rec.add("n1")
    marker = rec.root("n1") / "shared" / "keep.txt"
    marker.write_text("x")
    await rec.backend.restart_node("n1")
    await eventually(lambda: rec.events == [("up", "n1"), ("down", "n1"), ("up", "n1")], 30, "reboot")
    assert marker.exists()
    await rec.backend.restart_node("n1", wipe=True)
    await eventually(lambda: rec.count(("up", "n1")) == 3, 30, "reimage")
    assert rec.events[-2:] == [("down", "n1"), ("up", "n1")]
    assert not marker.exists()
    assert sorted(p.name for p in rec.root("n1").iterdir()) == [
        "applications",
        "fsmounts",
        "shared",
        "startup",
        "volatile",
        "workitems",
    ]


async def test_remove_node_and_unknown_nodes(rec: Recorder) -> None:
    await rec.add("n1")
    await rec.backend.run("n1", [rec.step("n1", "running", TREE)])
    grandchild = await grandchild_of(rec.root("n1") / "workitems/j1/job-1/running/wd/grandchild.pid")
    await rec.backend.remove_node("n1")
    assert rec.events == [("up", "n1"), ("down", "n1")]
    assert not rec.backend.is_up("n1")
    # SIGKILLed with its group when kill() returns; it may take the kernel a moment to finish it
    await eventually(lambda: not alive(grandchild), 2, "the grandchild to die")
    for call in (rec.backend.run("n1", []), rec.backend.list_files("n1", "", False), rec.backend.kill("nope", ["x"])):
        with pytest.raises(NodeUnavailable):
            await call


async def test_a_nanny_that_gave_up_is_replaced(rec: Recorder) -> None:
    await rec.add("n1")
    nanny = rec.backend._nodes["n1"].host.nanny  # as if its worker had died while it was starting
    assert nanny is not None
    await nanny.close()
    await eventually(lambda: rec.count(("up", "n1")) == 2, 30, "n1 up under a new nanny")
    assert rec.events == [("up", "n1"), ("down", "n1"), ("up", "n1")]
    assert rec.backend._nodes["n1"].host.nanny is not nanny


async def test_a_callback_may_remove_its_own_node(rec: Recorder) -> None:
    await rec.add("n1")
    removed = asyncio.Event()

    async def on_down(node_id: str) -> None:
        await rec.on_down(node_id)
        await rec.backend.remove_node(node_id)  # from inside the callback: must not deadlock
        removed.set()

    rec.backend.on_node_down = on_down
    pid = rec.backend.worker_pid("n1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(removed.wait(), 30)
    assert rec.events == [("up", "n1"), ("down", "n1")]
    with pytest.raises(NodeUnavailable):
        await rec.backend.run("n1", [])


async def test_setup_failures_and_wall_clock_on_a_worker(rec: Recorder, file_server: FileServer) -> None:
    await rec.add("n1")
    file_server.files = {"/in.txt": b"input"}
    await rec.backend.run(
        "n1",
        [
            rec.step("n1", "fetch", "cat in.txt", resource_files=(ResourceFile(file_server.url("/in.txt"), "in.txt"),)),
            rec.step("n1", "missing", "true", resource_files=(ResourceFile(file_server.url("/nope"), "x"),)),
            rec.step("n1", "slow", "sleep 60", max_wall_clock_seconds=0.5),
        ],
    )
    await eventually(lambda: len(rec.results) == 3, 30, "3 results")
    assert rec.results["fetch"].exit_code == 0
    assert (rec.root("n1") / "workitems/j1/job-1/fetch/stdout.txt").read_text() == "input"
    missing = rec.results["missing"]
    assert missing.exit_code is None and missing.failure is not None and missing.failure["code"] == "BlobNotFound"
    slow = rec.results["slow"]
    assert slow.timed_out and slow.exit_code == 137
