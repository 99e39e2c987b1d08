"""The command line's docs name every command it has: docs/cli.md's table, a row per group, and the README's
paragraph on `kiln fault`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln.cli.main import GROUPS

ROOT = Path(__file__).resolve().parents[2]
#: docs/cli.md's table: `| `kiln GROUP` | `command ARGS`, … |`.
ROWS = {
    match["group"]: match["commands"]
    for match in re.finditer(
        r"^\| `kiln (?P<group>\w+)` \| (?P<commands>.*) \|$", (ROOT / "docs/cli.md").read_text(), re.M
    )
}


def commands(group: str) -> list[str]:
    return [command.name for command in GROUPS[group].registered_commands if command.name]


def named(name: str, text: str) -> bool:
    """`name` opens a code span of the text (`name` or `name ARGS…`)."""
    return re.search(rf"`{re.escape(name)}[ `]", text) is not None


@pytest.mark.parametrize("group", sorted(ROWS))
def test_the_cli_docs_table_names_every_command_of_each_group(group: str) -> None:
    assert [name for name in commands(group) if not named(name, ROWS[group])] == []


def test_the_table_has_a_row_for_each_group_over_the_rest_api() -> None:
    assert {"pool", "node", "job", "task", "file", "schedule", "fault"} <= set(ROWS)


def test_the_readmes_fault_paragraph_names_every_fault() -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if p.startswith("`kiln fault "))
    paragraph = paragraph.replace("\n", " ").replace("`kiln fault ", "`")
    assert [name for name in commands("fault") if not named(name, paragraph)] == []
