"""The agent's handlers, called directly (as distributed would, with keyword arguments)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kiln.compute.node import agent as agent_module
from kiln.compute.node.agent import NodeAgent
from kiln.compute.protocol import Step, StepResult

from ..helpers import alive, eventually


@pytest.fixture
async def agent() -> AsyncIterator[NodeAgent]:
    agent = NodeAgent()
    yield agent
    await agent.close()
    agent.table.check()


async def collect(agent: NodeAgent, count: int, timeout: float = 10.0) -> list[dict]:
    """Drain results the way the backend's pump does: long-poll, ack what was received."""
    got: list[dict] = []
    ack: list[str] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            batch = await agent.results(timeout=1.0, ack=ack)
            ack = [m["step_id"] for m in batch]
            got.extend(batch)
    await agent.results(timeout=0, ack=ack)
    return got


async def test_run_returns_at_once_and_results_come_in_batches(
    agent: NodeAgent, make_step: Callable[..., Step]
) -> None:
    steps = [make_step("sh -c 'exit 0'"), make_step("sh -c 'exit 4'"), make_step("no-such-program-kiln")]
    assert await agent.run([s.to_message() for s in steps]) == [s.step_id for s in steps]
    results = {m["step_id"]: StepResult.from_message(m) for m in await collect(agent, 3)}
    assert [results[s.step_id].exit_code for s in steps] == [0, 4, None]
    assert results[steps[2].step_id].failure["code"] == "CommandProgramNotFound"
    assert agent.table.running == {} and agent.table.finished == {}


async def test_results_wait_and_time_out_empty(agent: NodeAgent) -> None:
    assert await agent.results(timeout=0.05) == []


async def test_unacknowledged_results_are_sent_again(agent: NodeAgent, make_step: Callable[..., Step]) -> None:
    step = make_step()
    await agent.run([step.to_message()])
    first = await agent.results(timeout=10)
    assert [m["step_id"] for m in first] == [step.step_id]
    assert await agent.results(timeout=0) == first  # the reply was lost: not acknowledged
    assert await agent.results(timeout=0, ack=[step.step_id]) == []


async def test_a_result_waits_for_the_steps_started_with_it(
    agent: NodeAgent, make_step: Callable[..., Step], monkeypatch
) -> None:
    monkeypatch.setattr(agent_module, "REPORT_LINGER", 30.0)
    quick, slower = make_step("sh -c 'exit 0'", slots=1), make_step("sleep 0.5", slots=1)
    ahead = make_step("sleep 30", slots=1, ahead=True)  # takes the slot quick frees: no slot waits empty
    await agent.run([quick.to_message(), slower.to_message(), ahead.to_message()])
    batch = await agent.results(timeout=10)  # one report for both, though quick ends first
    assert sorted(m["step_id"] for m in batch if not m.get("running")) == sorted([quick.step_id, slower.step_id])
    await agent.kill([ahead.step_id])


async def test_a_result_that_leaves_a_slot_empty_is_reported_at_once(
    agent: NodeAgent, make_step: Callable[..., Step], monkeypatch
) -> None:
    """No step sent ahead takes the slot it frees: the control plane must know now to fill it."""
    monkeypatch.setattr(agent_module, "REPORT_LINGER", 30.0)
    quick, slower = make_step("sh -c 'exit 0'", slots=1), make_step("sleep 30", slots=1)
    await agent.run([quick.to_message(), slower.to_message()])
    loop = asyncio.get_running_loop()
    began = loop.time()
    batch = await agent.results(timeout=10)
    assert [m["step_id"] for m in batch] == [quick.step_id]
    assert loop.time() - began < 15  # not held for the 30 s linger, though slower started with it
    await agent.kill([slower.step_id])


async def test_results_wait_while_steps_sent_ahead_keep_the_slots_busy(
    agent: NodeAgent, make_step: Callable[..., Step], monkeypatch
) -> None:
    """A step sent ahead waits for each running step's slot: no slot goes empty, so the report waits (up to
    AHEAD_LINGER) and carries the results of the steps sent ahead that end meanwhile too."""
    monkeypatch.setattr(agent_module, "AHEAD_LINGER", 30.0)
    quick = make_step("sh -c 'exit 0'", slots=1)
    then = make_step("sleep 0.3", slots=1, ahead=True)  # takes quick's slot; another waits for its own
    last = make_step("sleep 30", slots=1, ahead=True)
    await agent.run([quick.to_message(), then.to_message(), last.to_message()])
    batch = await agent.results(timeout=10)
    assert sorted(m["step_id"] for m in batch if not m.get("running")) == sorted([quick.step_id, then.step_id])
    assert [m["step_id"] for m in batch if m.get("running")] == [last.step_id]  # then's result says it started
    await agent.kill([last.step_id])


async def test_results_wait_for_steps_sent_ahead_no_longer_than_ahead_linger(
    agent: NodeAgent, make_step: Callable[..., Step], monkeypatch
) -> None:
    monkeypatch.setattr(agent_module, "AHEAD_LINGER", 0.2)
    quick = make_step("sh -c 'exit 0'", slots=1)
    ahead = [make_step("sleep 30", slots=1, ahead=True) for _ in range(2)]
    await agent.run([quick.to_message(), *(a.to_message() for a in ahead)])
    loop = asyncio.get_running_loop()
    began = loop.time()
    batch = await agent.results(timeout=10)
    assert [m["step_id"] for m in batch if not m.get("running")] == [quick.step_id]
    assert loop.time() - began < 15  # not held until the steps sent ahead end
    await agent.kill([a.step_id for a in ahead])


async def test_a_result_does_not_wait_for_a_long_running_step(
    agent: NodeAgent, make_step: Callable[..., Step], monkeypatch
) -> None:
    monkeypatch.setattr(agent_module, "REPORT_LINGER", 30.0)
    long = make_step("sleep 60")
    await agent.run([long.to_message()])
    agent._started[long.step_id] -= 60  # as if it had started a minute ago
    quick = make_step("sh -c 'exit 0'")
    await agent.run([quick.to_message()])
    loop = asyncio.get_running_loop()
    began = loop.time()
    batch = await agent.results(timeout=10)
    assert [m["step_id"] for m in batch] == [quick.step_id]
    assert loop.time() - began < 15  # not held for the 30 s linger: the long step is not its neighbour
    assert long.step_id in agent.table.running
    await agent.kill([long.step_id])


async def test_a_repeated_step_id_runs_once(agent: NodeAgent, make_step: Callable[..., Step]) -> None:
    step = make_step("sleep 30")
    assert await agent.run([step.to_message()]) == [step.step_id]
    assert await agent.run([step.to_message()]) == []
    await agent.kill([step.step_id])


async def test_kill_kills_the_tree_and_drops_the_result(
    agent: NodeAgent, make_step: Callable[..., Step], node_root: Path
) -> None:
    slow = make_step("sh -c 'sleep 300 & echo $! > grandchild.pid; wait'", task_dir="workitems/j/job-1/slow")
    quick = make_step()
    await agent.run([slow.to_message(), quick.to_message()])
    pid_file = node_root / "workitems/j/job-1/slow/wd/grandchild.pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the grandchild")
    assert await agent.kill([slow.step_id, "unknown"]) == [slow.step_id]
    await eventually(lambda: not alive(int(pid_file.read_text())), 2, "the grandchild to die")
    results = await collect(agent, 1)
    assert [m["step_id"] for m in results] == [quick.step_id]
    assert agent.table.running == {}


async def test_close_kills_everything(make_step: Callable[..., Step], node_root: Path) -> None:
    agent = NodeAgent()
    step = make_step("sh -c 'sleep 300 & echo $! > grandchild.pid; wait'", task_dir="workitems/j/job-1/t")
    await agent.run([step.to_message()])
    pid_file = node_root / "workitems/j/job-1/t/wd/grandchild.pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the grandchild")
    await agent.close()
    await agent.close()  # idempotent
    await eventually(lambda: not alive(int(pid_file.read_text())), what="the grandchild to die")


async def test_file_operations_report_errors_by_name(agent: NodeAgent, node_root: Path) -> None:
    (node_root / "shared").mkdir(parents=True)
    (node_root / "shared/a.txt").write_bytes(b"hello")
    root = str(node_root)
    listing = await agent.list_files(node_root=root, path="shared", recursive=False)
    assert [e["name"] for e in listing["ok"]] == ["a.txt"]
    assert (await agent.stat_file(node_root=root, path="shared/a.txt"))["ok"]["size"] == 5
    assert (await agent.read_file(node_root=root, path="shared/a.txt", start=1, end=2))["ok"] == b"el"
    assert (await agent.read_file(node_root=root, path="nope"))["error"] == "FileNotFoundError"
    assert (await agent.delete_file(node_root=root, path="shared", recursive=False))["error"] == "DirectoryNotEmpty"
    assert (await agent.list_files(node_root=root, path="../x", recursive=False))["error"] == "ValueError"
    assert await agent.delete_file(node_root=root, path="shared", recursive=True) == {"ok": None}


# -- steps sent ahead ------------------------------------------------------------------------------


async def test_a_step_sent_ahead_starts_in_the_slot_a_finished_step_frees(
    agent: NodeAgent, make_step: Callable[..., Step], node_root: Path, monkeypatch
) -> None:
    monkeypatch.setattr(agent_module, "REPORT_LINGER", 30.0)
    first = make_step("sleep 0.3", slots=1)
    ahead = make_step("sh -c 'touch started; sleep 30'", slots=1, ahead=True)
    await agent.run([first.to_message(), ahead.to_message()])
    assert not (node_root / ahead.task_dir).exists()  # waits: no slot of the node is free
    batch = await agent.results(timeout=10)
    # one report: the result that freed the slot and the notice that the step sent ahead took it
    assert {m["step_id"]: bool(m.get("running")) for m in batch} == {first.step_id: False, ahead.step_id: True}
    notice = next(m for m in batch if m.get("running"))
    result = next(m for m in batch if not m.get("running"))
    assert notice["start_time"] >= result["end_time"]
    await eventually(lambda: (node_root / ahead.task_dir / "wd" / "started").exists(), what="the step sent ahead")
    # the notice is sent until acknowledged on its own; acknowledging the result does not drop it
    assert await agent.results(timeout=0, ack=[first.step_id]) == [notice]
    assert await agent.results(timeout=0, ack_started=[ahead.step_id]) == []
    await agent.kill([ahead.step_id])


async def test_a_step_sent_ahead_does_not_take_a_slot_already_reported_free(
    agent: NodeAgent, make_step: Callable[..., Step], node_root: Path
) -> None:
    first = make_step("/bin/true", slots=1)
    await agent.run([first.to_message()])
    assert [m["step_id"] for m in await agent.results(timeout=10)] == [first.step_id]
    # the control plane has that slot back and may fill it itself: a step sent ahead now must wait
    ahead = make_step("/bin/true", slots=1, ahead=True)
    assert await agent.results(timeout=0.3, ack=[first.step_id], run=[ahead.to_message()]) == []
    assert ahead.step_id in agent.table.running and not (node_root / ahead.task_dir).exists()
    second = make_step("sleep 0.2", slots=1)  # the next step to finish frees a slot for it
    await agent.run([second.to_message()])
    got = await collect(agent, 3)
    assert [m["step_id"] for m in got if m.get("running")] == [ahead.step_id]
    assert sorted(m["step_id"] for m in got if not m.get("running")) == sorted([second.step_id, ahead.step_id])


async def test_a_killed_step_frees_no_slot_for_a_step_sent_ahead(
    agent: NodeAgent, make_step: Callable[..., Step], node_root: Path
) -> None:
    running = make_step("sleep 30", slots=1)
    ahead = make_step("/bin/true", slots=1, ahead=True)
    await agent.run([running.to_message(), ahead.to_message()])
    await agent.kill([running.step_id])  # the control plane gives that slot itself
    assert await agent.results(timeout=0.3) == []
    assert not (node_root / ahead.task_dir).exists()
    assert await agent.kill([ahead.step_id]) == []  # never started: nothing to kill, and it never will
    assert agent.table.running == {} and list(agent._ahead) == []


async def test_a_withdrawn_step_sent_ahead_never_starts_and_one_already_started_runs_on(
    agent: NodeAgent, make_step: Callable[..., Step], node_root: Path
) -> None:
    first = make_step("/bin/true", slots=1)
    started = make_step("sh -c 'touch started; sleep 0.3'", slots=1, ahead=True)
    waiting = make_step("touch ran", slots=1, ahead=True)
    await agent.run([first.to_message(), started.to_message(), waiting.to_message()])
    await eventually(lambda: (node_root / started.task_dir / "wd" / "started").exists(), what="the first sent ahead")
    answer = agent.withdraw([started.step_id, waiting.step_id, "unknown"])
    assert answer == {"withdrawn": [waiting.step_id], "started": [started.step_id]}
    got = await collect(agent, 3)  # first's result, the notice and the result of the one that started
    assert sorted(m["step_id"] for m in got if not m.get("running")) == sorted([first.step_id, started.step_id])
    assert all(m["exit_code"] == 0 for m in got if not m.get("running"))
    assert not (node_root / waiting.task_dir).exists() and waiting.step_id not in agent.table.running
    agent.table.check()


async def test_a_report_does_not_wait_for_a_step_started_ahead(
    agent: NodeAgent, make_step: Callable[..., Step], monkeypatch
) -> None:
    monkeypatch.setattr(agent_module, "REPORT_LINGER", 30.0)
    first = make_step("/bin/true", slots=1)
    ahead = make_step("sleep 30", slots=1, ahead=True)
    await agent.run([first.to_message(), ahead.to_message()])
    loop = asyncio.get_running_loop()
    began = loop.time()
    batch = await agent.results(timeout=10)
    assert sorted(m["step_id"] for m in batch) == sorted([first.step_id, ahead.step_id])
    assert loop.time() - began < 15  # not held for the 30 s linger: the control plane must refill
    await agent.kill([ahead.step_id])


async def test_a_step_that_cannot_be_launched_fails_and_the_node_runs_the_next(
    agent: NodeAgent, make_step: Callable[..., Step]
) -> None:
    poison = make_step("/bin/true", environment={"HUGE": "x" * (128 * 1024 + 1)})  # exec: E2BIG
    await agent.run([poison.to_message()])
    [failed] = [StepResult.from_message(m) for m in await collect(agent, 1)]
    assert failed.exit_code is None and failed.failure["code"] == "CommandLineTooLong"
    innocent = make_step("sh -c 'exit 0'")
    await agent.run([innocent.to_message()])
    [ran] = [StepResult.from_message(m) for m in await collect(agent, 1)]
    assert (ran.step_id, ran.exit_code, ran.failure) == (innocent.step_id, 0, None)
