"""Kiln-specific, outside Batch's routes: a job's transfer accounting (GET /kiln/jobs/{job}/transfers). Same
Shared Key authentication as Batch's routes; no api-version."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import json_response
from kiln.commands import transfers
from kiln.core.transfers import NodeTransfers, StepTransfers, Tally

router = APIRouter()


@router.get("/kiln/jobs/{job_id}/transfers")
async def get_job_transfers(request: Request, job_id: str) -> Response:
    job, figures = await transfers.of_job(control(request), job_id)
    return json_response(
        {
            "jobId": job["id"],
            "total": _tally(figures.total),
            **{part: _tally(tally) for part, tally in figures.parts.items()},
            "nodes": [_node(node) for node in figures.nodes],
            "steps": [_step(step) for step in figures.steps],
        }
    )


def _tally(tally: Tally) -> dict[str, Any]:
    return {_camel(name): value for name, value in asdict(tally).items()}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _node(node: NodeTransfers) -> dict[str, Any]:
    return {
        "nodeId": node.node_id,
        **{part: _tally(tally) for part, tally in node.parts.items()},
        "tasksRun": node.tasks_run,
        "preparationSavedBytes": node.prep_saved_bytes,
    }


def _step(step: StepTransfers) -> dict[str, Any]:
    return {
        "kind": step.kind,
        "taskId": step.task_id,
        "nodeId": step.node_id,
        "attempt": step.attempt,
        **_tally(step.tally),
        "sources": step.sources,
    }
