"""Tasks sent ahead: a node whose slots are all taken gets its next tasks before a slot frees.

Why: between a node's results and the steps that refill its slots lies a round trip through the
store (a few ms). Short tasks then leave nodes empty for much of the time. A task sent ahead waits
on its node and starts there the moment one of the node's steps finishes; the node tells which
started, in the same report as the results that freed their slots (compute/node/agent.py).

What a user sees stays Batch's: the task is `active` until the node says it started, then `running`
with that start time; at most taskSlotsPerNode slots run on a node. It is done only where placement
would give those slots to the same jobs in the same order anyway: for the jobs first in their pool's line
(scheduler/line.py: priority, then jobDefaultOrder creationtime; under `none` the jobs of equal priority
in turn, each task sent ahead being its job's turn; jobs with nothing queued do not count), with no
preparation task left to run on the node, no maxParallelTasks, no job manager and no job of lower priority
in the pool that allows task preemption (those tasks wait queued, to preempt).

Taking them back comes in two kinds. Where the tasks must not run on (a job that ends, a task ended or
deleted, a node that restarts or is lost, a disable with requeue or terminate), they are called back:
killed on the node in case they just started, queued again unless they end. Where it only changes where
they run (a job of a higher rank now wants the slots; a node whose free slots fit its first task
sent ahead, which the node itself would never start there, NodeSlots.ahead_stranded; a free slot on another
node of the pool that the queues cannot fill; a disable with wait; a node drained with taskcompletion), they are
withdrawn: the node gives back those it has not started and the rest run on, so no command runs twice.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from kiln import story, undo
from kiln.compute.protocol import StepResult, Withdrawal
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.job import JobState
from kiln.core.task import TaskState
from kiln.scheduler import steps as step_builder
from kiln.scheduler.line import TICKETS, Current, JobLine, Key, same_rank
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.preemption import preemptible
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import Effects, JobEntry, StepRef, task_step_id
from kiln.store import rows as db
from kiln.wire.times import now as utcnow

#: The columns that mark a task as sent ahead, cleared once its start is known or it is taken back.
NOT_AHEAD = {"sent_ahead_node": None, "sent_ahead_at": None}
#: The story's words for a task sent ahead that may have started unseen (its node lost, or the server restarted)
UNSEEN_RUN = {"requeue": True, "reason": "sent ahead, may have started unseen"}

log = logging.getLogger("kiln.scheduler")


class SendAhead(SchedulerParts):
    """Scheduler part: which tasks go ahead, their start, and calling them back."""

    def _send_ahead(self, conn: Connection, pool_key: str, effects: Effects) -> None:
        """After a placement round: fill the nodes' room ahead with tasks of the jobs the slots that free go to
        next, in the order placement would give them: the jobs first in the pool's line (`line.same_rank`: under
        jobDefaultOrder none those of the highest priority, in turn, each task sent ahead being its job's turn;
        under creationtime the oldest of them). What other jobs have ahead is withdrawn. Sending stops at a job
        of that rank that may not go ahead: placement serves it as slots free."""
        nodes = sorted((n for n in self.nodes.values() if n.pool_key == pool_key), key=lambda n: n.node_id)
        line = self.state.line_of(pool_key)
        current = functools.partial(self.state.line_key, pool_key=pool_key)
        first = self._first_rank(pool_key, line, current, nodes)
        head = line.peek(current)
        for node in nodes:
            self.state.withdraw(
                node.node_id,
                [
                    i
                    for i, (owner, _, _) in node.ahead.items()
                    if not self._goes_ahead(owner, pool_key, first) or self._out_of_turn(i, head)
                ],
                effects,
            )
        if first is None:
            return
        room = {n.node_id: n.room_ahead for n in nodes}
        picks: list[tuple[JobEntry, int, int, NodeSlots, int]] = []
        never_fit: list[tuple[JobEntry, int, int]] = []  # more slots than a node has: they never run, as in Batch
        open_nodes = [n for n in nodes if room[n.node_id] > 0]
        while open_nodes:  # one task per node in turn, like spread placement
            for node in list(open_nodes):
                pick = self._pick_ahead(line, current, first, node, room, never_fit)
                if isinstance(pick, tuple):
                    picks.append(pick)
                elif not pick:
                    open_nodes.remove(node)
        for entry, seq, slots in never_fit:
            entry.queue.push(seq, slots)
        self._dispatch_ahead(conn, picks, effects)

    def _pick_ahead(
        self,
        line: JobLine[str],
        current: Current[str],
        first: tuple[int, int],
        node: NodeSlots,
        room: dict[str, int],
        never_fit: list[tuple[JobEntry, int, int]],
    ) -> tuple[JobEntry, int, int, NodeSlots, int] | bool:
        """The next task in turn for the node (with its job's turn), taken off its queue and its job served; True
        for a task taken off that goes nowhere now (it waits for parents, or fits no node); False: nothing more
        goes to the node."""
        head = line.pop(current)
        if head is None:
            return False
        key, job_key = head
        entry = self.jobs[job_key]
        queued = entry.queue.peek()
        if (
            queued is None
            or not same_rank(key, (*first, 0, 0))
            or not self._goes_ahead(job_key, entry.row["pool_key"], first)
            or not (self._may_run(entry, node) and self._prepared(entry, node))
            or node.capacity >= queued[1] > room[node.node_id]
        ):
            line.want(job_key, key)  # keeps its turn
            return False
        seq, slots = entry.queue.pop()
        if slots > node.capacity:  # the pool's nodes all have its taskSlotsPerNode
            never_fit.append((entry, seq, slots))
            line.want(job_key, key)
            return True
        if entry.graph is not None and entry.graph.waiting(seq):
            line.want(job_key, key)
            return True  # queued again once its dependencies are met
        room[node.node_id] -= slots
        turn, entry.last_served = entry.last_served, next(TICKETS)
        if (now := current(job_key)) is not None:
            line.want(job_key, now)
        return entry, seq, slots, node, turn

    def _out_of_turn(self, step_id: str, head: tuple[Key, str] | None) -> bool:
        """A task sent ahead that the first job in line now comes before (under jobDefaultOrder none: a job whose
        queue refills by a requeue keeps its older turn; one given new tasks joins behind the turns taken,
        ControlState.tasks_added): withdrawn, so that the turns stay as placement's."""
        ref, entry = self.steps.get(step_id), None
        if head is None or ref is None or ref.job_key == head[1] or (entry := self.jobs.get(ref.job_key)) is None:
            return False
        sent_at = self.state.place(entry, ref.turn)
        return same_rank(sent_at, head[0]) and sent_at > head[0]

    def _dispatch_ahead(
        self, conn: Connection, picks: list[tuple[JobEntry, int, int, NodeSlots, int]], effects: Effects
    ) -> None:
        rows = {r["seq"]: r for r in db.tasks_by_seq(conn, [seq for _, seq, _, _, _ in picks])}
        sent: list[tuple[int, str]] = []  #: (task seq, node id)
        for entry, seq, slots, node, turn in picks:
            task = rows.get(seq)
            if task is None or task["state"] != TaskState.ACTIVE:
                continue  # deleted or ended meanwhile
            if task["spec"].get("multiInstanceSettings"):
                entry.queue.push(seq, slots)  # needs several nodes at once: placed when they are free
                continue
            sent.append((seq, node.node_id))
            step_id = task_step_id(seq, task["attempt"] + 1)
            self.state.sent_ahead(
                step_id,
                StepRef(
                    "task", entry.key, node.node_id, task["attempt"] + 1, seq, slots, row=task, ahead=True, turn=turn
                ),
            )
            if entry.graph is not None:
                entry.graph.started(seq)
            effects.run[node.node_id].append(
                step_builder.task_step(step_id, entry.row, task, self._placement(node), slots=slots, ahead=True)
            )
        db.mark_sent_ahead(conn, utcnow(), sent)  # committed before the steps leave: an unseen run is counted

    def _first_rank(
        self, pool_key: str, line: JobLine[str], current: Current[str], nodes: list[NodeSlots]
    ) -> tuple[int, int] | None:
        """The rank (`line.same_rank`) of the jobs that want slots first: those first in the pool's line, or
        jobs whose queues are dry with tasks still ahead (they want the slots those take)."""
        ranks = [self._rank(entry) for entry in self._owners(pool_key, nodes)]
        if (head := line.peek(current)) is not None:
            ranks.append(head[0][:2])
        return min(ranks, default=None)

    def _owners(self, pool_key: str, nodes: Iterable[NodeSlots]) -> list[JobEntry]:
        """The pool's active jobs with tasks sent ahead to these nodes."""
        owners = {owner for node in nodes for owner, _, _ in node.ahead.values()}
        return [
            entry
            for key in owners
            if (entry := self.jobs.get(key)) is not None
            and entry.row["pool_key"] == pool_key
            and entry.row["state"] == JobState.ACTIVE
        ]

    def _rank(self, entry: JobEntry) -> tuple[int, int]:
        """The job's place in its pool's line but for turns (`line.same_rank`)."""
        key = self.state.place(entry, 0)
        return key[0], key[1]

    def _goes_ahead(self, job_key: str, pool_key: str, first: tuple[int, int] | None) -> bool:
        """The job may have tasks ahead in the pool: active there, of the first rank, and none of its rules
        need its tasks to wait queued."""
        entry = self.jobs.get(job_key)
        if first is None or entry is None or entry.row["pool_key"] != pool_key or entry.row["state"] != JobState.ACTIVE:
            return False
        return self._rank(entry) == first and self._may_go_ahead(entry) and not self._may_preempt(entry)

    def _may_go_ahead(self, entry: JobEntry) -> bool:
        spec = entry.spec
        return spec.get("maxParallelTasks", -1) == -1 and spec.get("jobManagerTask") is None

    def _may_preempt(self, entry: JobEntry) -> bool:
        """A job of lower priority in the pool allows preemption: its running tasks make way for the entry's
        queued tasks (Preemption), which must then stay queued, not wait ahead for the slots they would free."""
        pool_key, below = entry.row["pool_key"], entry.row["priority"]
        return any(
            (job := self.jobs.get(key)) is not None and job.row["pool_key"] == pool_key and preemptible(job, below)
            for key in self.state.preemptors.get(pool_key, ())
        )

    def _prepared(self, entry: JobEntry, node: NodeSlots) -> bool:
        """No preparation task left to run or wait for on this node."""
        if entry.spec.get("jobPreparationTask") is None:
            return True
        record = self.preps.get((entry.key, node.node_id))
        return record is not None and record["incarnation"] == node.incarnation and prep_rules.succeeded(record)

    def _count_unseen_runs(self, conn: Connection, now: datetime, node_id: str | None = None) -> None:
        """After a restart, or when a node is lost (`node_id`): a task sent ahead may have started in the moment
        before, its notice never sent. Its node made the run's stdout.txt as it started the command: one made
        since the task was sent ahead is a run, counted as the requeue it now is (requeueCount + 1), as a
        running task's is."""
        for task in db.tasks_sent_ahead(conn, node_id):
            changes: dict[str, Any] = dict(NOT_AHEAD)
            node, entry = self.nodes.get(task["sent_ahead_node"]), self.jobs.get(task["job_key"])
            if (
                task["state"] == TaskState.ACTIVE
                and node is not None
                and entry is not None
                and (  # a root on another host cannot be read here: the task may have run, so it counts
                    not self.backend.node_files_here
                    or _made_since(
                        Path(node.root) / step_builder.task_dir(entry.row["id"], task["id"]) / "stdout.txt",
                        task["sent_ahead_at"],
                    )
                )
            ):
                changes.update(requeue_count=task["requeue_count"] + 1, last_requeue_time=now)
                # its state stays active: the story says why the count moved (the node it may have run on)
                seen = {**changes, "node_id": task["sent_ahead_node"]}
                story.note("task", task, TaskState.ACTIVE.value, TaskState.ACTIVE.value, seen, UNSEEN_RUN, now)
            db.change(conn, db.tasks, {"seq": task["seq"]}, changes)

    # ------------------------------------------------------------------ calling back
    def _call_back_to_idle_slots(self, conn: Connection, effects: Effects) -> None:
        """Free slots that the queues cannot fill this round take back tasks sent ahead to busy nodes, newest
        first, so that placement starts them now: on a busy node they would wait for one of its steps to end
        (a long task there) while a slot stands idle on another node of the pool."""
        for pool_key in {node.pool_key for node in self.nodes.values() if node.ahead}:
            members = [n for n in self.nodes.values() if n.pool_key == pool_key]
            owners = {owner for n in members for owner, _, _ in n.ahead.values()}
            entries = [self.jobs[key] for key in owners if key in self.jobs]
            room = [n.free for n in members if n.free and all(self._may_run(e, n) for e in entries)]
            coming = sum(node.ahead[i][2] for node in members for i in node.withdrawing)  # may come back
            idle = sum(room) - self._queued_slots(pool_key, sum(room), entries) - coming
            for node in sorted(members, key=lambda n: (-len(n.ahead), n.node_id)):
                if idle <= 0:
                    break
                if node.free:  # its own free slots start what it holds ahead (NodeSlots.ahead_stranded)
                    continue
                taken = []
                for step_id, (_, _, slots) in reversed(node.ahead.items()):
                    if step_id not in node.withdrawing and slots <= min(idle, max(room)):
                        taken.append(step_id)
                        idle -= slots
                self.state.withdraw(node.node_id, taken, effects)

    def _queued_slots(self, pool_key: str, enough: int, owners: list[JobEntry]) -> int:
        """Slots the queued tasks of the pool's jobs in line ask for, counted up to `enough`; not those of jobs
        that the owners of the tasks sent ahead outrank, as free slots go to the owners' tasks first."""
        first = min((self._rank(e) for e in owners), default=None)
        total = 0
        for job_key in self.state.line_of(pool_key).listed:
            entry = self.jobs.get(job_key)
            if (
                entry is not None
                and entry.row["pool_key"] == pool_key
                and entry.row["state"] == JobState.ACTIVE
                and (first is None or self._rank(entry) <= first)
            ):
                for _, slots in entry.queue.heap:
                    total += slots
                    if total >= enough:
                        return total
        return total

    async def _withdraw_from(self, node_id: str, step_ids: list[str]) -> None:
        try:
            answer = await self.backend.withdraw(node_id, step_ids)
        except Exception as exc:  # lost: node_emptied takes them back; else they may be asked again
            log.info("withdraw on %s failed: %r", node_id, exc)
            answer = Withdrawal(withdrawn=[], started=[])
        async with self.lock:
            effects = await self.db.write(lambda conn: self._withdrawn(conn, node_id, step_ids, answer))
        await self._act(effects)

    def _withdrawn(self, conn: Connection, node_id: str, asked: list[str], answer: Withdrawal) -> Effects:
        effects = Effects(wake=True)
        self._move_attempts_on(conn, self.state.withdraw_answered(node_id, asked, answer, effects))
        self._settle_disabling(conn, self._disabling_jobs(), utcnow())  # they waited for the answer
        return effects

    @staticmethod
    def _move_attempts_on(conn: Connection, taken_back: Iterable[StepRef]) -> None:
        """Tasks sent ahead and taken back (their rows still `active`, never changed for it): each attempt moves
        on, so that a later dispatch has a step id of its own (a kill may reach the node after it), and the
        task is no longer marked as sent ahead."""
        db.move_attempts_on(conn, [(ref.seq, ref.attempt) for ref in taken_back if ref.seq is not None])

    def _call_back(
        self,
        conn: Connection,
        node: NodeSlots,
        effects: Effects,
        *,
        job_key: str | None = None,
        requeue: bool = True,
        kill: bool = True,
    ) -> None:
        """Take back the node's tasks sent ahead (only job_key's, if given)."""
        step_ids = [step_id for step_id, (owner, _, _) in node.ahead.items() if job_key in (None, owner)]
        self._call_back_steps(conn, node, step_ids, effects, requeue=requeue, kill=kill)

    def _call_back_steps(
        self, conn: Connection, node: NodeSlots, step_ids: list[str], effects: Effects, *, requeue: bool, kill: bool
    ) -> None:
        """Killed on the node in case they started meanwhile, queued again unless they end."""
        for step_id in step_ids:
            owner, seq, slots = node.ahead[step_id]
            ref = self.state.step_off_node(node.node_id, step_id, effects, kill=kill)
            if ref is not None:
                self._move_attempts_on(conn, [ref])
            if requeue and (entry := self.jobs.get(owner)) is not None:
                entry.queue.push(seq, slots)

    def _call_back_job(self, conn: Connection, job_key: str, effects: Effects, *, requeue: bool) -> None:
        for node in self.nodes.values():
            self._call_back(conn, node, effects, job_key=job_key, requeue=requeue)

    # ------------------------------------------------------------------ starting
    def _ahead_started(
        self, conn: Connection, started: Iterable[tuple[StepResult, StepRef]], now: datetime, effects: Effects
    ) -> dict[int, dict[str, Any]]:
        """Tasks sent ahead that their node started (a notice, or their result): active -> running at the
        node's start time. Returns their rows as they are now, by seq."""
        started = list(started)
        rows = self._finished_task_rows(conn, [ref for _, ref in started])
        running: dict[int, dict[str, Any]] = {}
        for result, ref in started:
            assert ref.seq is not None, "task steps carry their task's seq"
            node = self.nodes.get(ref.node_id)
            task = rows.get(ref.seq)
            if node is None or task is None or task["state"] != TaskState.ACTIVE:  # called back too late
                self.state.step_off_node(ref.node_id, result.step_id, effects, kill=result.running)
                continue
            start = min(datetime.fromtimestamp(result.start_time, UTC), now)  # a node's clock may run ahead
            changes = task_rules.transition(
                task,
                TaskState.RUNNING,
                start,
                pool_id=self.pools[node.pool_key]["id"],
                node_id=node.node_id,
                attempt=ref.attempt,
            )
            changes.update(NOT_AHEAD)
            effects.change_task(task, changes)
            undo.update(task, changes)
            self.state.ahead_started(result.step_id, ref, task, running=result.running)
            effects.node_counters[(node.node_id, "total_tasks_run")] += 1
            running[ref.seq] = task
        return running


def _made_since(path: Path, since: datetime) -> bool:
    try:
        return path.stat().st_mtime >= since.timestamp()
    except OSError:  # never made (the task did not start), or its node's files are gone
        return False
