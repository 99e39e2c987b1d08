"""The agent's side of its launcher: start it on first use, ask it to start commands, await their exits.

A command started this way is a LaunchedProcess: a pid, and an exit the launcher reports. If the
launcher itself dies, every command it was waiting for ends in LauncherLost (their status is
unknowable) and the next spawn starts a new launcher.
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
from typing import Any

from kiln.compute.node.identity import Account
from kiln.compute.node.launcher import HEADER, encode


class LauncherLost(Exception):
    """The launcher ended while a command of it was still running."""


class LaunchedProcess:
    """A command the launcher started; the subset of asyncio.subprocess.Process that process.py uses."""

    def __init__(self, pid: int, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self._exited = exited
        self.returncode: int | None = None

    async def wait(self) -> int:
        self.returncode = await asyncio.shield(self._exited)
        return self.returncode


class Spawner:
    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._starting = asyncio.Lock()
        self._sending = asyncio.Lock()

    async def spawn(self, argv: list[str], *, env: dict[str, str], cwd: str, stdio: tuple[int, int, int],
                    account: Account | None = None) -> LaunchedProcess:
        """Start argv in a session of its own with stdio as its 0, 1, 2; OSError if it cannot start."""
        sock = await self._ensure_started()
        request_id = next(self._ids)
        reply = self._replies[request_id] = asyncio.get_running_loop().create_future()
        reply.add_done_callback(lambda _: self._replies.pop(request_id, None))
        request = {"id": request_id, "argv": argv, "env": env, "cwd": cwd,
                   "account": None if account is None else account.launch_options()}
        await self._send(sock, encode(request), stdio)
        try:
            answer = await asyncio.shield(reply)
        except asyncio.CancelledError:
            reply.add_done_callback(_kill_if_started)  # the launcher may be starting it right now
            raise
        if "pid" not in answer:
            raise OSError(answer.get("errno") or None, answer.get("error", "the launcher could not start it"))
        return LaunchedProcess(answer["pid"], answer["exited"])

    async def close(self) -> None:
        """Closing the socket is the launcher's signal to kill what it started and exit."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 10)
            self._proc = None
        self._lost()

    # -- the launcher process and its socket -------------------------------------------------------

    async def _ensure_started(self) -> socket.socket:
        async with self._starting:
            if self._sock is None or self._reader is None or self._reader.done():
                await self._start()
            assert self._sock is not None
            return self._sock

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kiln.compute.node.launcher", str(theirs.fileno()),
                pass_fds=[theirs.fileno()], stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._reader = asyncio.create_task(self._read(ours), name="kiln-launcher-reader")

    async def _send(self, sock: socket.socket, data: bytes, fds: tuple[int, ...]) -> None:
        """The descriptors travel with the frame's first bytes; frames never interleave."""
        loop = asyncio.get_running_loop()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        async with self._sending:
            while True:
                try:
                    sent = sock.sendmsg([data], ancillary)
                    break
                except BlockingIOError:
                    await _writable(loop, sock)
            if sent < len(data):
                await loop.sock_sendall(sock, data[sent:])

    async def _read(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buffer = b""
        try:
            while True:
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    return
                buffer += chunk
                while len(buffer) >= HEADER.size:
                    (size,) = HEADER.unpack_from(buffer)
                    if len(buffer) < HEADER.size + size:
                        break
                    self._dispatch(json.loads(buffer[HEADER.size:HEADER.size + size]))
                    buffer = buffer[HEADER.size + size:]
        except OSError:
            return
        finally:
            self._lost()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            exited = self._exits.pop(message["exit"], None)
            if exited is not None and not exited.done():
                exited.set_result(message["returncode"])
            return
        if "pid" in message:  # made now, not when the request's coroutine resumes: its exit may come first
            message["exited"] = self._exits[message["pid"]] = asyncio.get_running_loop().create_future()
        reply = self._replies.get(message["id"])
        if reply is not None and not reply.done():
            reply.set_result(message)

    def _lost(self) -> None:
        """The launcher is gone: nothing it was asked or was waiting for will be answered."""
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(OSError("the node's launcher stopped"))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_exception(LauncherLost())
        self._replies.clear()
        self._exits.clear()


def _kill_if_started(reply: asyncio.Future[dict[str, Any]]) -> None:
    """For a spawn cancelled while the launcher was starting the command: nothing may outlive the cancel."""
    if reply.cancelled() or reply.exception() is not None or "pid" not in reply.result():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(reply.result()["pid"], signal.SIGKILL)


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_writer(sock, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(sock)
