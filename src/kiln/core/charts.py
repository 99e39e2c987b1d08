"""State charts drawn from the transition tables, so docs/architecture.md cannot drift from the code.

Each chart is a Mermaid `stateDiagram-v2` whose edges are lettered: edges with the same handler into the
same state share a letter (one cause, one explanation under the chart). `python -m kiln.core.charts`
rewrites the charts between the doc's `<!-- chart:NAME -->` and `<!-- /chart:NAME -->` markers;
tests/unit/core/test_charts.py fails when they or their explanations disagree with the tables.
Rendering is pure; only the command reads and writes the file.
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kiln.core import job, lifecycle, node, pool, preparation, schedule, task

Edge = tuple[StrEnum, StrEnum]

#: The doc the charts live in, when run from a checkout.
DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"


@dataclass(frozen=True, slots=True)
class Chart:
    name: str  #: the marker name in the doc
    table: lifecycle.Table
    #: where a new object starts: set by its `new_row` (or the API's insert), not by a table edge
    initial: StrEnum


CHARTS = (
    Chart("task", task.TRANSITIONS, task.TaskState.ACTIVE),
    Chart("node", node.TRANSITIONS, node.NodeState.CREATING),
    Chart("job", job.TRANSITIONS, job.JobState.ACTIVE),
    Chart("pool", pool.STATE_TRANSITIONS, pool.PoolState.ACTIVE),
    Chart("pool-allocation", pool.ALLOCATION_TRANSITIONS, pool.AllocationState.RESIZING),
    Chart("preparation", preparation.PREP_TRANSITIONS, preparation.StepState.PENDING),
    Chart("release", preparation.RELEASE_TRANSITIONS, preparation.StepState.PENDING),
    Chart("schedule", schedule.TRANSITIONS, schedule.ScheduleState.ACTIVE),
)


def lettered(table: lifecycle.Table) -> dict[str, list[Edge]]:
    """The table's edges by letter, in table order; one letter per (handler, target state)."""
    groups: dict[tuple[int, StrEnum], list[Edge]] = {}
    for (source, target), handler in table.items():
        groups.setdefault((id(handler), target), []).append((source, target))
    if len(groups) > len(string.ascii_lowercase):
        raise ValueError(f"{len(groups)} kinds of edges: more than there are letters")
    return dict(zip(string.ascii_lowercase, groups.values(), strict=False))


def render(chart: Chart) -> str:
    """The chart as a fenced Mermaid block; states with no way out end at [*]."""
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {chart.initial.value}"]
    for letter, edges in lettered(chart.table).items():
        lines += [f"    {source.value} --> {target.value}: {letter}" for source, target in edges]
    sources = {source for source, _ in chart.table}
    ends = dict.fromkeys(target for _, target in chart.table if target not in sources)
    lines += [f"    {state.value} --> [*]" for state in ends]
    lines.append("```")
    return "\n".join(lines)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- chart:{name} -->", f"<!-- /chart:{name} -->"


def _inside(text: str, name: str) -> tuple[int, int]:
    """Where the text between a chart's markers starts and ends."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"the doc needs exactly one {start} and one {end}")
    begin = text.index(start) + len(start)
    finish = text.index(end)
    if finish < begin:
        raise ValueError(f"{end} comes before {start}")
    return begin, finish


def section(text: str, name: str) -> str:
    """What stands between a chart's markers."""
    begin, finish = _inside(text, name)
    return text[begin:finish]


def rewrite(text: str) -> str:
    """The doc with every chart drawn afresh from its table; the rest is left as it is."""
    for chart in CHARTS:
        begin, finish = _inside(text, chart.name)
        text = f"{text[:begin]}\n{render(chart)}\n{text[finish:]}"
    return text


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DOC
    before = path.read_text()
    after = rewrite(before)
    if after == before:
        print(f"{path}: the charts are up to date")
        return 0
    path.write_text(after)
    print(f"{path}: charts rewritten from the tables; check the lettered lists under them")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
