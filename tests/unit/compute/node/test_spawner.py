"""The launchers start the node's commands and report their exits; when their worker goes, so do they."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.compute.node import identity, launcher
from kiln.compute.node.spawner import LauncherLost, Spawner, decode

from ..helpers import alive, eventually

ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def stdio(tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """stdin /dev/null; stdout and stderr appended to tmp_path/out."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    yield null, out, out
    os.close(null)
    os.close(out)


async def test_exit_codes_and_output_come_back(spawner: Spawner, tmp_path: Path, stdio: tuple[int, int, int]) -> None:
    procs = [
        await spawner.spawn(["sh", "-c", f"echo {n}; exit {n}"], env=ENV, cwd=str(tmp_path), stdio=stdio)
        for n in range(3)
    ]
    assert [await p.wait() for p in procs] == [0, 1, 2]
    assert sorted((tmp_path / "out").read_text().split()) == ["0", "1", "2"]
    assert procs[0].returncode == 0


async def test_a_command_that_cannot_start_is_an_oserror(
    spawner: Spawner, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    with pytest.raises(OSError):
        await spawner.spawn(["/no/such/program"], env=ENV, cwd=str(tmp_path), stdio=stdio)
    with pytest.raises(OSError):
        await spawner.spawn(["/bin/true"], env=ENV, cwd=str(tmp_path / "missing"), stdio=stdio)
    assert await (await spawner.spawn(["/bin/true"], env=ENV, cwd=str(tmp_path), stdio=stdio)).wait() == 0


async def test_any_text_reaches_the_command_or_is_refused_as_an_oserror(
    spawner: Spawner, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    """Requests are encoded with orjson and read with the standard library's json: whatever text a task's
    command line or environment holds arrives as it was, and a string no environment can hold (a lone
    surrogate) fails the start as it would have with json alone, not the worker."""
    text = 'ünï 中文 \U0001f525 \\ "q"'
    proc = await spawner.spawn(
        ["sh", "-c", 'printf "%s|%s" "$1" "$X"', "sh", text], env={**ENV, "X": text}, cwd=str(tmp_path), stdio=stdio
    )
    assert await proc.wait() == 0
    assert (tmp_path / "out").read_text() == f"{text}|{text}"
    with pytest.raises(OSError):
        await spawner.spawn(["/bin/true"], env={**ENV, "X": "\ud800"}, cwd=str(tmp_path), stdio=stdio)
    assert await (await spawner.spawn(["/bin/true"], env=ENV, cwd=str(tmp_path), stdio=stdio)).wait() == 0


def test_every_frame_the_launcher_writes_is_read() -> None:
    """orjson refuses an escaped lone surrogate that json writes and reads: such an answer is still read."""
    for answer in ({"id": 1, "errno": 2, "error": "x\udcffy"}, {"exit": 7, "returncode": -9, "usage": {"max_rss": 1}}):
        frame = launcher.encode(answer)
        assert decode(frame[launcher.HEADER.size :]) == answer


async def test_commands_run_in_sessions_of_their_own(
    spawner: Spawner, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    proc = await spawner.spawn(["sleep", "30"], env=ENV, cwd=str(tmp_path), stdio=stdio)
    assert os.getsid(proc.pid) == proc.pid
    os.kill(proc.pid, signal.SIGTERM)
    assert await proc.wait() == -signal.SIGTERM  # not inherited as ignored from the launcher


async def test_a_command_gets_only_its_stdio_and_no_ignored_signals(
    spawner: Spawner, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    await assert_clean_start(spawner, tmp_path, tmp_path / "out", stdio, None)


async def assert_clean_start(
    spawner: Spawner, cwd: Path, out: Path, stdio: tuple[int, int, int], account: identity.Account | None
) -> None:
    """No descriptor but stdio, and no signal ignored: not SIGPIPE and SIGXFSZ, which Python ignores,
    nor the C library's own (glibc's posix_spawn would leave 32 and 33 ignored)."""
    proc = await spawner.spawn(
        ["/bin/sh", "-c", "ls /proc/$$/fd; grep SigIgn /proc/$$/status"],
        env=ENV,
        cwd=str(cwd),
        stdio=stdio,
        account=account,
    )
    assert await proc.wait() == 0
    *fds, ignored = out.read_text().splitlines()
    assert (sorted(fds), ignored) == (["0", "1", "2"], "SigIgn:\t0000000000000000")


async def test_closing_kills_every_command_the_launcher_started(tmp_path: Path, stdio: tuple[int, int, int]) -> None:
    spawner = Spawner()
    procs = [await spawner.spawn(["sleep", "30"], env=ENV, cwd=str(tmp_path), stdio=stdio) for _ in range(2)]
    await spawner.close()  # as when the worker dies: its end of the socket closes
    await eventually(lambda: not any(alive(p.pid) for p in procs), what="the commands to die")


async def test_a_dead_launcher_loses_its_commands_and_is_replaced(
    spawner: Spawner, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    proc = await spawner.spawn(["sleep", "30"], env=ENV, cwd=str(tmp_path), stdio=stdio)
    launcher = spawner.launcher_pid()
    assert launcher is not None
    os.kill(launcher, signal.SIGKILL)
    with pytest.raises(LauncherLost):
        await proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)
    again = await spawner.spawn(["/bin/true"], env=ENV, cwd=str(tmp_path), stdio=stdio)
    assert await again.wait() == 0


async def test_a_spawn_cancelled_before_the_launcher_answers_leaves_nothing_running(
    spawner: Spawner, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    assert await (await spawner.spawn(["/bin/true"], env=ENV, cwd=str(tmp_path), stdio=stdio)).wait() == 0
    marker = f"{os.getpid()}.{id(tmp_path) % 10_000}"  # a sleep of our own: found by its argv
    starting = asyncio.create_task(spawner.spawn(["sleep", f"3000.{marker}"], env=ENV, cwd=str(tmp_path), stdio=stdio))
    await asyncio.sleep(0)  # the request is sent (the launcher is up); its answer cannot have been read yet
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting

    def ours_running() -> bool:
        argv = f"sleep\0003000.{marker}\0".encode()
        return any(
            alive(int(p.name)) and (p / "cmdline").read_bytes() == argv
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and (p / "cmdline").exists()
        )

    await asyncio.sleep(0.5)  # long enough for the launcher to have started it, had nobody killed it
    await eventually(lambda: not ours_running(), what="the command to be gone")


# -- launchers of node-wide accounts (need a root worker) -----------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="launchers of accounts need a root worker (setuid/setgid)")

NODE_GID = identity.UID_FIRST + 4141  #: the node's group
POOL = identity.Account(identity.UID_FIRST + 4242, identity.UID_FIRST + 4242, node_wide=True, groups=(NODE_GID,))
NAMED = identity.Account(
    identity.UID_FIRST + 4343, identity.UID_FIRST + 4343, "alice", node_wide=True, groups=(NODE_GID,)
)
TASK = identity.Account(identity.UID_FIRST + 4444, identity.UID_FIRST + 4444, groups=(NODE_GID,))
WHO = "id -u; id -g; id -G; umask; echo $PPID"


def status_ids(pid: int) -> dict[str, list[str]]:
    """The Uid, Gid and Groups lines of /proc/PID/status (real, effective, saved, fs)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        key: rest.split() for key, _, rest in (line.partition(":") for line in lines) if key in ("Uid", "Gid", "Groups")
    }


async def who(
    spawner: Spawner, cwd: Path, out: Path, stdio: tuple[int, int, int], account: identity.Account | None
) -> list[str]:
    """The command's uid, gid, groups, umask and parent pid."""
    out.write_text("")
    proc = await spawner.spawn(["sh", "-c", WHO], env=ENV, cwd=str(cwd), stdio=stdio, account=account)
    assert await proc.wait() == 0
    return out.read_text().splitlines()


@as_root
async def test_a_node_wide_accounts_commands_come_from_a_launcher_running_as_it(
    spawner: Spawner, open_tmp: Path, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    uid = str(POOL.uid)
    *ids, parent = await who(spawner, open_tmp, tmp_path / "out", stdio, POOL)
    assert ids == [uid, uid, f"{uid} {NODE_GID}", "0007"]
    launcher = spawner.launcher_pid(POOL)
    assert int(parent) == launcher
    assert status_ids(launcher) == {"Uid": [uid] * 4, "Gid": [uid] * 4, "Groups": [str(NODE_GID)]}
    assert os.stat(f"/proc/{launcher}/fd").st_uid == 0  # non-dumpable: its account cannot ptrace it
    *_, root_parent = await who(spawner, open_tmp, tmp_path / "out", stdio, None)
    assert int(root_parent) == spawner.launcher_pid() != launcher
    assert status_ids(int(root_parent))["Uid"] == ["0"] * 4


@as_root
@pytest.mark.parametrize("account", [POOL, TASK], ids=["own launcher", "root launcher"])
async def test_an_accounts_command_gets_only_its_stdio_and_no_ignored_signals(
    spawner: Spawner, open_tmp: Path, tmp_path: Path, stdio: tuple[int, int, int], account: identity.Account
) -> None:
    await assert_clean_start(spawner, open_tmp, tmp_path / "out", stdio, account)


@as_root
async def test_a_task_scope_account_is_switched_to_by_the_root_launcher(
    spawner: Spawner, open_tmp: Path, tmp_path: Path, stdio: tuple[int, int, int]
) -> None:
    uid = str(TASK.uid)
    *ids, parent = await who(spawner, open_tmp, tmp_path / "out", stdio, TASK)
    assert ids == [uid, uid, f"{uid} {NODE_GID}", "0007"]
    assert int(parent) == spawner.launcher_pid() == spawner.launcher_pid(TASK)


@as_root
async def test_closing_kills_the_commands_of_every_launcher(open_tmp: Path, stdio: tuple[int, int, int]) -> None:
    spawner = Spawner()
    procs = [
        await spawner.spawn(["sleep", "30"], env=ENV, cwd=str(open_tmp), stdio=stdio, account=account)
        for account in (None, POOL, NAMED, TASK)
    ]
    assert len({spawner.launcher_pid(account) for account in (None, POOL, NAMED)}) == 3
    await spawner.close()
    await eventually(lambda: not any(alive(p.pid) for p in procs), what="the commands to die")


@as_root
async def test_a_killed_account_launcher_loses_only_its_commands_and_is_replaced(
    spawner: Spawner, open_tmp: Path, stdio: tuple[int, int, int]
) -> None:
    root_proc = await spawner.spawn(["sleep", "30"], env=ENV, cwd=str(open_tmp), stdio=stdio)
    proc = await spawner.spawn(["sleep", "30"], env=ENV, cwd=str(open_tmp), stdio=stdio, account=POOL)
    launcher = spawner.launcher_pid(POOL)
    assert launcher is not None
    os.kill(launcher, signal.SIGKILL)
    with pytest.raises(LauncherLost):
        await proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)
    again = await spawner.spawn(["/bin/true"], env=ENV, cwd=str(open_tmp), stdio=stdio, account=POOL)
    assert await again.wait() == 0
    assert spawner.launcher_pid(POOL) not in (None, launcher)
    assert alive(root_proc.pid) and root_proc.returncode is None


#: a child that burns CPU, and writes and syncs 1 MiB: the exit report of its parent counts both
BURN_AND_WRITE = (
    "python3 -c 'import time\nwhile time.process_time() < 0.2: pass' && "
    "dd if=/dev/zero of=written bs=64k count=16 conv=fsync 2>/dev/null"
)


@as_root
@pytest.mark.parametrize("account", [None, POOL], ids=["root launcher", "own launcher"])
async def test_an_exit_reports_what_the_commands_tree_used(
    spawner: Spawner, open_tmp: Path, stdio: tuple[int, int, int], account: identity.Account | None
) -> None:
    work = open_tmp / f"work-{account is None}"
    work.mkdir()
    work.chmod(0o777)  # the account writes there
    proc = await spawner.spawn(["sh", "-c", BURN_AND_WRITE], env=ENV, cwd=str(work), stdio=stdio, account=account)
    assert await proc.wait() == 0
    assert proc.usage["user_cpu"] + proc.usage["kernel_cpu"] >= 0.2
    assert proc.usage["write_bytes"] >= 1 << 20 and proc.usage["max_rss"] > 0
    if account is None:  # only root may read an exited process's counters
        assert proc.usage["write_ops"] >= 16
