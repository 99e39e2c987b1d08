"""The agent's bookkeeping, as pure data: which steps run, which results wait for the control plane.

No I/O and no asyncio here; the agent asks the table what to do and then does it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: A StepResult as sent over the wire (StepResult.to_message()).
ResultMessage = dict[str, Any]


@dataclass(slots=True)
class StepTable:
    """Steps by id: running (or waiting to start), being killed, finished and not yet acknowledged."""

    #: step_id -> kind of every step accepted and not yet finished (steps sent ahead wait here too)
    running: dict[str, str] = field(default_factory=dict)
    #: running steps a kill was requested for; their results are dropped
    killing: set[str] = field(default_factory=set)
    #: results in finishing order, until the control plane acknowledges them
    finished: dict[str, ResultMessage] = field(default_factory=dict)
    #: notices that steps sent ahead have started, until acknowledged or superseded by their result
    notices: dict[str, ResultMessage] = field(default_factory=dict)

    def accept(self, steps: Iterable[tuple[str, str]]) -> list[str]:
        """Record (step_id, kind) pairs; returns the ids to start (a repeated id is ignored)."""
        started = []
        for step_id, kind in steps:
            if step_id in self.running or step_id in self.finished or step_id in started:
                continue
            self.running[step_id] = kind
            started.append(step_id)
        return started

    def finish(self, step_id: str, result: ResultMessage) -> bool:
        """A step ended; returns False when its result is dropped (killed on request, or unknown)."""
        if self.running.pop(step_id, None) is None:
            return False
        self.notices.pop(step_id, None)  # the result says it started
        if step_id in self.killing:
            self.killing.discard(step_id)
            return False
        self.finished[step_id] = result
        return True

    def notice(self, step_id: str, message: ResultMessage) -> None:
        """A step sent ahead has started: the control plane learns it with the next report."""
        if step_id in self.running:
            self.notices[step_id] = message

    def forget(self, step_id: str) -> None:
        """A step ended without a result (cancelled, or killed before it started): drop every trace of it."""
        self.running.pop(step_id, None)
        self.notices.pop(step_id, None)
        self.killing.discard(step_id)

    def kill(self, step_ids: Iterable[str]) -> list[str]:
        """Mark steps killed; returns the running ones to stop. Their finished results are dropped."""
        to_stop = []
        for step_id in step_ids:
            self.finished.pop(step_id, None)
            self.notices.pop(step_id, None)
            if step_id in self.running and step_id not in self.killing:
                self.killing.add(step_id)
                to_stop.append(step_id)
        return to_stop

    def ack(self, step_ids: Iterable[str], started: Iterable[str] = ()) -> None:
        """The control plane has these results (and these notices); forget them. Apart, because a step
        whose notice is acknowledged may have finished since: its result must stay."""
        for step_id in step_ids:
            self.finished.pop(step_id, None)
        for step_id in started:
            self.notices.pop(step_id, None)

    def pending(self) -> list[ResultMessage]:
        """Notices, then results in finishing order."""
        return [*self.notices.values(), *self.finished.values()]

    def check(self) -> None:
        """Invariants, for tests."""
        assert self.killing <= self.running.keys(), (self.killing, self.running)
        assert self.notices.keys() <= self.running.keys(), (self.notices, self.running)
        assert not (self.running.keys() & self.finished.keys())
