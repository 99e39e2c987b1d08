"""A node starts nothing once its server has ended (issue 20.8): the launchers hold a pidfd of the server's
process and check it right before each fork, so no run happens that the server could not count."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.compute.node import launcher
from kiln.compute.node.identity import Account
from kiln.compute.node.spawner import Spawner

ENV = {"PATH": "/usr/bin:/bin"}
#: A node-wide account has a launcher of its own; it must hold the lifeline too.
ACCOUNT = Account(200_000 + 4545, 200_000 + 4545, node_wide=True)


@pytest.fixture
def server() -> Iterator[subprocess.Popen[bytes]]:
    """Stands in for the server's process."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def stdio(tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    null = os.open(os.devnull, os.O_RDONLY)
    yield null, null, null
    os.close(null)


@pytest.mark.parametrize(
    "account",
    [None, pytest.param(ACCOUNT, marks=pytest.mark.skipif(os.geteuid() != 0, reason="accounts need root"))],
    ids=["root launcher", "account launcher"],
)
async def test_nothing_starts_once_the_server_has_ended(
    server: subprocess.Popen[bytes], open_tmp: Path, stdio: tuple[int, int, int], account: Account | None
) -> None:
    spawner = Spawner()
    spawner.lifeline = os.pidfd_open(server.pid)
    marks = open_tmp / "marks"
    marks.mkdir(mode=0o777)
    os.chmod(marks, 0o1777)
    try:
        before = await spawner.spawn(
            ["touch", str(marks / "before")], env=ENV, cwd=str(open_tmp), stdio=stdio, account=account
        )
        assert await before.wait() == 0
        server.kill()
        server.wait()  # ended (and reaped): what a SIGKILL of the real server comes to
        with pytest.raises(OSError) as refused:
            await spawner.spawn(
                ["touch", str(marks / "after")], env=ENV, cwd=str(open_tmp), stdio=stdio, account=account
            )
        assert refused.value.errno == errno.ESRCH
        assert sorted(p.name for p in marks.iterdir()) == ["before"]
    finally:
        await spawner.close()
        os.close(spawner.lifeline)


def test_a_lifeline_is_lost_when_its_process_ends_even_unreaped(server: subprocess.Popen[bytes]) -> None:
    fd = os.pidfd_open(server.pid)
    try:
        assert not launcher.lifeline_lost(fd)
        server.kill()
        os.waitid(os.P_PID, server.pid, os.WEXITED | os.WNOWAIT)  # a zombie: ended, not reaped
        assert launcher.lifeline_lost(fd)
    finally:
        os.close(fd)
    assert not launcher.lifeline_lost(None)  # no pidfds: no gate


def test_a_lifeline_is_only_ever_the_parents() -> None:
    with pytest.raises(ProcessLookupError):
        launcher.open_lifeline(os.getpid())  # alive, but not our parent: it could be a reused pid
    fd = launcher.open_lifeline(os.getppid())
    assert fd is not None and not launcher.lifeline_lost(fd)
    os.close(fd)
