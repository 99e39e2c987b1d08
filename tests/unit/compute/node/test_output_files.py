from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.compute.node.identity import Account
from kiln.compute.node.output_files import applies, expand, readable_by, resolve
from kiln.compute.protocol import OutputFile


@pytest.mark.parametrize(
    ("condition", "exit_code", "expected"),
    [
        ("tasksuccess", 0, True),
        ("tasksuccess", 3, False),
        ("taskfailure", 0, False),
        ("taskfailure", 3, True),
        ("TaskFailure", 137, True),
        ("taskcompletion", 0, True),
        ("taskcompletion", 3, True),
    ],
)
def test_upload_conditions(condition: str, exit_code: int, expected: bool) -> None:
    assert applies(condition, exit_code) is expected


def test_variables_expand_and_unknown_ones_stay() -> None:
    assert expand("$A/${B}.txt/$NOPE", {"A": "x", "B": "y"}) == "x/y.txt/$NOPE"


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    wd = tmp_path / "task" / "wd"
    for name in ("a.txt", "sub/c.txt", "sub/deep/d.txt", ".hidden.txt", "x[1].txt", "sub/.dot/e.txt"):
        (wd / name).parent.mkdir(parents=True, exist_ok=True)
        (wd / name).write_text(name)
    (tmp_path / "task" / "stdout.txt").write_text("out")
    os.symlink(wd / "a.txt", wd / "link.txt")
    return wd


def blobs(pattern: str, wd: Path, path: str | None = None) -> list[str]:
    return [m.blob for m in resolve(OutputFile(pattern, "http://x/c", "taskcompletion", path), pattern, wd)]


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.txt", None, ["a.txt", "link.txt", "x[1].txt"]),
        ("**/*.txt", "p", ["p/a.txt", "p/link.txt", "p/sub/c.txt", "p/sub/deep/d.txt", "p/x[1].txt"]),
        (".*.txt", None, [".hidden.txt"]),
        ("sub/**/*.txt", None, ["c.txt", "deep/d.txt"]),
        ("x[[]1].txt", "y.txt", ["y.txt"]),
        ("sub/deep/d.txt", None, ["d.txt"]),
        ("../std*.txt", "logs/", ["logs/stdout.txt"]),
        ("nothing*", None, []),
        ("sub", None, []),  # directories are not uploaded
    ],
)
def test_patterns_and_blob_names(wd: Path, pattern: str, path: str | None, expected: list[str]) -> None:
    assert blobs(pattern, wd, path) == expected


def test_an_absolute_pattern(wd: Path) -> None:
    assert blobs(f"{wd}/sub/*.txt", wd, "abs") == ["abs/c.txt"]


def test_a_task_account_reaches_only_what_it_may_read(tmp_path: Path) -> None:
    mine, secret = tmp_path / "mine", tmp_path / "secret"
    mine.write_text("x")
    secret.write_text("y")
    os.chmod(secret, 0o600)
    me = Account(uid=os.getuid(), gid=os.getgid())
    other = Account(uid=os.getuid() + 1, gid=os.getgid() + 1)
    assert readable_by(secret, me) and readable_by(secret, None)
    assert not readable_by(secret, other)
    os.chmod(mine, 0o644)
    assert readable_by(mine, other)
