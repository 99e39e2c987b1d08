"""The launcher: a small process that starts a node's commands, so the big worker never forks.

Why: when a command must run as another account, CPython cannot use vfork and forks the whole
worker instead (~19 ms a command there). This process imports next to nothing, so its fork is
cheap, and it is the parent of the commands it starts: it reports each exit, and when its worker
goes away (the socket closes, even on SIGKILL) it kills every command it started, so no command
outlives its node.

Commands start by the call subprocess.Popen makes (`fork_exec`: the same child, without Popen's
bookkeeping, where this Python's call is known; Popen itself elsewhere).

A node has a root launcher and one launcher per node-wide account (the pool-scope auto-user, each
named user account), started by the worker as root. The root launcher runs admin steps and switches
task-scope accounts in the child; that child must setgroups, setgid and setuid, so CPython forks
(~1.2 ms parent and child CPU) instead of using vfork (~0.2 ms parent). An account's launcher drops
root for good at start-up (groups, gid, uid, umask), so its commands need no switch and are vforked.
What that means: the account's own commands may signal their launcher (killing it only ends that
account's commands, which could already kill each other: they get LauncherLost); they cannot ptrace
it or reach its descriptors, because it makes itself non-dumpable when it drops root.

Run as `python -m kiln.compute.node.launcher FD [ACCOUNT]`, FD being its end of a stream socketpair
with the agent (kiln.compute.node.spawner) and ACCOUNT, for an account's launcher, the JSON of
identity.Account.launch_options(). LIFELINE_ENV, if set, names an inherited pidfd of the server's process:
once that process has ended, nothing is started (its answer is ESRCH). A run the server never hears of would
not be counted, and a restarted server would run the task again; the worker dies with the server, but not
before it may have asked for more. Both ways, a frame is a 4-byte big-endian length and a JSON
object. A spawn request carries the command's stdin, stdout and stderr as descriptors (SCM_RIGHTS)
on its first bytes; the launcher answers {"id", "pid"} or {"id", "errno", "error"}, and later
{"exit": pid, "returncode": n, "usage": {...}} (-N: killed by signal N, as subprocess reports it; usage: its
CPU seconds, peak resident bytes and I/O counters, see reap).

Only the standard library here: this module is what the launcher process imports.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import json
import os
import resource  # noqa: F401  # os.wait4 imports it for its result; after become() it could not
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

HEADER = struct.Struct(">I")
#: The environment variable that gives a launcher the server's pidfd (see open_lifeline).
LIFELINE_ENV = "KILN_LIFELINE_FD"
#: One encoder for every frame (json.dumps with separators would build one per call).
ENCODER = json.JSONEncoder(separators=(",", ":"))
#: stdin, stdout, stderr
STDIO_FDS = 3


def encode(message: dict[str, Any]) -> bytes:
    body = ENCODER.encode(message).encode()
    return HEADER.pack(len(body)) + body


def recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One frame and the descriptors sent with its first bytes; None at end of stream."""
    fds = array.array("i")
    header, ancillary, _, _ = sock.recvmsg(HEADER.size, socket.CMSG_SPACE(STDIO_FDS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not header:
        return None
    rest = recv_exactly(sock, HEADER.size - len(header)) if len(header) < HEADER.size else b""
    if rest is None:
        return None
    (size,) = HEADER.unpack(header + rest)
    body = recv_exactly(sock, size)
    return None if body is None else (json.loads(body), list(fds))


PR_SET_DUMPABLE = 4


def become(account: dict[str, Any]) -> None:
    """Drop root for good (real, effective and saved ids), then stay non-dumpable: the kernel does that
    on the uid change unless fs.suid_dumpable is 1, and the account's commands must not ptrace us.

    Nothing may be imported from here on: the account may not be able to read the standard library."""
    import ctypes  # only here: the root launcher does without

    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups(account["groups"])
    os.setgid(account["gid"])
    os.setuid(account["uid"])
    os.umask(account["umask"])
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def account_options(account: dict[str, Any] | None) -> dict[str, Any]:
    """setgroups, setgid, setuid and umask in the child (a fork of this small process)."""
    if account is None:
        return {}
    return {
        "user": account["uid"],
        "group": account["gid"],
        "extra_groups": account["groups"],
        "umask": account["umask"],
    }


def load_fork_exec() -> Any:
    """The call subprocess.Popen makes to start a child, where its arguments are known: CPython 3.11-3.13
    (23 of them); None elsewhere, and Popen starts the commands."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in ((3, 11), (3, 12), (3, 13)):
        return None
    try:
        from _posixsubprocess import fork_exec
    except ImportError:
        return None
    return fork_exec


FORK_EXEC = load_fork_exec()


def start(request: dict[str, Any], fds: list[int]) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start the command as Popen would (the same child: stdio, a session, the account, signals restored): by
    Popen's own call where this Python's is known, without the bookkeeping around it (~45 of the launcher's
    ~105 us a command); else by Popen, whose object is kept until its command is reaped (a dropped Popen
    reaps it behind the launcher's back)."""
    if FORK_EXEC is None:
        proc = popen(request, fds)
        return proc.pid, proc
    return fork_exec(request, fds), None


def popen(request: dict[str, Any], fds: list[int]) -> subprocess.Popen[bytes]:
    stdin, stdout, stderr = fds
    return subprocess.Popen(
        request["argv"],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=request["cwd"],
        env=request["env"],
        start_new_session=True,
        close_fds=True,
        **account_options(request.get("account")),
    )


def fork_exec(request: dict[str, Any], fds: list[int]) -> int:
    """subprocess.Popen's _execute_child for the one way the launcher calls it: a list argv, an environment,
    a cwd, stdio descriptors, a new session, every other descriptor closed, maybe an account. A command that
    cannot start raises the OSError Popen would (its errno; the child is reaped)."""
    argv, env, account = request["argv"], request["env"], request.get("account")
    program = os.fsencode(argv[0])
    programs = (
        (program,)
        if os.path.dirname(program)
        else tuple(os.path.join(os.fsencode(d), program) for d in os.get_exec_path(env))
    )
    environment = []
    for key, value in env.items():
        name = os.fsencode(key)
        if b"=" in name:
            raise ValueError("illegal environment variable name")
        environment.append(name + b"=" + os.fsencode(value))
    stdin, stdout, stderr = fds
    failure_read, failure_write = os.pipe()
    try:
        if failure_write < 3:  # the child's stdio goes there
            low, failure_write = failure_write, fcntl.fcntl(failure_write, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(low)
        ids = (
            (None, None, None, -1)
            if account is None
            else (account["gid"], list(account["groups"]), account["uid"], account["umask"])
        )
        try:
            pid = FORK_EXEC(
                list(argv), programs, True, (failure_write,), request["cwd"], environment,
                stdin, -1, -1, stdout, -1, stderr, failure_read, failure_write,
                True, True, -1, *ids, None, True,
            )  # fmt: skip
        finally:
            os.close(failure_write)
        failure = read_all(failure_read)
    finally:
        os.close(failure_read)
    if failure:
        os.waitpid(pid, 0)
        raise child_error(failure)
    return pid


def read_all(fd: int) -> bytes:
    """What the child wrote before exec, or b"" once exec closed the pipe (Popen reads at most ~50 kB)."""
    data = b""
    while part := os.read(fd, 50_000):
        data += part
        if len(data) > 50_000:
            break
    return data


def child_error(failure: bytes) -> Exception:
    """_posixsubprocess's report, "OSError:<errno in hex>:<noexec or nothing>", as the error Popen raises
    (its errno is what the worker is told); anything else, as a SubprocessError."""
    name, _, rest = failure.partition(b":")
    code, _, _ = rest.partition(b":")
    try:
        number = int(code, 16)
    except ValueError:
        number = None
    if name == b"OSError" and number:
        return OSError(number, os.strerror(number))
    return subprocess.SubprocessError(failure.decode(errors="replace"))


def open_lifeline(pid: int) -> int | None:
    """A pidfd of pid, the caller's parent (so not a reused pid: checked after opening); None where the kernel
    has no pidfds. Raises ProcessLookupError if the parent is already gone."""
    try:
        fd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise ProcessLookupError(pid) from None
        return None
    os.set_inheritable(fd, False)
    if os.getppid() != pid:
        os.close(fd)
        raise ProcessLookupError(pid)
    return fd


def lifeline_lost(fd: int | None) -> bool:
    """A pidfd turns readable when its process has ended (a zombie has ended too)."""
    if fd is None:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class Launcher:
    """The loop: spawn requests from the socket, exits from SIGCHLD, and everything killed at the end."""

    def __init__(self, sock: socket.socket, lifeline: int | None = None) -> None:
        self.sock = sock
        #: every command started and not yet reaped, with its Popen where Popen started it
        self.children: dict[int, subprocess.Popen[bytes] | None] = {}
        #: the server's pidfd: nothing starts once it has ended
        self.lifeline = lifeline
        #: only root may read an exited command's /proc/<pid>/io (read_io)
        self.reads_io = os.geteuid() == 0
        #: the frames of one turn of the loop (answers and exits), sent together at its end: a short
        #: command's answer and exit often go in one write, and wake the worker once
        self.outgoing: list[bytes] = []

    def serve(self) -> None:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        # Handlers, not SIG_IGN: commands must not inherit ignored signals (exec resets handlers only).
        signal.signal(signal.SIGCHLD, lambda *_: None)  # so the wakeup fd is written
        for stop in (signal.SIGTERM, signal.SIGINT):  # the worker's end of the socket is the only off switch
            signal.signal(stop, lambda *_: None)
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(wake_read, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fd == wake_read:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_read, 4096)
                        self.reap()
                    elif not self.handle_request():
                        return
                self.flush()

    def flush(self) -> None:
        """Send what this turn of the loop has to say, in one write: an answer always before its command's exit."""
        if self.outgoing:
            data, self.outgoing = b"".join(self.outgoing), []
            self.sock.sendall(data)

    def handle_request(self) -> bool:
        received = read_request(self.sock)
        if received is None:
            return False
        request, fds = received
        reply: dict[str, Any] = {"id": request["id"]}
        try:
            if len(fds) != STDIO_FDS:
                raise OSError(0, f"expected {STDIO_FDS} descriptors, got {len(fds)}")
            if lifeline_lost(self.lifeline):  # last, right before the fork: the narrowest window
                raise OSError(errno.ESRCH, "the node has lost its server; nothing more starts")
            pid, proc = start(request, fds)
        except OSError as exc:
            reply.update(errno=exc.errno or 0, error=exc.strerror or str(exc))
        except (ValueError, TypeError, subprocess.SubprocessError) as exc:
            reply.update(errno=0, error=str(exc))
        else:
            self.children[pid] = proc
            reply["pid"] = pid
        finally:
            for fd in fds:
                os.close(fd)
        self.outgoing.append(encode(reply))
        return True

    def reap(self) -> None:
        """Report every command that has exited (sent at the end of the loop's turn)."""
        self.outgoing.extend(encode(report) for report in self.exits())

    def exits(self) -> Iterator[dict[str, Any]]:
        """Each exited command is read (its I/O counters, readable only until it is reaped), then reaped with
        its resource usage: both count what it ran and waited for, the tree below it."""
        while self.children:
            try:
                if self.reads_io:
                    exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    if exited is None:
                        return
                    io = read_io(exited.si_pid)
                    pid, status, rusage = os.wait4(exited.si_pid, 0)
                else:  # one call per exit, not a peek and a /proc read that would fail
                    io = {}
                    pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            returncode = os.waitstatus_to_exitcode(status)
            if (proc := self.children.pop(pid)) is not None:
                proc.returncode = returncode  # so Popen knows it is reaped
            usage = {
                "user_cpu": rusage.ru_utime,
                "kernel_cpu": rusage.ru_stime,
                "max_rss": rusage.ru_maxrss * 1024,  # KiB
                "read_bytes": rusage.ru_inblock * 512,  # Linux counts the storage bytes in 512-byte blocks
                "write_bytes": rusage.ru_oublock * 512,
            }
            yield {"exit": pid, "returncode": returncode, "usage": {**usage, **io}}

    def kill_all(self) -> None:
        """The worker is gone: no command of its node may go on running."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid, proc in self.children.items():
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                if proc is not None:
                    proc.returncode = os.waitstatus_to_exitcode(status)


#: /proc/<pid>/io counters and the names a usage report gives them: read/write system calls, and bytes that
#: reached (or came from) storage
IO_NAMES = {"syscr": "read_ops", "syscw": "write_ops", "read_bytes": "read_bytes", "write_bytes": "write_bytes"}


def read_io(pid: int) -> dict[str, int]:
    """An exited, unreaped process's I/O counters, its reaped children's included. None where the kernel has no
    I/O accounting or hides them: an exited process's /proc files belong to root, so only the root launcher
    reads them (an account's launcher reports the bytes of its commands' rusage, but not their operations)."""
    try:
        with open(f"/proc/{pid}/io") as counters:
            pairs = (line.split(":") for line in counters)
            return {IO_NAMES[name]: int(value) for name, value in pairs if name in IO_NAMES}
    except OSError:
        return {}


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    sock.setblocking(True)
    lifeline = os.environ.get(LIFELINE_ENV)
    if len(argv) > 2:
        become(json.loads(argv[2]))
    launcher = Launcher(sock, int(lifeline) if lifeline else None)
    try:
        launcher.serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the worker is gone
    finally:
        launcher.kill_all()


if __name__ == "__main__":
    main(sys.argv)
