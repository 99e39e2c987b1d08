"""Autoscale: settings checked at create and enable, enable, disable, evaluate (batch-semantics §7.3)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from kiln.autoscale.evaluate import FormulaTooLong, Run, compile_formula
from kiln.autoscale.syntax import Formula, FormulaSyntaxError
from kiln.commands import pools
from kiln.commands.control import Check, Control, Row
from kiln.core.pool import AllocationState
from kiln.errors import BadRequest, Conflict, InvalidPropertyValue, KilnError
from kiln.store import rows as db
from kiln.wire.times import format_duration, format_time, now, parse_duration

#: Batch's range for autoScaleEvaluationInterval; KILN_MIN_AUTOSCALE_INTERVAL lowers the minimum (for tests).
MAX_INTERVAL = timedelta(hours=168)
DEFAULT_INTERVAL = "PT15M"
#: Batch's least time between two enables of one pool.
ENABLE_GAP = timedelta(seconds=30)


def min_interval() -> timedelta:
    return parse_duration(os.environ.get("KILN_MIN_AUTOSCALE_INTERVAL", "PT5M"))


def checked_formula(text: str) -> Formula:
    """The formula, or Batch's 400: too long, a syntax error, or what the language does not have."""
    try:
        return compile_formula(text)
    except FormulaTooLong as exc:
        raise BadRequest(str(exc), code="AutoScalingFormulaTooLong") from None
    except FormulaSyntaxError as exc:
        raise BadRequest(
            "The specified auto-scaling formula has a syntax error.",
            code="AutoScalingFormulaSyntaxError",
            values={"Message": str(exc)},
        ) from None


def checked_interval(text: str | None) -> timedelta:
    """autoScaleEvaluationInterval within 5 minutes (or KILN_MIN_AUTOSCALE_INTERVAL) and 168 hours, else 400."""
    try:
        value = parse_duration(text or DEFAULT_INTERVAL)
    except (ValueError, OverflowError):  # isodate's ISO8601Error is a ValueError; OverflowError: P99999999999D
        raise InvalidPropertyValue(
            "autoScaleEvaluationInterval", text, "The value is not a valid ISO 8601 duration."
        ) from None
    low = min_interval()
    if not low <= value <= MAX_INTERVAL:
        reason = f"The interval must be from {format_duration(low)} to {format_duration(MAX_INTERVAL)}."
        raise InvalidPropertyValue("autoScaleEvaluationInterval", text, reason)
    return value


def first_run(control: Control, doc: dict[str, Any]) -> Run:
    """A new autoscale pool's (materialized) spec, checked: the evaluation that sizes it, recorded in it."""
    formula = checked_formula(doc["autoScaleFormula"])
    checked_interval(doc["autoScaleEvaluationInterval"])
    run = control.scheduler.first_autoscale_run(formula)
    doc["autoScaleRun"] = run.doc(format_time)
    return run


def arm(control: Control, row: Row) -> None:
    """A new autoscale pool evaluates its formula every interval from now on."""
    spec = row["spec"]
    interval = parse_duration(spec["autoScaleEvaluationInterval"])
    control.scheduler.autoscale_enabled(row["key"], compile_formula(spec["autoScaleFormula"]), interval)


async def enable(
    control: Control, pool_id: str, formula_text: str | None, interval_text: str | None, check: Check
) -> Row:
    """Start (or change) autoscale: store the settings, evaluate at once, then every interval."""
    if formula_text is None and interval_text is None:
        raise BadRequest(
            "Specify autoScaleFormula, autoScaleEvaluationInterval or both.", code="InvalidAutoScalingSettings"
        )
    formula = checked_formula(formula_text) if formula_text is not None else None
    interval = checked_interval(interval_text) if interval_text is not None else None

    def write(conn: Connection) -> Row:
        row = pools.load(conn, pool_id)
        check(row)
        pools.check_not_deleting(row)
        spec = row["spec"]
        if row["allocation_state"] != AllocationState.STEADY:
            raise Conflict("The pool is resizing; wait until its allocation state is steady.", code="PoolBeingResized")
        if not spec.get("enableAutoScale") and formula is None:
            raise BadRequest(
                "The pool does not have autoscale enabled: specify autoScaleFormula to enable it.",
                code="InvalidAutoScalingSettings",
            )
        last = control.scheduler.last_enable(row["key"])
        if last is not None and now() - last < ENABLE_GAP:
            raise KilnError(
                "Enable autoscale requests for the same pool must be at least 30 seconds apart.",
                code="TooManyEnableAutoScaleRequests",
                status=503,
            )
        changes = {
            "enableAutoScale": True,
            "autoScaleFormula": formula_text if formula is not None else spec["autoScaleFormula"],
            "autoScaleEvaluationInterval": format_duration(
                interval or parse_duration(spec.get("autoScaleEvaluationInterval") or DEFAULT_INTERVAL)
            ),
        }
        return _change_spec(conn, row, changes)

    row = await control.database.write(write)
    control.scheduler.autoscale_enabled(
        row["key"],
        formula or compile_formula(row["spec"]["autoScaleFormula"]),
        parse_duration(row["spec"]["autoScaleEvaluationInterval"]),
        arm=interval is not None,
        request=True,
    )
    await control.scheduler.run_autoscale(row["key"])
    return row


async def disable(control: Control, pool_id: str, check: Check) -> Row:
    """Stop autoscale; the pool keeps its current targets."""

    def write(conn: Connection) -> Row:
        row = pools.load(conn, pool_id)
        check(row)
        pools.check_not_deleting(row)
        spec = {k: v for k, v in row["spec"].items() if k not in ("autoScaleFormula", "autoScaleEvaluationInterval")}
        return _change_spec(conn, {**row, "spec": spec}, {"enableAutoScale": False})

    row = await control.database.write(write)
    control.scheduler.autoscale_disabled(row["key"])
    return row


async def evaluate(control: Control, pool_id: str, formula_text: str) -> Run:
    """The formula's run on the pool as it is now; applies nothing, stores nothing."""
    formula = checked_formula(formula_text)
    row, _ = await pools.get(control, pool_id)
    if not row["spec"].get("enableAutoScale"):
        raise Conflict("You can't evaluate an autoscale formula on a pool without autoscale enabled.")
    return control.scheduler.evaluate_autoscale(row["key"], formula)


def _change_spec(conn: Connection, row: Row, changes: dict[str, Any]) -> Row:
    spec = {**row["spec"], **changes}
    db.change(conn, db.pools, {"key": row["key"]}, {"spec": spec, "last_modified": now()}, bump_etag=True)
    return db.reread(conn, db.pools, key=row["key"])


def check_not_autoscaled(row: Row) -> None:
    """Resize and remove nodes are for pools sized by hand: an autoscale pool answers 409."""
    if row["spec"].get("enableAutoScale"):
        raise Conflict(
            "The pool has autoscale enabled: its formula sets its size. Disable autoscale before resizing it.",
            code="OperationInvalidForCurrentState",
        )
