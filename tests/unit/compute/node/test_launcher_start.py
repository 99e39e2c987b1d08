"""launcher.start gives a command the same start by Popen's own call (fork_exec) as by Popen itself."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.compute.node import launcher

ENV = {"PATH": "/usr/bin:/bin", "X": "ünï x=y"}


@pytest.fixture(params=["fork_exec", "popen"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "popen":
        monkeypatch.setattr(launcher, "FORK_EXEC", None)
    return request.param


@pytest.fixture
def out(tmp_path: Path) -> Iterator[tuple[Path, list[int]]]:
    """The command's stdio: /dev/null in, one file out (both stdout and stderr)."""
    path = tmp_path / "out"
    fds = [os.open(os.devnull, os.O_RDONLY), os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)]
    yield path, [fds[0], fds[1], fds[1]]
    for fd in fds:
        os.close(fd)


def run(argv: list[str], cwd: Path, fds: list[int], **fields: Any) -> int:
    """The command's exit code, once it has ended."""
    pid, proc = launcher.start({"argv": argv, "env": ENV, "cwd": str(cwd), **fields}, fds)
    _, status = os.waitpid(pid, 0)
    if proc is not None:
        proc.returncode = os.waitstatus_to_exitcode(status)
    return os.waitstatus_to_exitcode(status)


def my_zombies() -> list[str]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(stat.parent.name)
    return found


def test_this_python_starts_commands_by_popens_own_call() -> None:
    """CPython 3.11-3.13: the faster start is the one the suite runs."""
    assert launcher.FORK_EXEC is not None


def test_a_command_gets_its_cwd_environment_stdio_session_and_no_ignored_signals(
    way: str, tmp_path: Path, out: tuple[Path, list[int]]
) -> None:
    path, fds = out
    script = 'pwd; echo "$X"; env | wc -l; ls /proc/$$/fd; grep SigIgn /proc/$$/status; cut -d" " -f6 /proc/$$/stat'
    code = run(["/bin/sh", "-c", f"echo $$; {script}; exit 3"], tmp_path, fds)
    pid, cwd, x, variables, *fds_seen, ignored, session = path.read_text().splitlines()
    assert code == 3
    assert (cwd, x, fds_seen, ignored, session) == (
        str(tmp_path),
        ENV["X"],
        ["0", "1", "2"],
        "SigIgn:\t0000000000000000",
        pid,  # a session of its own
    )
    assert int(variables) <= len(ENV) + 3  # ENV, and what sh sets itself (PWD, SHLVL, _)


def test_a_bare_program_name_is_looked_up_on_the_commands_path(way: str, tmp_path: Path, out: tuple) -> None:
    assert run(["true"], tmp_path, out[1]) == 0
    with pytest.raises(FileNotFoundError):
        launcher.start({"argv": ["true"], "env": {"PATH": str(tmp_path)}, "cwd": str(tmp_path)}, out[1])
    assert my_zombies() == []


@pytest.mark.parametrize(
    ("argv", "cwd", "code"),
    [
        (["/no/such/program"], ".", errno.ENOENT),
        (["/bin/true"], "missing", errno.ENOENT),
        (["./data.txt"], ".", errno.EACCES),  # not executable
    ],
)
def test_a_command_that_cannot_start_is_its_oserror_and_leaves_no_child(
    way: str, tmp_path: Path, out: tuple, argv: list[str], cwd: str, code: int
) -> None:
    (tmp_path / "data.txt").write_text("#!/bin/sh\n")
    with pytest.raises(OSError) as raised:
        launcher.start({"argv": argv, "env": ENV, "cwd": str(tmp_path / cwd)}, out[1])
    assert raised.value.errno == code
    assert my_zombies() == []


def test_an_environment_name_with_an_equals_sign_is_refused(way: str, tmp_path: Path, out: tuple) -> None:
    with pytest.raises(ValueError):
        launcher.start({"argv": ["/bin/true"], "env": {"A=B": "c"}, "cwd": str(tmp_path)}, out[1])
    assert my_zombies() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")
def test_an_account_is_switched_to_in_the_child(way: str, tmp_path: Path, out: tuple[Path, list[int]]) -> None:
    path, fds = out
    account = {"uid": 65534, "gid": 65533, "groups": [65533, 65532], "umask": 0o027}
    assert run(["/bin/sh", "-c", "id -u; id -g; id -G; umask"], tmp_path, fds, account=account) == 0
    assert path.read_text().split("\n")[:4] == ["65534", "65533", "65533 65532", "0027"]
