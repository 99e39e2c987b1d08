"""Faults on demand that wait for their moment: the next preparation task a node runs fails with a given exit
code (`kiln fault fail-next-prep`); the next start task a node runs does (`fail-next-start-task`); the next
step with resource files on a node or of a job fails its download as the blob store's answer would make it
fail (`fail-next-download`); steps sent to a node wait before they go (`slow-dispatch`). Kept in memory: a
restart forgets them.

The preparation fault is applied where the step is decided (inside the placement transaction); the others
where steps leave for their node (`dispatch`, after the commit), each noted in a small transaction of its
own, caused by the request that asked for it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shlex
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kiln import story
from kiln.compute.protocol import Step
from kiln.undo import TrackedDict
from kiln.wire.times import now as utcnow

if TYPE_CHECKING:
    from kiln.scheduler.parts import SchedulerParts

log = logging.getLogger("kiln.scheduler")

#: The faults' names in stories (a record's to_state) and in `kiln fault`.
LOSE_NODE = "lose-node"
FAIL_NEXT_PREP = "fail-next-prep"
KILL_TASK = "kill-task"
FAIL_NEXT_START = "fail-next-start"
FAIL_NEXT_DOWNLOAD = "fail-next-download"
SLOW_DISPATCH = "slow-dispatch"
#: A spot node taken back (`kiln node preempt`, `kiln fault preempt`, or at random): noted for the tasks on it.
PREEMPT = "preempt"


def exits_with(step: Step, code: int) -> Step:
    """The step as it runs under a fault: its command line only exits with `code`."""
    return dataclasses.replace(step, command_line=f"/bin/sh -c {shlex.quote(f'exit {code}')}")


@dataclasses.dataclass(frozen=True, slots=True)
class Asked:
    """A fault's value and the stimulus of the request that asked for it (its story's cause)."""

    value: int
    stimulus: str


@dataclasses.dataclass(slots=True)
class Slow:
    """Steps to a node wait `delay` seconds: the next `steps` of them, or those sent before `until`
    (time.monotonic())."""

    delay: float
    stimulus: str
    steps: int | None = None
    until: float | None = None

    def takes(self) -> bool:
        """Whether the next step waits (and counts it)."""
        if self.until is not None:
            return time.monotonic() < self.until
        assert self.steps is not None, "a slow dispatch lasts a number of steps or a time"
        self.steps -= 1
        return self.steps >= 0

    def spent(self) -> bool:
        return (self.steps is not None and self.steps <= 0) or (
            self.until is not None and time.monotonic() >= self.until
        )


def node_target(node_id: str) -> str:
    return f"node:{node_id}"


def job_target(job_key: str) -> str:
    return f"job:{job_key}"


class PendingFaults:
    def __init__(self, scheduler: SchedulerParts) -> None:
        self.scheduler = scheduler
        #: node id -> the exit code its next preparation task ends with
        self.prep_exit_codes: dict[str, int] = TrackedDict()  #: tracked: a failed commit gives the fault back
        # set by requests and taken by `dispatch`, both on the event loop and outside any store transaction
        #: node id -> the exit code its next start task ends with
        self.start_exit_codes: dict[str, Asked] = {}
        #: node_target or job_target -> the HTTP status the next download of its steps gets
        self.downloads: dict[str, Asked] = {}
        #: node id -> how its steps wait
        self.slow: dict[str, Slow] = {}

    def prep_step(self, step: Step, job_key: str, node_id: str, now: datetime) -> Step:
        """The prep step as the node will run it: a pending fault swaps its command line for an exit with
        the code asked for, noted in the story of the job's tasks on the node."""
        code = self.prep_exit_codes.pop(node_id, None)
        if code is None:
            return step
        story.note(
            "fault", {"job_key": job_key, "node_id": node_id}, None, FAIL_NEXT_PREP, {}, {"exit_code": code}, now
        )
        return exits_with(step, code)

    async def dispatch(self, node_id: str, batch: list[Step]) -> None:
        """Send the steps to their node, as the pending faults make them: a start task that exits, a download
        that fails, steps that wait."""
        if not (self.start_exit_codes or self.downloads or self.slow):
            await self.scheduler.backend.run(node_id, batch)
            return
        notes: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = []  # (stimulus, row, fault, event)
        sent: list[Step] = []
        for step in batch:
            row = self._story_row(step, node_id)
            if step.kind == "start" and (asked := self.start_exit_codes.pop(node_id, None)) is not None:
                step = exits_with(step, asked.value)
                notes.append((asked.stimulus, row, FAIL_NEXT_START, {"exit_code": asked.value}))
            if step.resource_files and (asked := self._download(node_id, row.get("job_key"))) is not None:
                step = dataclasses.replace(step, download_fault=asked.value)
                notes.append((asked.stimulus, row, FAIL_NEXT_DOWNLOAD, {"reason": f"HTTP {asked.value}"}))
            sent.append(step)
        now_steps, later = self._split_slow(node_id, sent, notes)
        await self._note(notes)
        now_steps = self._wanted(now_steps)  # the notes took a moment: some may have been called back
        if now_steps:
            await self.scheduler.backend.run(node_id, now_steps)
        if later:
            self.scheduler._spawn(self._send_later(node_id, later, self.slow[node_id].delay), "slow-dispatch")
        if (slow := self.slow.get(node_id)) is not None and slow.spent():
            del self.slow[node_id]

    def _download(self, node_id: str, job_key: str | None) -> Asked | None:
        """The download fault that the next step on the node (of the job) takes, if one is pending."""
        asked = self.downloads.pop(node_target(node_id), None)
        if asked is None and job_key:
            asked = self.downloads.pop(job_target(job_key), None)
        return asked

    def _split_slow(
        self, node_id: str, steps: list[Step], notes: list[tuple[str, dict[str, Any], str, dict[str, Any]]]
    ) -> tuple[list[Step], list[Step]]:
        """(steps sent now, steps that wait)."""
        slow = self.slow.get(node_id)
        if slow is None:
            return steps, []
        now_steps: list[Step] = []
        later: list[Step] = []
        for step in steps:
            if slow.takes():
                later.append(step)
                event = {"reason": f"dispatch delayed {slow.delay:g}s"}
                notes.append((slow.stimulus, self._story_row(step, node_id), SLOW_DISPATCH, event))
            else:
                now_steps.append(step)
        return now_steps, later

    def _story_row(self, step: Step, node_id: str) -> dict[str, Any]:
        """Whose story a fault on the step goes into: its task's, its job's on the node (prep, release), or
        the node's (its start task)."""
        ref = self.scheduler.steps.get(step.step_id)
        row: dict[str, Any] = {"node_id": node_id}
        if ref is not None and ref.job_key:
            row["job_key"] = ref.job_key
            if ref.kind == "task":
                row["seq"] = ref.seq
        return row

    def _wanted(self, steps: list[Step]) -> list[Step]:
        return [s for s in steps if s.step_id in self.scheduler.steps]

    async def _send_later(self, node_id: str, steps: list[Step], delay: float) -> None:
        """After the delay, the steps still wanted (not ended, requeued or killed meanwhile) go to the node."""
        await asyncio.sleep(delay)
        if wanted := self._wanted(steps):
            await self.scheduler._safely(self.scheduler.backend.run(node_id, wanted), f"slow dispatch to {node_id}")

    async def _note(self, notes: list[tuple[str, dict[str, Any], str, dict[str, Any]]]) -> None:
        """The faults in the stories they hit, each caused by its request. A story that cannot be written
        (a full disk) does not keep the steps from their node."""
        at = utcnow()
        for stimulus in dict.fromkeys(n[0] for n in notes):  # one transaction per request that asked
            mine = [(row, fault, event) for cause, row, fault, event in notes if cause == stimulus]
            try:
                with story.caused_by(stimulus):
                    await self.scheduler.db.write(_noting(mine, at))
            except Exception as exc:
                log.warning("the story of faults %s could not be written: %s", [m[1] for m in mine], exc)


def _noting(notes: list[tuple[dict[str, Any], str, dict[str, Any]]], at: datetime) -> Callable[[Any], None]:
    def write(conn: Any) -> None:
        for row, fault, event in notes:
            story.note("fault", row, None, fault, {}, event, at)

    return write
