"""The agent's side of its launchers: start each on first use, ask it to start commands, await their exits.

The node's root launcher starts the worker's own commands and those of task-scope accounts; each
node-wide account gets a launcher that runs as it (see launcher.py for why). A command started this
way is a LaunchedProcess: a pid, and an exit its launcher reports. If a launcher dies, every command
it was waiting for ends in LauncherLost (their status is unknowable) and the next spawn for its
account starts a new one.
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

import orjson

from kiln.compute.node import launcher
from kiln.compute.node.identity import Account
from kiln.compute.node.launcher import HEADER, LIFELINE_ENV

#: Which launcher: None for the root one, else the (uid, gid) it runs as (groups and umask are the same
#: for every account).
LaunchKey = tuple[int, int] | None


class LauncherLost(Exception):
    """The launcher ended while a command of it was still running."""


class LaunchedProcess:
    """A command the launcher started; the subset of asyncio.subprocess.Process that process.py uses."""

    def __init__(self, pid: int, exited: asyncio.Future[int], usage: dict[str, float] | None = None) -> None:
        self.pid = pid
        #: its returncode when the launcher reports its exit (LauncherLost if the launcher ends first)
        self.exited = exited
        self.returncode: int | None = None
        #: what its tree used (launcher.Launcher.reap), filled in when its exit is reported
        self.usage: dict[str, float] = {} if usage is None else usage

    async def wait(self) -> int:
        self.returncode = await asyncio.shield(self.exited)
        return self.returncode


def launch_key(account: Account | None) -> LaunchKey:
    """A node-wide account's commands come from its own launcher; everyone else's from the root one."""
    return (account.uid, account.gid) if account is not None and account.node_wide else None


class Spawner:
    """The node's launchers, by LaunchKey."""

    def __init__(self) -> None:
        self._launchers: dict[LaunchKey, LauncherHandle] = {}
        self._starting = asyncio.Lock()
        #: the server's pidfd (launcher.open_lifeline), handed to each launcher started after it is set: they
        #: start nothing once the server has ended
        self.lifeline: int | None = None

    async def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        stdio: tuple[int, int, int],
        account: Account | None = None,
    ) -> LaunchedProcess:
        """Start argv in a session of its own with stdio as its 0, 1, 2; OSError if it cannot start."""
        own = account if account is not None and account.node_wide else None
        launcher = await self._launcher(own)
        return await launcher.spawn(argv, env=env, cwd=cwd, stdio=stdio, account=None if own else account)

    def launcher_pid(self, account: Account | None = None) -> int | None:
        """The pid of the launcher that starts account's commands, if it runs (diagnostics and tests)."""
        launcher = self._launchers.get(launch_key(account))
        return launcher.pid if launcher is not None and launcher.running else None

    async def close(self) -> None:
        """Every launcher kills what it started and exits."""
        launchers = list(self._launchers.values())
        self._launchers.clear()
        await asyncio.gather(*(launcher.close() for launcher in launchers))

    async def _launcher(self, account: Account | None) -> LauncherHandle:
        """account's own launcher (None: the root one), started if it is not running."""
        key = launch_key(account)
        launcher = self._launchers.get(key)
        if launcher is not None and launcher.running:
            return launcher
        async with self._starting:
            launcher = self._launchers.get(key)
            if launcher is None or not launcher.running:
                if launcher is not None:
                    await launcher.close()  # it died: release its socket, reap it
                options = None if account is None else account.launch_options()
                launcher = self._launchers[key] = await LauncherHandle.start(options, self.lifeline)
            return launcher


class LauncherHandle:
    """One launcher process and its socket: requests go out, answers and exits come back (read by a
    reader callback that stays registered, not a task that waits for each chunk)."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self._proc = proc
        self._sock = sock
        self._ids = itertools.count()
        #: requests not answered yet; a cancelled one's command is killed when its pid comes
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        #: by pid, the usage each command's exit report fills in
        self._usages: dict[int, dict[str, float]] = {}
        self._sending = asyncio.Lock()
        self._buffer = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock, self._on_readable)
        self.running = True

    @classmethod
    async def start(cls, account: dict[str, Any] | None, lifeline: int | None = None) -> LauncherHandle:
        """account: Account.launch_options() of the account it is to run as (None: it stays root); lifeline:
        the server's pidfd, if the launcher is to start nothing once the server has ended."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        args = [] if account is None else [json.dumps(account)]
        inherited = [theirs.fileno()] if lifeline is None else [theirs.fileno(), lifeline]
        env = None if lifeline is None else {**os.environ, LIFELINE_ENV: str(lifeline)}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "kiln.compute.node.launcher",
                str(theirs.fileno()),
                *args,
                pass_fds=inherited,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        return cls(proc, ours)

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def spawn(
        self, argv: list[str], *, env: dict[str, str], cwd: str, stdio: tuple[int, int, int], account: Account | None
    ) -> LaunchedProcess:
        request_id = next(self._ids)
        reply = self._replies[request_id] = self._loop.create_future()
        request = {
            "id": request_id,
            "argv": argv,
            "env": env,
            "cwd": cwd,
            "account": None if account is None else account.launch_options(),
        }
        try:
            await self._send(encode(request), stdio)
            answer = await reply
        except asyncio.CancelledError:  # nothing may outlive the cancel; the launcher may be starting it now
            if not reply.cancel() and not reply.cancelled() and reply.exception() is None:
                _kill_started(reply.result())  # answered just before the cancel; else _dispatch kills it
            raise
        if "pid" not in answer:
            raise OSError(answer.get("errno") or None, answer.get("error", "the launcher could not start it"))
        return LaunchedProcess(answer["pid"], answer["exited"], answer["usage"])

    async def close(self) -> None:
        """Closing the socket is the launcher's signal to kill what it started and exit."""
        self._stop_reading()
        self._sock.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 10)

    async def _send(self, data: bytes, fds: tuple[int, ...]) -> None:
        """The descriptors travel with the frame's first bytes; frames never interleave."""
        loop = asyncio.get_running_loop()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        async with self._sending:
            while True:
                try:
                    sent = self._sock.sendmsg([data], ancillary)
                    break
                except BlockingIOError:
                    await _writable(loop, self._sock)
            if sent < len(data):
                await loop.sock_sendall(self._sock, data[sent:])

    def _on_readable(self) -> None:
        try:
            chunk = self._sock.recv(65536)
            if not chunk:
                self._stop_reading()
                return
            self._buffer += chunk
            while len(self._buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buffer)
                if len(self._buffer) < HEADER.size + size:
                    break
                self._dispatch(decode(self._buffer[HEADER.size : HEADER.size + size]))
                self._buffer = self._buffer[HEADER.size + size :]
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ValueError):  # the socket failed, or the launcher is not itself
            self._stop_reading()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            exited = self._exits.pop(message["exit"], None)
            self._usages.pop(message["exit"], {}).update(message.get("usage") or {})
            if exited is not None and not exited.done():
                exited.set_result(message["returncode"])
            return
        if "pid" in message:  # made now, not when the request's coroutine resumes: its exit may come first
            message["exited"] = self._exits[message["pid"]] = self._loop.create_future()
            message["usage"] = self._usages[message["pid"]] = {}
        reply = self._replies.pop(message["id"], None)
        if reply is not None and reply.cancelled():
            _kill_started(message)
        elif reply is not None and not reply.done():
            reply.set_result(message)

    def _stop_reading(self) -> None:
        """The launcher is gone (or going): nothing it was asked or was waiting for will be answered."""
        if not self.running:
            return
        self.running = False
        self._loop.remove_reader(self._sock)
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(OSError("the node's launcher stopped"))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_exception(LauncherLost())
        self._replies.clear()
        self._exits.clear()
        self._usages.clear()


def encode(message: dict[str, Any]) -> bytes:
    """A frame as launcher.encode makes it (the launcher reads it with the standard library's json), in a
    fraction of its time: a spawn request carries the command's whole environment. A string orjson refuses
    (a lone surrogate) goes as json escapes it, and the launcher answers as it would."""
    try:
        body = orjson.dumps(message)
    except orjson.JSONEncodeError:
        return launcher.encode(message)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    """A frame's body as the launcher wrote it (json); orjson reads it in a fraction of the time, and json
    whatever orjson refuses (an escaped lone surrogate), so no answer is lost to the decoder."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _kill_started(answer: dict[str, Any]) -> None:
    """For a spawn cancelled while the launcher was starting the command: nothing may outlive the cancel."""
    if "pid" in answer:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(answer["pid"], signal.SIGKILL)


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()

    def set_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock, set_ready)
    try:
        await ready
    finally:
        loop.remove_writer(sock)
