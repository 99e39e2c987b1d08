"""`kiln autoscale simulate`: a formula replayed against a workload on a simulated clock, offline, or against
a recorded job of a server (`--from-job`).

The formula language and the simulator are imported when the command runs: every other `kiln` command would
otherwise load the grammar too (~0.15 s of a command's start on a slow core; bench/cli_start.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from kiln.cli.session import Session, command, usage, wire
from kiln.wire.times import format_duration, parse_duration

if TYPE_CHECKING:
    from kiln.autoscale.plot import Chart
    from kiln.autoscale.replay import RecordedTask, Replay
    from kiln.autoscale.simulate import Arrival, Evaluation, Simulation, Totals

app = typer.Typer(help="Autoscale formulas.", no_args_is_help=True)
console = Console(soft_wrap=True)


@command(app)
def simulate(
    session: Session,
    formula: Path = typer.Argument(..., help="File holding the autoscale formula."),
    workload: Path = typer.Argument(None, help="Tasks as JSON [{arrival, duration}] or CSV arrival,duration (s)."),
    from_job: str = typer.Option(None, "--from-job", help="Instead of a WORKLOAD: replay this job of the server."),
    rerun: bool = typer.Option(
        False, "--rerun", help="With --from-job: run its tasks again on the simulated pool, not its recorded samples."
    ),
    interval: str = typer.Option("PT15M", help="autoScaleEvaluationInterval (ISO 8601)."),
    slots: int = typer.Option(1, help="taskSlotsPerNode."),
    node_start: str = typer.Option("PT0S", "--node-start", help="How long a new node takes to come up (ISO 8601)."),
    until: str = typer.Option("P7D", help="Stop the clock here at the latest (ISO 8601)."),
    sample_period: str = typer.Option("PT30S", "--sample-period", help="How often samples are taken (Batch: 30 s)."),
    plot: Path = typer.Option(None, "--plot", help="Draw nodes, target and metrics over time to FILE.svg or .png."),
    metrics: list[str] = typer.Option(["$PendingTasks"], "--metric", help="A sampled metric to plot (repeatable)."),
) -> None:
    """Replay WORKLOAD (or a job, --from-job) through FORMULA every INTERVAL, sampling every 30 s: per
    evaluation the samples, the results string and the nodes; then node-hours, hours tasks waited, peak nodes."""
    from kiln.autoscale.evaluate import FormulaTooLong, compile_formula
    from kiln.autoscale.plot import chart
    from kiln.autoscale.replay import Replay, arrivals
    from kiln.autoscale.samples import METRICS
    from kiln.autoscale.simulate import Simulation
    from kiln.autoscale.syntax import FormulaSyntaxError

    try:
        compiled = compile_formula(formula.read_text())
    except (FormulaSyntaxError, FormulaTooLong) as error:
        console.print(f"[red]{formula}: {error}[/red]", highlight=False)
        raise typer.Exit(1) from None
    if (workload is None) == (from_job is None):
        raise usage("name a WORKLOAD file or --from-job JOB: one of the two")
    if plot is not None and plot.suffix.lower() not in (".svg", ".png"):
        raise usage("--plot draws SVG or PNG: name the file .svg or .png")
    plotted = [name if name.startswith("$") else f"${name}" for name in metrics]
    if unknown := [name for name in plotted if name not in METRICS]:
        raise usage(f"--metric {', '.join(unknown)}: not a sampled metric ({' '.join(METRICS)})")
    if rerun and from_job is None:
        raise usage("--rerun replays a job: name it with --from-job")
    if parse_duration(sample_period) <= timedelta(0) or parse_duration(interval) <= timedelta(0):
        raise usage("--sample-period and --interval must be longer than 0")
    simulation: Simulation | Replay
    recorded = _recorded(session, from_job) if from_job is not None else []
    if recorded and not rerun:
        simulation = Replay(compiled, recorded, parse_duration(interval), parse_duration(sample_period), slots)
    else:
        simulation = Simulation(
            compiled,
            arrivals(recorded) if recorded else _workload(workload),
            interval=parse_duration(interval),
            slots_per_node=slots,
            node_start=parse_duration(node_start),
            period=parse_duration(sample_period),
            until=parse_duration(until),
        )
    evaluations, totals = simulation.run()
    if plot is not None:
        _draw(plot, chart(simulation.timeline, plotted))
    if session.as_json:
        print(json.dumps({"evaluations": [_doc(e) for e in evaluations], "totals": asdict(totals)}, indent=2))
        return
    console.print(_table(evaluations))
    console.print(_summary(totals), highlight=False)


def _recorded(session: Session, job_id: str) -> list[RecordedTask]:
    from kiln.autoscale.replay import recorded_tasks

    tasks = recorded_tasks(wire(task) for task in session.client.list_tasks(job_id))
    if not tasks:
        raise usage(f"job {job_id} has no tasks to replay")
    return tasks


def _workload(path: Path) -> list[Arrival]:
    from kiln.autoscale.simulate import load_workload

    try:
        return load_workload(path.read_text())
    except (OSError, ValueError, KeyError) as error:
        raise usage(f"cannot read the workload {path}: {error!r}") from None


def _draw(path: Path, drawn: Chart) -> None:
    from kiln.autoscale.plot import png, svg

    if path.suffix.lower() == ".svg":
        path.write_text(svg(drawn))
        return
    try:
        path.write_bytes(png(drawn))
    except ImportError:
        raise usage("a PNG plot needs Pillow: pip install 'kiln[plot]' (or name the file .svg)") from None


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
