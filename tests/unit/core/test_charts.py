"""The state charts in docs/architecture.md match the transition tables, and every edge is explained."""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from kiln.core import charts
from kiln.core.lifecycle import no_changes

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
FIX = "run `python -m kiln.core.charts` and update the lettered list under the chart"

#: An explanation's key: `- **c** `active`, `preparing` → `completed`:` or `- **g** any state → `deleting`:`
ITEM = re.compile(r"^- \*\*([a-z])\*\* (any state|`\w+`(?:, `\w+`)*) → `(\w+)`:", re.MULTILINE)


def explained(doc: str, chart: charts.Chart) -> dict[str, list[tuple[str, str]]]:
    """The edges the list under a chart explains, by letter ("any state": every other state of the lifecycle)."""
    after = doc[doc.index(charts.markers(chart.name)[1]) :]
    block = re.split(r"^(?:#|<!-- chart:)", after, maxsplit=1, flags=re.MULTILINE)[0]
    states = [s.value for s in type(chart.initial)]
    keys: dict[str, list[tuple[str, str]]] = {}
    for letter, sources, target in ITEM.findall(block):
        names = [s for s in states if s != target] if sources == "any state" else re.findall(r"`(\w+)`", sources)
        assert letter not in keys, f"chart {chart.name}: letter {letter} is explained twice"
        keys[letter] = sorted((name, target) for name in names)
    return keys


def table_edges(chart: charts.Chart) -> dict[str, list[tuple[str, str]]]:
    return {
        letter: sorted((a.value, b.value) for a, b in edges) for letter, edges in charts.lettered(chart.table).items()
    }


@pytest.mark.parametrize("chart", charts.CHARTS, ids=lambda c: c.name)
def test_the_doc_shows_the_table(chart: charts.Chart) -> None:
    drawn = charts.section(DOC.read_text(), chart.name).strip("\n")
    assert drawn == charts.render(chart), f"the {chart.name} chart in docs/architecture.md is stale: {FIX}"


@pytest.mark.parametrize("chart", charts.CHARTS, ids=lambda c: c.name)
def test_every_edge_is_explained(chart: charts.Chart) -> None:
    assert explained(DOC.read_text(), chart) == table_edges(chart), (
        f"the list under the {chart.name} chart must explain each lettered edge of the table, "
        f"no more and no fewer (letter: edges): {FIX}"
    )


class Light(StrEnum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"


def _switch(row: dict[str, Any], now: Any, **_: Any) -> dict[str, Any]:
    return {}


def _chart(table: dict[tuple[StrEnum, StrEnum], Callable[..., dict[str, Any]]]) -> charts.Chart:
    return charts.Chart("light", table, Light.OFF)


def test_one_letter_per_handler_and_target_and_ends_where_nothing_leaves() -> None:
    chart = _chart(
        {
            (Light.OFF, Light.ON): _switch,
            (Light.ON, Light.OFF): _switch,
            (Light.ON, Light.ON): no_changes,
            (Light.OFF, Light.BROKEN): no_changes,
            (Light.ON, Light.BROKEN): no_changes,
        }
    )
    assert charts.render(chart) == "\n".join(
        [
            "```mermaid",
            "stateDiagram-v2",
            "    [*] --> off",
            "    off --> on: a",
            "    on --> off: b",
            "    on --> on: c",
            "    off --> broken: d",
            "    on --> broken: d",
            "    broken --> [*]",
            "```",
        ]
    )


def test_rewrite_replaces_only_what_stands_between_the_markers() -> None:
    chart = charts.CHARTS[0]
    start, end = charts.markers(chart.name)
    others = "".join(f"{a}{b}" for a, b in map(charts.markers, (c.name for c in charts.CHARTS[1:])))
    doc = f"# Title\n\n{start}\nold drawing\n{end}\n\n- **a** kept\n{others}"
    rewritten = charts.rewrite(doc)
    assert rewritten.startswith(f"# Title\n\n{start}\n{charts.render(chart)}\n{end}\n\n- **a** kept\n")
    assert charts.rewrite(rewritten) == rewritten


def test_a_missing_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="chart:task"):
        charts.section("no charts here", "task")


def test_main_writes_the_doc_only_when_it_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "architecture.md"
    doc.write_text("".join(f"{a}{b}\n" for a, b in map(charts.markers, (c.name for c in charts.CHARTS))))
    assert charts.main([str(doc)]) == 0
    assert "rewritten" in capsys.readouterr().out
    assert charts.section(doc.read_text(), "task").strip("\n") == charts.render(charts.CHARTS[0])
    assert charts.main([str(doc)]) == 0
    assert "up to date" in capsys.readouterr().out
