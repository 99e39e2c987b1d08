"""The per-node agent: one node's steps, results and files, inside its host's Dask worker (kiln.compute.node.host,
which serves many nodes and answers the control plane over Dask's comms for them).

distributed calls a handler with the message's keys as keyword arguments (and the comm first only if the
first parameter is named `comm`; none of these want it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kiln.compute.node import files, process, reaper, runner
from kiln.compute.node.failures import SERVER_ERROR, failure_info
from kiln.compute.node.resource_files import http_client
from kiln.compute.node.spawner import Spawner
from kiln.compute.node.table import StepTable
from kiln.compute.protocol import Step, StepResult

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

#: How long a kill waits for killed steps to end before cancelling them outright.
KILL_GRACE = 5.0
#: How long a finished step's result may wait for the steps started around it to finish too, so that one
#: report (and one store transaction on the server) carries several results: short tasks then cost the
#: control plane a fraction of a round trip each. A slot freed early stays empty at most this long.
REPORT_LINGER = 0.02
#: How long results may wait while the steps sent ahead queued on the node hold another round for its running
#: steps: no slot can go empty before the control plane answers, so the report waits for more results and one
#: transaction on the server carries them all (~30 per node for trivial tasks, against ~5). A task's end reaches
#: the store this much later at most.
AHEAD_LINGER = 0.1
#: Errors of file operations reported to the control plane by name, not as crashes.
FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError)


class NodeAgent:
    """Starts steps as asyncio tasks and keeps their results until the control plane has them."""

    def __init__(
        self, node_root: str | None = None, lifeline: int | None = None, on_result: Callable[[], None] | None = None
    ) -> None:
        self.table = StepTable()
        #: the node's root (None: the roots its steps name, in tests)
        self.root = node_root
        self.node_roots: set[str] = {node_root} if node_root else set()
        #: called whenever a result comes (the host's long-poll waits on it)
        self._on_result = on_result
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: loop time each running step started at (REPORT_LINGER waits only for recent ones)
        self._started: dict[str, float] = {}
        #: loop time the oldest unreported result came (None: there is none)
        self._first_result_at: float | None = None
        #: steps sent ahead, in order, waiting for a slot that a finishing step frees
        self._ahead: deque[Step] = deque()
        #: slots freed by steps whose results the control plane has not been sent yet: a step sent ahead
        #: may take them, since its notice then reaches the control plane with (or before) those results
        self._spare = 0
        self._kills: dict[str, process.KillSwitch] = {}
        #: process groups that finished keep_background steps left running, until their step id is killed
        self._kept_groups: dict[str, int] = {}
        #: resolved when a result comes; the long-polls wait on it (None: nobody has waited since)
        self._result_ready: asyncio.Future[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.spawner = Spawner()
        #: the server's pidfd (the host's, not closed here): the node's launchers start nothing once it ended
        self.spawner.lifeline = lifeline
        self._closed = False

    # -- steps -----------------------------------------------------------------------------

    async def run(self, steps: list[dict[str, Any]]) -> list[str]:
        """Start the steps (those sent ahead: queue them) and return at once; returns the ids accepted
        (repeats are ignored)."""
        parsed = {s.step_id: s for s in map(Step.from_message, steps)}
        accepted = self.table.accept((s.step_id, s.kind) for s in parsed.values())
        for step_id in accepted:
            step = parsed[step_id]
            if step.ahead:
                self._ahead.append(step)
            else:
                self._start(step)
        self._start_ahead()
        return accepted

    def _start_ahead(self) -> None:
        """Start the steps sent ahead that fit the spare slots, in order, each with a notice."""
        while self._ahead and self._ahead[0].slots <= self._spare:
            step = self._ahead.popleft()
            self._spare -= step.slots
            self._start(step)
            self.table.notice(step.step_id, StepResult(step.step_id, time.time(), 0.0, None, running=True).to_message())

    def _start(self, step: Step) -> None:
        self.node_roots.add(step.node_root)
        kill = self._kills[step.step_id] = process.KillSwitch()
        self._started[step.step_id] = asyncio.get_running_loop().time()
        self._tasks[step.step_id] = asyncio.create_task(self._run_one(step, kill), name=f"kiln-step-{step.step_id}")

    async def _run_one(self, step: Step, kill: process.KillSwitch) -> None:
        message = None
        try:
            message = (
                await runner.run_step(
                    step,
                    spawner=self.spawner,
                    kill=kill,
                    http=self.http_client,
                    keep_group=self._kept_groups.__setitem__,
                )
            ).to_message()
        except Exception as exc:  # a bug must still end the step, never leave it running forever
            logger.exception("step %s crashed", step.step_id)
            message = StepResult(
                step.step_id,
                time.time(),
                time.time(),
                None,
                failure=failure_info(SERVER_ERROR, "NodeAgentError", f"The node agent failed: {exc!r}"),
            ).to_message()
        finally:
            self._tasks.pop(step.step_id, None)
            self._kills.pop(step.step_id, None)
            self._started.pop(step.step_id, None)
            if message is None:
                self.table.forget(step.step_id)
            elif self.table.finish(step.step_id, message):
                self._result_came()
                self._spare += step.slots  # a killed step's slots are the control plane's to give: not spare
                self._start_ahead()

    def _result_came(self) -> None:
        if self._first_result_at is None:
            self._first_result_at = asyncio.get_running_loop().time()
        if self._result_ready is not None:
            resolve(self._result_ready)
        if self._on_result is not None:
            self._on_result()

    def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = http_client()
        return self._http

    async def results(
        self,
        timeout: float,
        ack: list[str] | None = None,
        run: list[dict[str, Any]] | None = None,
        ack_started: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Long-poll: forget the acknowledged results and notices, start the steps sent along (as `run`),
        wait up to timeout for a result (and then up to REPORT_LINGER for its neighbours), return all
        unacknowledged ones."""
        await self.take(ack, ack_started, run)
        if not self.table.finished:
            await asyncio.wait([self._next_result()], timeout=timeout)
        await self.linger()
        return self.collect()

    async def take(
        self, ack: list[str] | None, ack_started: list[str] | None, run: list[dict[str, Any]] | None
    ) -> None:
        """The first half of a long-poll: forget what the control plane has, start what it sent along."""
        self.table.ack(ack or (), ack_started or ())
        if not self.table.finished:
            self._first_result_at = None
        if run:
            await self.run(run)

    def collect(self) -> list[dict[str, Any]]:
        """The last half of a long-poll: every unacknowledged result and notice."""
        self._spare = 0  # the results returned free their slots on the control plane's side now
        return self.table.pending()

    async def linger(self) -> None:
        """Hold the results while a step started less than REPORT_LINGER ago, and before the first of them
        came, still runs; at most REPORT_LINGER after that first result. A long step is not waited for (it
        started long ago), nor a step started since (sent ahead into a freed slot: its notice goes now); and
        not at all while a freed slot waits empty (no step sent ahead took it): the control plane fills it.
        While the steps sent ahead cover another round (`_round_ahead`), they are held up to AHEAD_LINGER."""
        loop = asyncio.get_running_loop()
        while (first := self._first_result_at) is not None and self.table.finished:
            now = loop.time()
            covered = self._round_ahead()
            left = first + (AHEAD_LINGER if covered else REPORT_LINGER) - now
            if left <= 0 or self._spare or not (covered or self._neighbours_run(first, now)):
                return
            await asyncio.wait([self._next_result()], timeout=left)

    def _round_ahead(self) -> bool:
        """As many steps sent ahead wait as steps run: each slot that frees is taken again at once, and the
        slots stay busy until the control plane's answer to a report brings more."""
        return bool(self._started) and len(self._ahead) >= len(self._started)

    def _neighbours_run(self, first: float, now: float) -> bool:
        """A step that started less than REPORT_LINGER ago, and before the first result came, still runs."""
        return any(now - started < REPORT_LINGER and started <= first for started in self._started.values())

    def _next_result(self) -> asyncio.Future[None]:
        """A future (no task) that resolves when a result comes; shared by concurrent long-polls."""
        if self._result_ready is None or self._result_ready.done():
            self._result_ready = asyncio.get_running_loop().create_future()
        return self._result_ready

    def withdraw(self, step_ids: list[str]) -> dict[str, list[str]]:
        """Take back steps sent ahead that have not started: they never will. Unlike a kill, a step that has
        started (or even ended) is left alone, its notice and result still to come: the control plane moves
        only the steps named `withdrawn` to another node, so that no command runs twice."""
        asked = set(step_ids)
        withdrawn = [step.step_id for step in self._ahead if step.step_id in asked]
        if withdrawn:
            self._ahead = deque(step for step in self._ahead if step.step_id not in asked)
            for step_id in withdrawn:
                self.table.forget(step_id)
        started = [i for i in step_ids if i in self.table.running or i in self.table.finished]
        return {"withdrawn": withdrawn, "started": started}

    async def kill(self, step_ids: list[str]) -> list[str]:
        """Kill the steps' process groups and wait (bounded) until they ended; their results are dropped.
        Steps sent ahead that have not started never will."""
        self.table.kill(step_ids)
        unstarted = {step.step_id for step in self._ahead} & set(step_ids)
        if unstarted:
            self._ahead = deque(step for step in self._ahead if step.step_id not in unstarted)
            for step_id in unstarted:
                self.table.forget(step_id)
        for step_id in step_ids:  # what a finished keep_background step left running
            if (pgid := self._kept_groups.pop(step_id, None)) is not None:
                process.kill_group(pgid)
        killed = [i for i in dict.fromkeys(step_ids) if i in self._tasks]
        for step_id in killed:
            self._kills[step_id].set()
        await self._finish([self._tasks[i] for i in killed], KILL_GRACE)
        return killed

    @staticmethod
    async def _finish(tasks: list[asyncio.Task[None]], grace: float) -> None:
        """Wait up to grace for tasks, then cancel the rest (cancelling kills their groups) and wait for that."""
        if not tasks:
            return
        pending = set(tasks)
        if grace > 0:
            _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=KILL_GRACE)

    async def close(self) -> None:
        """Kill everything this node started; idempotent (called from the worker's close)."""
        if self._closed:
            return
        self._closed = True
        await self._finish(list(self._tasks.values()), 0)
        await self.spawner.close()
        for root in self.node_roots:
            reaper.kill_node_processes(root)
        if self._http is not None:
            await self._http.aclose()

    # -- files -----------------------------------------------------------------------------

    async def list_files(self, node_root: str, path: str, recursive: bool = False) -> dict[str, Any]:
        return await _file_op(lambda: files.as_message(files.list_files(node_root, path, recursive)))

    async def stat_file(self, node_root: str, path: str) -> dict[str, Any]:
        return await _file_op(lambda: files.as_message(files.stat_file(node_root, path)))

    async def read_file(self, node_root: str, path: str, start: int = 0, end: int | None = None) -> dict[str, Any]:
        return await _file_op(lambda: files.read_file(node_root, path, start, end))

    async def delete_file(self, node_root: str, path: str, recursive: bool = False) -> dict[str, Any]:
        return await _file_op(lambda: files.delete_file(node_root, path, recursive))


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _file_op(op: Callable[[], Any]) -> dict[str, Any]:
    """Run off the event loop; expected errors travel as {"error": name, "message"}, results as {"ok": value}."""
    try:
        return {"ok": await asyncio.to_thread(op)}
    except FILE_ERRORS as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
