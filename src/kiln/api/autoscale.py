"""/pools/{id}/enableautoscale, /disableautoscale, /evaluateautoscale."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import empty, json_response, metadata_url, read_json, write_conditions
from kiln.commands import autoscale
from kiln.errors import InvalidPropertyValue, MissingRequiredProperty
from kiln.wire.times import format_time

router = APIRouter()


def _text(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidPropertyValue(name, value, "The value must be a string.")
    return value


@router.post("/pools/{pool_id}/enableautoscale")
async def enable_autoscale(request: Request, pool_id: str) -> Response:
    body = await read_json(request, optional=True)
    formula, interval = _text(body, "autoScaleFormula"), _text(body, "autoScaleEvaluationInterval")
    row = await autoscale.enable(control(request), pool_id, formula, interval, write_conditions(request))
    return empty(200, request, row)


@router.post("/pools/{pool_id}/disableautoscale")
async def disable_autoscale(request: Request, pool_id: str) -> Response:
    row = await autoscale.disable(control(request), pool_id, write_conditions(request))
    return empty(200, request, row)


@router.post("/pools/{pool_id}/evaluateautoscale")
async def evaluate_autoscale(request: Request, pool_id: str) -> Response:
    formula = _text(await read_json(request), "autoScaleFormula")
    if formula is None:
        raise MissingRequiredProperty("autoScaleFormula")
    run = await autoscale.evaluate(control(request), pool_id, formula)
    fragment = "Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun"
    return json_response({"odata.metadata": metadata_url(request, fragment), **run.doc(format_time)})
