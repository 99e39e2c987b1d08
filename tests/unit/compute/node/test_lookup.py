"""Finding a program as the account that will run it."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from kiln.compute.node import identity
from kiln.compute.node.lookup import _parents, find_program

ACCOUNT = identity.Account(200_123, 200_123)


@pytest.fixture
def bins(open_tmp: Path) -> Path:
    """closed/ (0700, the test's own) and open/ (0755), each with an executable `tool`; other/ with a `tool`
    only its owner may run."""
    tmp_path = open_tmp
    for name, mode in (("closed", 0o700), ("open", 0o755), ("other", 0o755)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tool").write_text("#!/bin/sh\n")
        (tmp_path / name / "tool").chmod(0o700 if name == "other" else 0o755)
        (tmp_path / name).chmod(mode)
    return tmp_path


@pytest.mark.parametrize(
    ("path", "account", "found"),
    [
        ("closed:open", ACCOUNT, "open"),
        ("closed:open", None, "closed"),
        ("other:open", ACCOUNT, "open"),
        ("closed:other", ACCOUNT, None),
        ("open", identity.Account(os.getuid(), os.getgid()), "open"),
    ],
)
def test_path_entries_are_searched_with_the_accounts_permissions(bins, path, account, found):
    entries = ":".join(str(bins / entry) for entry in path.split(":"))
    expected = None if found is None else str(bins / found / "tool")
    assert find_program("tool", entries, bins, account) == expected


def test_relative_entries_and_names_are_relative_to_the_working_directory(bins):
    assert find_program("tool", "open", bins, ACCOUNT) == str(bins / "open" / "tool")
    assert find_program("./open/tool", "", bins, ACCOUNT) == os.path.join(bins, "./open/tool")
    assert find_program("closed/tool", "", bins, ACCOUNT) is None
    assert find_program("tool", "::", bins, ACCOUNT) is None  # empty entries are not the worker's cwd


@pytest.mark.parametrize("path", ["/bin/true", "/a/wd/../bin/x", "/a/./b//c", "/x", "a/b", "rel"])
def test_the_directories_checked_above_a_program_are_those_pathlib_names(path: str) -> None:
    """Every one of them, in the same order (a `.` or a doubled slash at most has one checked twice)."""
    checked = dict.fromkeys(str(PurePosixPath(parent)) for parent in _parents(path))
    assert list(checked) == [str(parent) for parent in PurePosixPath(path).parents]
