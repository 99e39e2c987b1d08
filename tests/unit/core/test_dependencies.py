"""core.dependencies: events in (add, complete, start, remove), runnable tasks out (batch-semantics §6.4).

Each scenario is checked against a from-scratch reading of the rule after every event, and a random
sequence of events is checked the same way, so the incremental counters cannot drift from the rule.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import pytest

from kiln.core.dependencies import NARROW_RANGE, DependencyGraph, Rebuild, numeric_id

SATISFY, BLOCK = True, False


class Job:
    """A job's tasks as the store would hold them, beside the graph under test."""

    def __init__(self) -> None:
        self.graph = DependencyGraph()
        self.tasks: dict[str, dict[str, Any]] = {}  # key -> row
        self.outcome: dict[str, bool] = {}  # key -> satisfied, for completed tasks
        self.started: set[int] = set()
        self.asked: list[list[str]] = []  # the keys the graph asked the store about, add by add
        self.queued: set[int] = set()  # what the scheduler's queue would hold
        self.next_seq = 1

    def add(self, *tasks: tuple[str, dict[str, Any] | None]) -> list[str]:
        rows = []
        for task_id, depends_on in tasks:
            spec = {"dependsOn": depends_on} if depends_on else {}
            row = {"seq": self.next_seq, "key": task_id.lower(), "id": task_id, "required_slots": 1, "spec": spec}
            self.next_seq += 1
            self.tasks[row["key"]] = row
            rows.append(row)
        return self._take(self.graph.add(rows, self.stored))

    def stored(self, keys: list[str]) -> set[str]:
        """The store's answer: which of these keys its tasks of the job have (each question kept)."""
        self.asked.append(keys)
        return {key for key in keys if key in self.tasks}

    def complete(self, task_id: str, satisfied: bool) -> list[str]:
        row = self.tasks[task_id.lower()]
        self.start(task_id)
        self.outcome[row["key"]] = satisfied
        return self._take(self.graph.complete(row["key"], satisfied))

    def start(self, task_id: str) -> None:
        row = self.tasks[task_id.lower()]
        self.started.add(row["seq"])
        self.queued.discard(row["seq"])
        self.graph.started(row["seq"])

    def remove(self, task_id: str) -> list[str]:
        row = self.tasks.pop(task_id.lower())
        self.outcome.pop(row["key"], None)
        self.queued.discard(row["seq"])
        return self._take(self.graph.remove(row["seq"], row["key"]))

    def restart(self, part: int) -> None:
        """The server restarted: a new graph, rebuilt as the scheduler rebuilds it from the store's rows (the
        completed tasks in parts of `part`, then the others), and the queue refilled with the tasks that never
        started and wait on nothing (tasks that ran are requeued without a gate, as the scheduler does)."""
        rebuild = Rebuild(DependencyGraph())
        rows = sorted(self.tasks.values(), key=lambda row: row["seq"])
        completed = [
            (r["seq"], r["key"], r["id"], 1, "completed", "satisfy" if self.outcome[r["key"]] else "block")
            for r in rows
            if r["key"] in self.outcome
        ]
        for start in range(0, len(completed), part):
            rebuild.completed(completed[start : start + part])
        uncompleted = [
            r | {"state": "active", "spec": {} if r["seq"] in self.started else r["spec"]}
            for r in rows
            if r["key"] not in self.outcome
        ]
        asked = rebuild.uncompleted(uncompleted)
        assert not set(asked) & set(rebuild.graph.unsatisfied)
        for _ in rebuild.add(self.stored(asked), part):
            pass
        self.graph = rebuild.graph
        self.queued = {r["seq"] for r in rows if r["seq"] not in self.started and not self.graph.waiting(r["seq"])}

    def _take(self, runnable: list[tuple[int, int]]) -> list[str]:
        ids = {r["seq"]: r["id"] for r in self.tasks.values()}
        for seq, slots in runnable:
            assert slots == 1
            self.queued.add(seq)
        return sorted(ids[seq] for seq, _ in runnable)

    # ------------------------------------------------------------------ the rule, read from scratch
    def may_run(self, row: dict[str, Any]) -> bool:
        depends_on = row["spec"].get("dependsOn") or {}
        for parent in depends_on.get("taskIds") or ():
            if not self.outcome.get(parent.lower(), False):
                return False
        own = numeric_id(row["id"])
        for r in depends_on.get("taskIdRanges") or ():
            by_number: dict[int, list[str]] = {}
            for other in self.tasks.values():
                number = numeric_id(other["id"])
                if number is not None and number != own and r["start"] <= number <= r["end"]:
                    by_number.setdefault(number, []).append(other["key"])
            if any(not any(self.outcome.get(k, False) for k in keys) for keys in by_number.values()):
                return False
        return True

    def check(self) -> None:
        """Every unstarted task is runnable by the graph exactly when the rule says so, and the graph holds the
        key of every task but those that completed with satisfy (a job's history stays in the store)."""
        assert self.graph.unsatisfied == {key for key in self.tasks if not self.outcome.get(key, False)}
        by_number: dict[int, list[str]] = {}
        for key, row in self.tasks.items():
            if (number := numeric_id(row["id"])) is not None:
                by_number.setdefault(number, []).append(key)
        counts = {n: (len(keys), sum(self.outcome.get(k, False) for k in keys)) for n, keys in by_number.items()}
        records = {n: (entry.tasks, entry.satisfied) for n, entry in self.graph.numbers.items()}
        assert records == {n: c for n, c in counts.items() if c[0] > c[1]}  # only integers some task keeps unmet
        met = {n: tasks for n, (tasks, satisfied) in counts.items() if tasks == satisfied}
        assert {n: self.graph.met_by(n) for n in met} == met
        assert sum(bin(bits).count("1") for bits in self.graph.met.values()) == len(met)
        for row in self.tasks.values():
            if row["seq"] in self.started:
                continue
            assert self.graph.waiting(row["seq"]) is not self.may_run(row), row["id"]
            if self.may_run(row):
                assert row["seq"] in self.queued, f"{row['id']} may run but was never released"


def ids(*names: str) -> dict[str, Any]:
    return {"taskIds": list(names)}


def span(start: int, end: int) -> dict[str, Any]:
    return {"taskIdRanges": [{"start": start, "end": end}]}


@pytest.fixture
def job() -> Job:
    job = Job()
    yield job
    job.check()


def test_numeric_ids() -> None:
    assert [numeric_id(i) for i in ("7", "007", "0", "a7", "-7", "7a", "٣")] == [7, 7, 0, None, None, None, None]


def test_independent_tasks_run_at_once(job: Job) -> None:
    assert job.add(("a", None), ("b", None)) == ["a", "b"]


def test_chain_runs_one_link_at_a_time(job: Job) -> None:
    assert job.add(("1", None), ("2", ids("1")), ("3", ids("2"))) == ["1"]
    assert job.complete("1", SATISFY) == ["2"]
    job.check()
    assert job.complete("2", SATISFY) == ["3"]


def test_failed_parent_blocks_for_ever_unless_it_satisfies(job: Job) -> None:
    job.add(("p", None), ("q", None), ("after-p", ids("p")), ("after-q", ids("q")))
    assert job.complete("p", BLOCK) == []
    assert job.graph.waiting(job.tasks["after-p"]["seq"])
    assert job.complete("q", SATISFY) == ["after-q"]


def test_parent_added_later_is_waited_for(job: Job) -> None:
    assert job.add(("child", ids("late"))) == []
    assert job.add(("late", None)) == ["late"]
    assert job.complete("late", SATISFY) == ["child"]


def test_a_parent_that_completed_before_is_found_in_the_store(job: Job) -> None:
    """The graph forgets a task that completed with satisfy; a dependent added later names it, and the store's
    answer (it has the task) releases that dependent, while a key no task has is waited for."""
    job.add(("done", None), ("blocked", None))
    job.complete("done", SATISFY)
    job.complete("blocked", BLOCK)
    assert job.graph.unsatisfied == {"blocked"}
    assert job.add(("child", ids("done"))) == ["child"]
    assert job.add(("other", ids("done", "blocked", "missing"))) == []
    assert job.asked == [["done"], ["done", "missing"]]  # only what the graph does not hold, once per add
    assert job.graph.unmet(job.tasks["other"]["seq"]) == 2


def test_order_within_one_request_does_not_matter(job: Job) -> None:
    assert job.add(("child", ids("p1", "P2")), ("p1", None), ("p2", None)) == ["p1", "p2"]
    assert job.complete("p1", SATISFY) == []
    assert job.complete("p2", SATISFY) == ["child"]  # ids match without regard to case


def test_fan_in_over_a_range(job: Job) -> None:
    parents = [(str(i), None) for i in range(1, 1001)]
    assert len(job.add(*parents, ("merge", span(1, 1000)))) == 1000
    for i in range(1, 1000):
        assert job.complete(str(i), SATISFY) == []
    assert job.graph.unmet(job.tasks["merge"]["seq"]) == 1
    assert job.complete("1000", SATISFY) == ["merge"]


def test_range_waits_only_for_ids_that_exist(job: Job) -> None:
    job.add(("3", None), ("7", None), ("5flamingoes", None), ("merge", span(1, 10)))
    job.complete("3", SATISFY)
    assert job.complete("7", SATISFY) == ["merge"]


def test_range_with_no_task_in_it_runs_at_once(job: Job) -> None:
    assert job.add(("merge", span(1, 10))) == ["merge"]


def test_task_added_later_into_a_waiting_range_joins_it(job: Job) -> None:
    job.add(("1", None), ("merge", span(1, 10_000)))  # a wide range
    assert job.add(("2", None)) == ["2"]
    assert job.complete("1", SATISFY) == []
    assert job.complete("2", SATISFY) == ["merge"]


def test_narrow_range_joins_too(job: Job) -> None:
    job.add(("1", None), ("merge", span(1, 5)))
    job.add(("5", None))
    job.complete("1", SATISFY)
    assert job.complete("5", SATISFY) == ["merge"]


def test_leading_zeros_are_one_integer_and_the_first_satisfying_task_counts(job: Job) -> None:
    job.add(("4", None), ("04", None), ("merge", span(4, 4)))
    assert job.complete("04", SATISFY) == ["merge"]
    job.check()
    assert job.complete("4", BLOCK) == []


def test_a_task_is_not_its_own_parent(job: Job) -> None:
    assert job.add(("1", None), ("5", span(1, 10))) == ["1"]
    assert job.complete("1", SATISFY) == ["5"]


def test_ids_and_ranges_together(job: Job) -> None:
    job.add(
        ("1", None),
        ("2", None),
        ("x", None),
        ("child", {"taskIds": ["x", "2"], "taskIdRanges": [{"start": 1, "end": 2}, {"start": 2, "end": 2}]}),
    )
    assert job.complete("2", SATISFY) == []
    assert job.complete("x", SATISFY) == []
    assert job.complete("1", SATISFY) == ["child"]


def test_deleting_an_unfinished_range_parent_releases(job: Job) -> None:
    job.add(("1", None), ("2", None), ("merge", span(1, 2)))
    job.complete("1", SATISFY)
    assert job.remove("2") == ["merge"]


def test_deleting_a_satisfied_listed_parent_makes_the_child_wait_again(job: Job) -> None:
    job.add(("a", None), ("b", None), ("child", ids("a", "b")))
    job.complete("a", SATISFY)
    job.remove("a")
    assert job.complete("b", SATISFY) == []
    assert job.add(("a", None)) == ["a"]
    assert job.complete("a", SATISFY) == ["child"]


def test_a_released_child_is_blocked_again_when_its_parent_goes(job: Job) -> None:
    job.add(("a", None), ("child", ids("a")))
    assert job.complete("a", SATISFY) == ["child"]
    job.remove("a")
    assert job.graph.waiting(job.tasks["child"]["seq"])  # the scheduler skips it when it pops it
    job.queued.discard(job.tasks["child"]["seq"])


def test_a_started_child_is_gated_no_more(job: Job) -> None:
    job.add(("a", None), ("child", ids("a")))
    job.complete("a", SATISFY)
    job.start("child")
    job.remove("a")
    assert not job.graph.waiting(job.tasks["child"]["seq"])
    assert job.graph.by_key == {} and job.graph.by_number == {} and job.graph.waiters == {}


def test_deleting_a_dependent_drops_its_edges(job: Job) -> None:
    job.add(("a", None), ("child", {"taskIds": ["a"], "taskIdRanges": [{"start": 1, "end": 100_000}]}))
    job.remove("child")
    assert job.graph.by_key == {} and job.graph.by_number == {} and job.graph.wide_waiters == set()


def test_outcome_can_change_when_a_parent_runs_again(job: Job) -> None:
    """A failed parent that is reactivated and then satisfies releases its dependents once."""
    job.add(("p", None), ("child", ids("p")), ("other", ids("p", "q")), ("q", None))
    assert job.complete("p", BLOCK) == []
    assert job.complete("p", SATISFY) == ["child"]
    assert job.complete("p", SATISFY) == []
    assert job.complete("q", SATISFY) == ["other"]


def test_a_task_the_graph_was_never_given_changes_nothing() -> None:
    """A key the graph does not hold reads as completed with satisfy: its completion or deletion (a numeric id
    among them) touches no record the graph does not have."""
    graph = DependencyGraph()
    assert graph.complete("7", True) == [] and graph.remove(1, "7") == [] and graph.remove(2, "x") == []
    assert graph.unsatisfied == set() and graph.numbers == {} and graph.met == {}


def test_a_numeric_jobs_history_leaves_the_graph_for_bits(job: Job) -> None:
    """3,000 numeric tasks that satisfied keep no record, only bits (3 ints); a record comes back for an
    integer when one of its tasks changes, and only then may a range wait on it again."""
    n = 3_000
    job.add(*[(str(i), None) for i in range(n)])
    for i in range(n):
        job.complete(str(i), SATISFY)
    assert job.graph.numbers == {} and len(job.graph.met) == 3 and job.graph.met_tasks == {}
    assert job.add(("after", span(0, n - 1)), ("narrow", span(7, 7))) == ["after", "narrow"]  # nothing to wait on
    job.start("after")
    job.start("narrow")
    assert job.add(("0007", None), ("sevens", span(7, 7))) == ["0007", "sevens"]  # 7 is still met by "7"
    job.start("sevens")
    assert (job.graph.numbers[7].tasks, job.graph.numbers[7].satisfied) == (2, 1)
    job.complete("0007", SATISFY)
    assert 7 not in job.graph.numbers and job.graph.met_by(7) == 2
    assert job.add(("wide", span(0, n - 1))) == ["wide"]  # added while 7 was met: not indexed under it
    job.check()
    assert job.complete("7", BLOCK) == [] and job.complete("0007", BLOCK) == []  # reactivated, and now they block
    assert job.graph.waiting(job.tasks["wide"]["seq"])  # its record made again, "wide" waits on 7 too
    job.queued.discard(job.tasks["wide"]["seq"])  # the scheduler drops a re-blocked task it pops
    assert job.add(("late", span(0, n - 1))) == []
    job.check()
    assert job.complete("0007", SATISFY) == ["late", "wide"]


def test_a_restart_rebuilds_the_graph_from_the_live_tasks_and_the_met_integers(job: Job) -> None:
    """After a restart the graph holds what it held before: records of the live tasks (a blocked parent among
    them), bits of the integers whose tasks all satisfied (7 twice), nothing of other satisfied tasks, and
    waiting dependents; a dependent naming a satisfied parent is released by the store's answer."""
    job.add(*[(str(i), None) for i in range(3_000)], ("0007", None), ("x", None), ("failed", None))
    for i in range(2_999):
        job.complete(str(i), SATISFY)
    job.complete("0007", SATISFY)
    job.complete("x", SATISFY)
    job.complete("failed", BLOCK)
    job.add(("on-x", ids("x", "2999")), ("on-failed", ids("failed")), ("range", span(0, 2_999)))
    job.restart(part=7)
    job.check()
    assert job.graph.unsatisfied == {"2999", "failed", "on-x", "on-failed", "range"}
    assert set(job.graph.numbers) == {2_999} and job.graph.met_by(7) == 2 and job.graph.met_tasks == {7: 2}
    assert job.complete("2999", SATISFY) == ["on-x", "range"]
    assert job.add(("007", None), ("sevens", span(7, 7))) == ["007", "sevens"]  # 7 is met by two tasks still
    job.check()


def test_a_graph_gives_back_the_room_its_live_tasks_needed_once_they_are_gone() -> None:
    """Python's dicts and sets keep the room of their largest size: the graph makes its tables again as the
    tasks that filled them leave, so 50,000 chained tasks at once (~10 MB of tables) leave a few kB."""
    graph = DependencyGraph()
    n = 50_000
    graph.add(
        [
            {"seq": i, "key": str(i), "id": str(i), "required_slots": 1, "spec": {"dependsOn": span(i - 1, i - 1)}}
            for i in range(n)
        ]
    )
    assert _table_bytes(graph) > 5_000_000
    for i in range(n):
        graph.started(i)
        graph.complete(str(i), True)
        if i == n - 5_000:
            assert _table_bytes(graph) < 4_000_000  # made again on the way down, not only once empty
    assert _table_bytes(graph) < 10_000


def _table_bytes(graph: DependencyGraph) -> int:
    tables = (graph.unsatisfied, graph.numbers, graph.waiters, graph.by_key, graph.by_number, graph.met_tasks)
    return sum(sys.getsizeof(table) for table in tables)


def test_chain_of_ten_thousand_is_linear() -> None:
    graph = DependencyGraph()
    n = 10_000
    rows = [
        {
            "seq": i,
            "key": f"t{i}",
            "id": f"t{i}",
            "required_slots": 1,
            "spec": {"dependsOn": {"taskIds": [f"t{i - 1}"]}} if i else {},
        }
        for i in range(n)
    ]
    assert graph.add(rows) == [(0, 1)]
    for i in range(n - 1):
        graph.started(i)
        assert graph.complete(f"t{i}", True) == [(i + 1, 1)]
    assert len(graph.waiters) == 1
    assert graph.unsatisfied == {f"t{n - 1}"}  # the completed links are the store's alone


@pytest.mark.parametrize("seed", range(12))
def test_random_events_follow_the_rule(seed: int) -> None:
    rng = random.Random(seed)
    job = Job()
    pool = [str(i) for i in range(12)] + [f"0{i}" for i in range(3)] + ["a", "b", "c"]
    wide = NARROW_RANGE + 5
    for _ in range(120):
        free = [i for i in pool if i.lower() not in job.tasks]
        present = list(job.tasks.values())
        action = rng.random()
        if free and action < 0.4:
            depends_on: dict[str, Any] = {}
            if rng.random() < 0.6:
                depends_on["taskIds"] = rng.sample(pool, rng.randint(0, 3))
            if rng.random() < 0.5:
                start = rng.randint(0, 10)
                depends_on["taskIdRanges"] = [{"start": start, "end": start + rng.choice([0, 2, 5, wide])}]
            batch = rng.sample(free, min(len(free), rng.randint(1, 3)))
            job.add(*[(i, depends_on if k == 0 else None) for k, i in enumerate(batch)])
        elif present and action < 0.75:
            row = rng.choice(present)
            if row["seq"] in job.queued or row["seq"] in job.started:  # only what the scheduler could have run
                job.complete(row["id"], rng.random() < 0.7)
        elif present and action < 0.85:
            row = rng.choice(present)
            if row["seq"] in job.queued:
                job.start(row["id"])
        elif present:
            job.remove(rng.choice(present)["id"])
        # what the scheduler does when it pops a task that was re-blocked: drop it until released again
        job.queued = {s for s in job.queued if not job.graph.waiting(s)}
        if rng.random() < 0.1:
            job.restart(part=rng.choice([1, 2, 50]))
        job.check()


@pytest.mark.parametrize(
    ("job", "depends_on", "refused"),
    [
        ({"usesTaskDependencies": True}, {"taskIds": ["a"]}, False),
        ({"usesTaskDependencies": True}, None, False),
        ({"usesTaskDependencies": False}, None, False),
        ({"usesTaskDependencies": False}, {"taskIds": ["a"]}, True),
        ({"usesTaskDependencies": False}, {}, True),
        ({}, {"taskIdRanges": [{"start": 1, "end": 2}]}, True),
    ],
)
def test_check_allowed(job, depends_on, refused) -> None:
    from kiln.core.dependencies import check_allowed
    from kiln.errors import BadRequest

    if not refused:
        check_allowed(job, depends_on)
        return
    with pytest.raises(BadRequest) as caught:
        check_allowed(job, depends_on)
    assert caught.value.status == 400 and caught.value.code == "TaskDependenciesNotSpecifiedOnJob"
