"""`kiln job transfers JOB`'s table: per node, what its preparation task, its tasks and its release task downloaded
and uploaded, and what the preparation task saved against every task downloading on its own."""

from __future__ import annotations

from typing import Any

from rich.table import Table

#: (column, part of a node's figures, direction)
_MOVED = [
    ("prep down", "preparation", "downloaded"),
    ("tasks down", "tasks", "downloaded"),
    ("tasks up", "tasks", "uploaded"),
    ("release down", "release", "downloaded"),
    ("release up", "release", "uploaded"),
]


def table(body: dict[str, Any]) -> Table:
    out = Table(title=f"Transfers of job {body['jobId']}", title_justify="left")
    for column in ("node", "tasks run", *(name for name, _, _ in _MOVED), "prep saved"):
        out.add_column(column, justify="left" if column == "node" else "right")
    for node in body["nodes"]:
        moved = [_moved(node[part], direction) for _, part, direction in _MOVED]
        out.add_row(node["nodeId"], str(node["tasksRun"]), *moved, _size(node["preparationSavedBytes"]))
    totals = [_moved(body[part], direction) for _, part, direction in _MOVED]
    out.add_row("[bold]job[/bold]", str(sum(n["tasksRun"] for n in body["nodes"])), *totals, "", end_section=True)
    return out


def _moved(tally: dict[str, Any], direction: str) -> str:
    """Size, files and time: `12.0 MiB / 3 files / 0.4 s`; empty when nothing moved."""
    files = tally[f"{direction}Files"]
    if not files:
        return ""
    seconds = tally["downloadSeconds" if direction == "downloaded" else "uploadSeconds"]
    return f"{_size(tally[f'{direction}Bytes'])} / {files} file{'s' * (files != 1)} / {seconds:.2f} s"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
