"""`kiln autoscale simulate`: JSON output of a hand-computed trace, the SVG plot, refusals."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kiln.cli.main import app

FORMULA = "$TargetDedicatedNodes = max(0, $PendingTasks.GetSample(1));\n$NodeDeallocationOption = taskcompletion\n"


def _files(tmp_path: Path, formula: str = FORMULA) -> list[str]:
    (tmp_path / "formula.txt").write_text(formula)
    (tmp_path / "work.csv").write_text("arrival,duration\n0,60\n0,60\n90,30\n")
    return [str(tmp_path / "formula.txt"), str(tmp_path / "work.csv")]


def test_json_per_evaluation_and_totals_and_a_plot(tmp_path: Path) -> None:
    plot = tmp_path / "plot.svg"
    args = ["autoscale", "simulate", *_files(tmp_path), "--interval", "PT30S", "--json", "--plot", str(plot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [(e["at"], e["activeTasks"], e["runningTasks"], e["nodes"]) for e in out["evaluations"]] == [
        ("P0D", 2, 0, 2),
        ("PT30S", 0, 2, 2),
        ("PT1M", 0, 0, 0),
        ("PT1M30S", 1, 0, 1),
        ("PT2M", 0, 0, 0),
    ]
    assert out["totals"]["node_hours"] * 3600 == 150 and out["totals"]["peak_nodes"] == 2
    assert plot.read_text().startswith("<svg") and plot.read_text().count("<polyline") == 2


def test_a_formula_with_a_syntax_error_is_refused_naming_line_and_column(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["autoscale", "simulate", *_files(tmp_path, "a = 1;\nb = (2")])
    assert result.exit_code == 1 and "Line 2, Col 7" in result.output


def test_only_svg_plots(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["autoscale", "simulate", *_files(tmp_path), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "SVG only" in result.output
