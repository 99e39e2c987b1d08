"""`kiln autoscale simulate`: a formula replayed against a workload on a simulated clock, offline."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kiln.autoscale.evaluate import FormulaTooLong, compile_formula
from kiln.autoscale.samples import PERIOD
from kiln.autoscale.simulate import Evaluation, Simulation, Totals, load_workload
from kiln.autoscale.syntax import FormulaSyntaxError
from kiln.wire.times import format_duration, parse_duration

app = typer.Typer(help="Autoscale formulas.", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
def simulate(
    formula: Path = typer.Argument(..., help="File holding the autoscale formula."),
    workload: Path = typer.Argument(..., help="Tasks as JSON [{arrival, duration}] or CSV arrival,duration (s)."),
    interval: str = typer.Option("PT15M", help="autoScaleEvaluationInterval (ISO 8601)."),
    slots: int = typer.Option(1, help="taskSlotsPerNode."),
    node_start: str = typer.Option("PT0S", "--node-start", help="How long a new node takes to come up (ISO 8601)."),
    until: str = typer.Option("P7D", help="Stop the clock here at the latest (ISO 8601)."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluations and totals as JSON."),
    plot: Path = typer.Option(None, "--plot", help="Draw nodes and pending tasks over time to FILE.svg."),
) -> None:
    """Replay WORKLOAD through FORMULA every INTERVAL (samples every 30 s): per evaluation the samples, the
    results string and the nodes; then node-hours, hours tasks waited and the peak of nodes."""
    try:
        compiled = compile_formula(formula.read_text())
    except (FormulaSyntaxError, FormulaTooLong) as error:
        console.print(f"[red]{formula}: {error}[/red]", highlight=False)
        raise typer.Exit(1) from None
    if plot is not None and plot.suffix.lower() != ".svg":
        console.print("[red]--plot draws SVG only: name the file .svg[/red]")
        raise typer.Exit(1)
    simulation = Simulation(
        compiled,
        load_workload(workload.read_text()),
        interval=parse_duration(interval),
        slots_per_node=slots,
        node_start=parse_duration(node_start),
        until=parse_duration(until),
    )
    evaluations, totals = simulation.run()
    if plot is not None:
        plot.write_text(svg(simulation.timeline))
    if as_json:
        print(json.dumps({"evaluations": [_doc(e) for e in evaluations], "totals": asdict(totals)}, indent=2))
        return
    console.print(_table(evaluations))
    console.print(_summary(totals), highlight=False)


def _doc(evaluation: Evaluation) -> dict:
    doc = {
        "at": format_duration_seconds(evaluation.at),
        "activeTasks": evaluation.active,
        "runningTasks": evaluation.running,
        "nodes": evaluation.nodes,
        "results": evaluation.run.results,
    }
    if evaluation.run.error is not None:
        doc["error"] = evaluation.run.error.doc()
    return doc


def format_duration_seconds(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _table(evaluations: list[Evaluation]) -> Table:
    table = Table(title="Evaluations", title_justify="left")
    for column in ("at", "active", "running", "nodes", "results / error"):
        table.add_column(column, overflow="fold")
    for e in evaluations:
        outcome = e.run.results if e.run.error is None else f"{e.run.error.code}: {e.run.error.values[0][1]}"
        table.add_row(format_duration_seconds(e.at), str(e.active), str(e.running), str(e.nodes), outcome)
    return table


def _summary(totals: Totals) -> str:
    return (
        f"node-hours {totals.node_hours:.2f}, task wait hours {totals.task_wait_hours:.2f}, "
        f"peak nodes {totals.peak_nodes}, tasks completed {totals.completed}, failed {totals.failed}, "
        f"requeued {totals.requeued}, simulated {format_duration_seconds(totals.seconds)}"
    )


def svg(timeline: list[tuple[float, int, int]], width: int = 800, height: int = 300) -> str:
    """Nodes (blue) and pending tasks (orange) over time, as two polylines on one scale."""
    end = max((at for at, _, _ in timeline), default=0.0) or PERIOD.total_seconds()
    top = max((max(nodes, pending) for _, nodes, pending in timeline), default=0) or 1

    def line(index: int, colour: str) -> str:
        points = " ".join(
            f"{40 + (width - 60) * row[0] / end:.1f},{height - 30 - (height - 50) * row[index] / top:.1f}"
            for row in timeline
        )
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">'
        f'<line x1="40" y1="{height - 30}" x2="{width - 20}" y2="{height - 30}" stroke="black"/>'
        f'<line x1="40" y1="20" x2="40" y2="{height - 30}" stroke="black"/>'
        f'<text x="4" y="24">{top}</text><text x="4" y="{height - 30}">0</text>'
        f'<text x="{width - 120}" y="{height - 10}">{format_duration_seconds(end)}</text>'
        f"{line(1, '#1f77b4')}{line(2, '#ff7f0e')}"
        '<text x="50" y="16" fill="#1f77b4">nodes</text><text x="110" y="16" fill="#ff7f0e">pending tasks</text>'
        "</svg>\n"
    )
