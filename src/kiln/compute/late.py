"""A compute backend started beside the opening port instead of before it.

Importing Dask's `distributed` and booting its scheduler was about a quarter of a server's start, though
nothing a client asks before a node is up needs them. LateBackend stands in for the backend: start()
imports its modules on a thread (the loop goes on recovering the store and opening the port meanwhile),
then builds and starts it on the loop. Until then a node added waits, in order, and starts with it; no node
is up; every other call waits for the start and is then the backend's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from kiln.compute.protocol import NodeUnavailable

if TYPE_CHECKING:
    from kiln.compute.protocol import (
        ComputeBackend,
        FileEntry,
        NodeDownCallback,
        NodeFailedCallback,
        NodeUpCallback,
        ResultsCallback,
        Step,
        Withdrawal,
    )

logger = logging.getLogger(__name__)


class LateBackend:
    """ComputeBackend whose backend is imported (`prepare`, on a thread), built (`build`) and started behind
    start(), which returns at once."""

    #: set before start() (the scheduler sets them as it is made); handed to the backend when it is built
    on_results: ResultsCallback
    on_node_up: NodeUpCallback
    on_node_down: NodeDownCallback
    on_node_failed: NodeFailedCallback

    def __init__(
        self,
        build: Callable[[], ComputeBackend],
        *,
        prepare: Callable[[], object],
        node_files_here: bool,
        on_started: Callable[[], None],
        on_failed: Callable[[], None],
    ) -> None:
        self._build = build
        self._prepare = prepare
        self._on_started = on_started
        self._on_failed = on_failed
        self.node_files_here = node_files_here
        #: nodes added before the backend runs (id: root), in the order added
        self._waiting: dict[str, str] = {}
        self._backend: ComputeBackend | None = None
        self._starting: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        """Begin the start and return: the imports, then the backend, then the nodes added meanwhile (and those
        added while it takes them). on_started follows, or on_failed (calls waiting for the start then raise
        NodeUnavailable)."""
        self._starting = asyncio.create_task(self._start(), name="kiln-backend-start")

    async def _start(self) -> None:
        backend: ComputeBackend | None = None
        try:
            await asyncio.to_thread(self._prepare)
            backend = self._build()
            backend.on_results, backend.on_node_up = self.on_results, self.on_node_up
            backend.on_node_down, backend.on_node_failed = self.on_node_down, self.on_node_failed
            await backend.start()
            while self._waiting:
                node_id = next(iter(self._waiting))
                await backend.add_node(node_id, self._waiting.pop(node_id))
            self._backend = backend
        except Exception:
            logger.exception("the compute backend failed to start")
            if backend is not None:
                with contextlib.suppress(Exception):  # what it started of itself
                    await backend.close()
            self._started.set()
            self._on_failed()
            return
        self._started.set()
        self._on_started()

    async def started(self) -> ComputeBackend:
        """The running backend, once its start has ended."""
        await self._started.wait()
        if self._backend is None:
            raise NodeUnavailable("no node can be reached: the compute backend failed to start (see the log)")
        return self._backend

    async def close(self) -> None:
        """Close the backend, once a start in progress has ended (it is not cut off midway)."""
        if self._starting is None:
            return
        await self._starting
        if self._backend is not None:
            await self._backend.close()

    async def add_node(self, node_id: str, node_root: str) -> None:
        if self._backend is not None:
            await self._backend.add_node(node_id, node_root)
            return
        if node_id in self._waiting:
            raise ValueError(f"node {node_id!r} exists already")
        self._waiting[node_id] = node_root

    def is_up(self, node_id: str) -> bool:
        return self._backend is not None and self._backend.is_up(node_id)

    def node_address(self, node_id: str) -> str | None:
        return self._backend.node_address(node_id) if self._backend is not None else None

    async def remove_node(self, node_id: str) -> None:
        await (await self.started()).remove_node(node_id)

    async def restart_node(self, node_id: str, *, wipe: bool = False) -> None:
        await (await self.started()).restart_node(node_id, wipe=wipe)

    async def measure_usage(self, roots: Mapping[str, str]) -> dict[str, dict[str, float]]:
        return await (await self.started()).measure_usage(roots)

    async def run(self, node_id: str, steps: list[Step]) -> None:
        await (await self.started()).run(node_id, steps)

    async def withdraw(self, node_id: str, step_ids: list[str]) -> Withdrawal:
        return await (await self.started()).withdraw(node_id, step_ids)

    async def kill(self, node_id: str, step_ids: list[str]) -> None:
        await (await self.started()).kill(node_id, step_ids)

    async def lose(self, node_id: str) -> bool:
        return await (await self.started()).lose(node_id)

    async def kill_processes(self, node_id: str, task_dir: str) -> int:
        return await (await self.started()).kill_processes(node_id, task_dir)

    async def list_files(self, node_id: str, path: str, recursive: bool) -> list[FileEntry]:
        return await (await self.started()).list_files(node_id, path, recursive)

    async def stat_file(self, node_id: str, path: str) -> FileEntry:
        return await (await self.started()).stat_file(node_id, path)

    async def read_file(self, node_id: str, path: str, start: int = 0, end: int | None = None) -> bytes:
        return await (await self.started()).read_file(node_id, path, start, end)

    async def delete_file(self, node_id: str, path: str, recursive: bool) -> None:
        await (await self.started()).delete_file(node_id, path, recursive)
