"""`kiln autoscale simulate`: JSON output of a hand-computed trace, SVG and PNG plots, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
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
    assert plot.read_text().startswith("<svg") and plot.read_text().count("<polyline") == 3


def test_a_formula_with_a_syntax_error_is_refused_naming_line_and_column(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["autoscale", "simulate", *_files(tmp_path, "a = 1;\nb = (2")])
    assert result.exit_code == 1 and "Line 2, Col 7" in result.output


def test_a_png_plot_of_the_chosen_metrics(tmp_path: Path) -> None:
    """Nodes and target are 2 from 0 to 30 s, then 0 at 60 s (x = 40 + 740 · t / 120 s, y = 270 − 125 · value);
    $RunningTasks (red) is 0 at 0 s and 2 at 30 s; $ActiveTasks (orange) 2 at 0 s and 0 at 30 s."""
    plot = tmp_path / "plot.png"
    args = ["autoscale", "simulate", *_files(tmp_path), "--interval", "PT30S", "--plot", str(plot)]
    result = CliRunner().invoke(app, [*args, "--metric", "RunningTasks", "--metric", "$ActiveTasks"])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(plot).convert("RGB")
    assert image.size == (800, 300)
    at_15s = 40 + 740 * 15 // 120
    assert image.getpixel((at_15s, 20)) == (0x1F, 0x77, 0xB4)  # nodes (over the target), 2 nodes at the top
    assert image.getpixel((at_15s, 145)) in {(0xD6, 0x27, 0x28), (0xFF, 0x7F, 0x0E)}  # the two metrics cross


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plot", "p.gif"], "SVG or PNG"),
        (["--metric", "$Nodes"], "$Nodes: not a sampled metric"),
        (["--from-job", "j"], "one of the two"),
        (["--rerun"], "name it with --from-job"),
        (["--sample-period", "PT0S"], "longer than 0"),
    ],
)
def test_refusals(tmp_path: Path, extra: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["autoscale", "simulate", *_files(tmp_path), *extra])
    assert result.exit_code == 2 and message in result.output


def test_a_workload_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    formula, workload = _files(tmp_path)
    Path(workload).write_text("arrival,duration\n0;60\n")
    result = CliRunner().invoke(app, ["autoscale", "simulate", formula, workload])
    assert result.exit_code == 2 and "cannot read the workload" in result.output
