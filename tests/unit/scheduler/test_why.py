"""scheduler.why as data: the scheduler's memory and a task row in, the words out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from kiln.core import preparation as prep_rules
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import JobEntry, StepRef
from kiln.scheduler.why import why


@dataclass
class Memory:
    nodes: dict[str, NodeSlots] = field(default_factory=dict)
    pools: dict[str, dict[str, Any]] = field(default_factory=lambda: {"p": {"key": "p", "state": "active"}})
    jobs: dict[str, JobEntry] = field(default_factory=dict)
    preps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    waiting: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    steps: dict[str, StepRef] = field(default_factory=dict)


def job(state: str = "active", **spec: Any) -> dict[str, Any]:
    return {"key": "j", "state": state, "pool_key": "p", "spec": spec}


def task(seq: int = 1, state: str = "active", slots: int = 1, **fields: Any) -> dict[str, Any]:
    row = {
        "seq": seq,
        "key": f"t{seq}",
        "id": f"t{seq}",
        "state": state,
        "required_slots": slots,
        "node_id": None,
        "spec": {},
    }
    return {**row, **fields}


def memory(job_row: dict[str, Any], *nodes: NodeSlots, queued: tuple[int, ...] = (1,)) -> Memory:
    entry = JobEntry(job_row)
    for seq in queued:
        entry.queue.push(seq, 1)
    return Memory(nodes={n.node_id: n for n in nodes}, jobs={"j": entry})


def node(node_id: str = "n1", capacity: int = 2, used: int = 0, up: bool = True) -> NodeSlots:
    slots = NodeSlots(node_id, "p", capacity, "/root", up=up)
    for i in range(used):
        slots.book(f"t:{i}:1", 1)
    return slots


def test_completed_with_its_exit_code_and_failure() -> None:
    failure = {"code": "FailureExitCode", "message": "exit 3"}
    said = why(Memory(), job(), task(state="completed", exit_code=3, failure_info=failure))
    assert said == "completed: exit code 3 (failure: FailureExitCode: exit 3)"
    assert why(Memory(), job(), task(state="completed", exit_code=0)) == "completed: exit code 0"


def test_running_and_preparing() -> None:
    assert why(Memory(), job(), task(state="running", node_id="n1")) == "running on node n1"
    mem = Memory(preps={("j", "n1"): {**prep_rules.new_record("j", "p", "n1", 0), "prep_state": "running"}})
    said = why(mem, job(), task(state="preparing", node_id="n1"))
    assert said == "waiting: preparation task running on node n1"


@pytest.mark.parametrize("state", ["disabled", "disabling", "terminating"])
def test_the_jobs_state(state: str) -> None:
    assert why(memory(job(state), node()), job(state), task()) == f"waiting: job is {state}"


def test_blocked_by_a_parent_and_waiting_for_one() -> None:
    row = job(usesTaskDependencies=True)
    mem = memory(row, node(), queued=())
    child = task(3, spec={"dependsOn": {"taskIds": ["t1", "t2"]}})
    mem.jobs["j"].graph.add([task(1), task(2), child])
    parents = {
        "t1": {"state": "completed", "dependency_action": "block"},
        "t2": {"state": "running", "dependency_action": None},
    }
    assert why(mem, row, child, parents) == "blocked: parent t1 completed with dependencyAction block"
    parents["t1"]["dependency_action"] = "satisfy"
    assert why(mem, row, child, parents) == "waiting for parent tasks to complete: t2"


def test_waiting_for_the_job_manager_task() -> None:
    row = job(jobManagerTask={"id": "manager"})
    mem = memory(row, node(), queued=(1, 2))
    mem.jobs["j"].manager_seq = 1
    assert why(mem, row, task(2)) == "waiting for the job manager task (manager) to start"


def test_max_parallel_tasks_reached() -> None:
    row = job(maxParallelTasks=2)
    mem = memory(row, node(capacity=4, used=2))
    mem.steps = {f"t:{s}:1": StepRef("task", "j", "n1", 1, s, 1) for s in (7, 8)}
    assert why(mem, row, task()) == "waiting: maxParallelTasks 2 reached"


def test_sent_ahead_to_a_node() -> None:
    busy = node(used=2)
    busy.ahead["t:1:1"] = ("j", 1, 1)
    assert why(memory(job(), busy), job(), task()) == "sent ahead to node n1: starts when a slot there frees"


def test_the_pool_has_no_nodes_or_none_up() -> None:
    assert why(memory(job()), job(), task()) == "waiting: the pool has no nodes"
    assert why(memory(job(), node(up=False)), job(), task()) == "waiting: the pool has no idle nodes"


def test_a_node_excluded_by_a_failed_preparation_task() -> None:
    mem = memory(job(), node("n1"))
    record = prep_rules.new_record("j", "p", "n1", 0)
    mem.preps[("j", "n1")] = {**record, "prep_state": "completed", "prep_result": "failure", "prep_exit_code": 3}
    said = why(mem, job(), task())
    assert said == "waiting: node n1 is excluded for this job since its preparation task failed (exit 3)"


def test_needs_more_slots_than_free_or_than_any_node_has() -> None:
    said = why(memory(job(), node("n1", capacity=4, used=2), node("n2", capacity=4, used=3)), job(), task(slots=4))
    assert said == "waiting: needs 4 slots; node n1 has 2 free"
    said = why(memory(job(), node("n1", capacity=2)), job(), task(slots=4))
    assert said == "waiting: needs 4 slots; the pool's nodes have 2 slots each"


def test_every_slot_in_use_and_a_node_excluded_besides() -> None:
    mem = memory(job(), node("n1", used=2), node("n2"))
    mem.preps[("j", "n2")] = {
        **prep_rules.new_record("j", "p", "n2", 0),
        "prep_state": "completed",
        "prep_result": "failure",
        "prep_exit_code": None,
        "prep_failure_info": {"code": "ResourceDownloadFailed"},
    }
    said = why(mem, job(), task())
    assert said == (
        "waiting: every slot of the pool's nodes is in use; "
        "node n2 is excluded for this job since its preparation task failed (ResourceDownloadFailed)"
    )
    mem.nodes["n1"].up = False
    assert why(mem, job(), task()).startswith("waiting: the pool has no idle nodes; node n2 is excluded")


def test_free_to_start() -> None:
    assert why(memory(job(), node()), job(), task()) == "waiting: queued for the next placement round"
