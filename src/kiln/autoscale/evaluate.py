"""Checking and running a formula against a pool's observations; the AutoScaleRun it yields (batch-semantics-2 §4.6).

Choices where the documentation is silent (docs/compatibility.md lists them): type errors, unknown variables
and division by zero fail at evaluation (in `autoScaleRun.error`), not at create/enable; `stop()` keeps the
assignments made before it; the legacy aliases read and write the same targets, and a fully named assignment
wins over its alias's.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kiln.autoscale import functions
from kiln.autoscale.functions import EvaluationError
from kiln.autoscale.samples import METRICS, History, InsufficientSamples
from kiln.autoscale.syntax import (
    MAX_BYTES,
    MAX_STATEMENTS,
    Assignment,
    Binary,
    Call,
    Conditional,
    Expr,
    Formula,
    FormulaSyntaxError,
    Member,
    Method,
    Name,
    Number,
    Position,
    String,
    Unary,
    parse,
)
from kiln.autoscale.values import (
    INTERVALS,
    DeallocationOption,
    Metric,
    TimeInterval,
    Value,
    Vector,
    format_value,
    type_name,
)

DEDICATED, LOW_PRIORITY, DEALLOCATION = "$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption"
#: Legacy names of the targets.
ALIASES = {"$TargetDedicated": DEDICATED, "$TargetLowPriority": LOW_PRIORITY}
WRITABLE = {DEDICATED, LOW_PRIORITY, DEALLOCATION, *ALIASES}
#: Read-only service variables that are plain doubles.
SCALARS = (
    "$CurrentDedicatedNodes",
    "$CurrentLowPriorityNodes",
    "$PreemptedNodeCount",
    "$UsableNodeCount",
    "$TaskSlotsPerNode",
)
READ_ONLY = {*SCALARS, *METRICS}
#: What has samples: the metrics, and $PreemptedNodeCount, which reads as a double but is sampled too.
SAMPLED = {*METRICS, "$PreemptedNodeCount"}
#: The sample methods, with the number of arguments each takes.
METHODS: dict[str, tuple[int, int | None]] = {
    "GetSample": (1, 3),
    "GetSamplePercent": (1, 2),
    "GetSamplePeriod": (0, 0),
    "Count": (0, 0),
    "HistoryBeginTime": (0, 0),
}
MEMBERS = ("year", "month", "day", "weekday", "hour", "minute", "second")


class FormulaTooLong(Exception):
    """The formula is longer than Batch's 8 KB."""


# ---------------------------------------------------------------------------------------------- checks
def compile_formula(text: str) -> Formula:
    """A formula fit to store: at most 8 KB and 100 statements, parsed, and using only what the language has."""
    if len(text.encode()) > MAX_BYTES:
        raise FormulaTooLong(f"The formula is {len(text.encode())} bytes long; the limit is {MAX_BYTES}.")
    formula = parse(text)
    if len(formula.statements) > MAX_STATEMENTS:
        raise FormulaSyntaxError(
            f"The formula has {len(formula.statements)} statements; the limit is {MAX_STATEMENTS}.",
            formula.statements[MAX_STATEMENTS].at,
        )
    if not formula.statements:
        raise FormulaSyntaxError("The formula has no statement.", (1, 1))
    for statement in formula.statements:
        if statement.name in READ_ONLY:
            raise FormulaSyntaxError(f"{statement.name} is a read-only service variable.", statement.at)
        _check(statement.value)
    return formula


def _check(node: Expr) -> None:
    match node:
        case Call(function, args, at):
            _check_arity(function, args, functions.ARITY.get(function), at, "function")
        case Method(_, method, args, at):
            _check_arity(method, args, METHODS.get(method), at, "method")
        case Member(_, member, at) if member not in MEMBERS:
            raise FormulaSyntaxError(f"A timestamp has no member {member}; it has {', '.join(MEMBERS)}.", at)
    for child in _children(node):
        _check(child)


def _check_arity(name: str, args: tuple[Expr, ...], arity: tuple[int, int | None] | None, at: Position, kind: str):
    if arity is None:
        raise FormulaSyntaxError(f"Unknown {kind} {name}.", at)
    low, high = arity
    if len(args) < low or (high is not None and len(args) > high):
        wanted = str(low) if low == high else f"{low} to {high}" if high is not None else f"at least {low}"
        raise FormulaSyntaxError(f"{name} takes {wanted} arguments, not {len(args)}.", at)


def _children(node: Expr) -> tuple[Expr, ...]:
    match node:
        case Unary(_, operand):
            return (operand,)
        case Binary(_, left, right):
            return (left, right)
        case Conditional(test, then, otherwise):
            return (test, then, otherwise)
        case Call(_, args):
            return args
        case Method(target, _, args):
            return (target, *args)
        case Member(target, _):
            return (target,)
    return ()


# ---------------------------------------------------------------------------------------------- a run
@dataclass(frozen=True, slots=True)
class Observations:
    """What the service variables read at one evaluation."""

    now: datetime
    target_dedicated: int
    target_low_priority: int = 0
    current_dedicated: int = 0
    current_low_priority: int = 0
    preempted: int = 0
    usable: int = 0
    slots_per_node: int = 1


@dataclass(frozen=True, slots=True)
class RunError:
    """autoScaleRun.error."""

    code: str
    message: str
    values: tuple[tuple[str, str], ...] = ()

    def doc(self) -> dict:
        doc: dict = {"code": self.code, "message": self.message}
        if self.values:
            doc["values"] = [{"name": name, "value": value} for name, value in self.values]
        return doc


@dataclass(frozen=True, slots=True)
class Run:
    """One evaluation: the autoScaleRun it reports and the targets it asks for (the current ones on error)."""

    timestamp: datetime
    results: str
    error: RunError | None
    target_dedicated: int
    target_low_priority: int
    deallocation_option: DeallocationOption

    def doc(self, format_time: Callable[[datetime], str | None]) -> dict:
        doc: dict = {"timestamp": format_time(self.timestamp), "results": self.results}
        if self.error is not None:
            doc["error"] = self.error.doc()
        return doc


class _Stop(Exception):
    """stop() was called."""


@dataclass
class _Scope:
    seen: Observations
    history: History
    rand: Callable[[], float]
    assigned: dict[str, Value] = field(default_factory=dict)

    def read(self, node: Name) -> Value:
        name = node.name
        if name in self.assigned:
            return self.assigned[name]
        if name in ALIASES or name in (DEDICATED, LOW_PRIORITY):
            full = ALIASES.get(name, name)
            current = self.seen.target_dedicated if full == DEDICATED else self.seen.target_low_priority
            return _target_value(self.assigned, full, float(current))
        if name == DEALLOCATION:
            return DeallocationOption.REQUEUE
        if name in METRICS:
            return Metric(name)
        if name in INTERVALS:
            return INTERVALS[name]
        if name in SCALARS:
            return float(self._scalar(name))
        if name in DeallocationOption.__members__.values():
            return DeallocationOption(name)
        raise EvaluationError(f"{name} is not defined.")

    def _scalar(self, name: str) -> int:
        seen = self.seen
        return {
            "$CurrentDedicatedNodes": seen.current_dedicated,
            "$CurrentLowPriorityNodes": seen.current_low_priority,
            "$PreemptedNodeCount": seen.preempted,
            "$UsableNodeCount": seen.usable,
            "$TaskSlotsPerNode": seen.slots_per_node,
        }[name]


def evaluate(formula: Formula, seen: Observations, history: History, rand: Callable[[], float] = random.random) -> Run:
    """Run every statement in order; a failure stops the run and leaves the targets as they are."""
    scope = _Scope(seen, history, rand)
    error: RunError | None = None
    for statement in formula.statements:
        try:
            scope.assigned[statement.name] = _assigned(statement, _value(statement.value, scope))
        except _Stop:
            break
        except InsufficientSamples as exc:
            error = _error("InsufficientSampleData", "insufficient sample data", exc, _where(exc, statement))
            break
        except EvaluationError as exc:
            error = _error("AutoScalingFormulaEvaluationError", "an error in the formula", exc, _where(exc, statement))
            break
        except (OverflowError, ValueError) as exc:  # an infinity or NaN where a whole number must be (a sample
            # count, round()), a timestamp past year 9999: the formula's error, not the service's
            out = EvaluationError(f"A value is out of range: {exc}.")
            error = _error("AutoScalingFormulaEvaluationError", "an error in the formula", out, statement.at)
            break
    return _run(scope, error)


def _error(code: str, cause: str, exc: Exception, where: Position) -> RunError:
    detail = f"Line {where[0]}, Col {where[1]}: {exc}"
    return RunError(code, f"Autoscale evaluation failed due to {cause}", (("Message", detail),))


def _where(exc: Exception, statement: Assignment) -> Position:
    return getattr(exc, "at", None) or statement.at


def _assigned(statement: Assignment, value: Value) -> Value:
    if isinstance(value, Metric):
        raise EvaluationError(f"{value.name} is sampled: assign one of its methods' results, such as GetSample(1).")
    name = statement.name
    if name == DEALLOCATION and not isinstance(value, DeallocationOption):
        options = " | ".join(DeallocationOption)
        raise EvaluationError(f"{DEALLOCATION} takes {options}, not a {type_name(value)}.")
    if name in ALIASES or name in (DEDICATED, LOW_PRIORITY):
        if not isinstance(value, float):
            raise EvaluationError(f"{name} takes a double, not a {type_name(value)}.")
    return value


def _run(scope: _Scope, error: RunError | None) -> Run:
    assigned, seen = scope.assigned, scope.seen
    dedicated, low_priority = seen.target_dedicated, seen.target_low_priority
    if error is None:
        dedicated = _target(assigned, DEDICATED, dedicated)
        low_priority = _target(assigned, LOW_PRIORITY, low_priority)
    option = assigned.get(DEALLOCATION, DeallocationOption.REQUEUE)
    assert isinstance(option, DeallocationOption)
    parts = [f"{DEDICATED}={dedicated}", f"{LOW_PRIORITY}={low_priority}", f"{DEALLOCATION}={option}"]
    users = sorted((name for name in assigned if name not in WRITABLE), key=lambda n: (n.lstrip("$").lower(), n))
    parts += [f"${name.lstrip('$')}={format_value(assigned[name])}" for name in users]
    return Run(seen.now, ";".join(parts), error, dedicated, low_priority, option)


def _target_value(assigned: dict[str, Value], full: str, current: float) -> Value:
    """The fully named variable wins over its alias; unassigned, a target reads as the pool's current one."""
    alias = next(a for a, f in ALIASES.items() if f == full)
    return assigned.get(full, assigned.get(alias, current))


#: The largest target: node counts are int32 in Batch's REST API (kiln.wire.models.TARGET_NODES_MAX).
TARGET_MAX = 2**31 - 1


def _target(assigned: dict[str, Value], full: str, current: int) -> int:
    """A target is truncated to an integer from 0 to TARGET_MAX (0.5 → 0); an infinite or NaN one changes
    nothing."""
    value = _target_value(assigned, full, float(current))
    assert isinstance(value, float)
    return min(max(0, int(value)), TARGET_MAX) if math.isfinite(value) else current


# ---------------------------------------------------------------------------------------------- expressions
def _value(node: Expr, scope: _Scope) -> Value:
    try:
        return _compute(node, scope)
    except (EvaluationError, InsufficientSamples) as exc:
        if not hasattr(exc, "at"):
            exc.at = node.at  # type: ignore[union-attr]  # the innermost node that failed
        raise


def _compute(node: Expr, scope: _Scope) -> Value:
    match node:
        case Number(value):
            return value
        case String(value):
            return value
        case Name():
            return scope.read(node)
        case Unary(op, operand):
            return _unary(op, _value(operand, scope))
        case Binary("&&" | "||" as op, left, right):
            return _logical(op, left, right, scope)
        case Binary(op, left, right):
            return binary(op, _value(left, scope), _value(right, scope))
        case Conditional(test, then, otherwise):
            return _value(then if _truth(_value(test, scope), "?:") else otherwise, scope)
        case Call(function, args):
            return _call(function, [_value(arg, scope) for arg in args], scope)
        case Method(Name(name), method, args) if name in SAMPLED:
            return _method(Metric(name), method, [_value(arg, scope) for arg in args], scope)
        case Method(target, method, args):
            return _method(_value(target, scope), method, [_value(arg, scope) for arg in args], scope)
        case Member(target, member):
            return _member(_value(target, scope), member)
    raise EvaluationError(f"cannot evaluate {node!r}")


def _truth(value: Value, where: str) -> bool:
    if not isinstance(value, float):
        raise EvaluationError(f"{where} takes a double condition, not a {type_name(value)}.")
    return value != 0


def _logical(op: str, left: Expr, right: Expr, scope: _Scope) -> float:
    first = _truth(_value(left, scope), op)
    if op == "&&" and not first:
        return 0.0
    if op == "||" and first:
        return 1.0
    return float(_truth(_value(right, scope), op))


def _unary(op: str, value: Value) -> Value:
    if op == "-" and isinstance(value, float):
        return -value
    if op == "-" and isinstance(value, TimeInterval):
        return TimeInterval(-value.ticks)
    if op == "!" and isinstance(value, float):
        return float(value == 0)
    raise EvaluationError(f"Operator {op} does not apply to a {type_name(value)}.")


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    ">=": operator.ge,
    ">": operator.gt,
    "!=": operator.ne,
}


def binary(op: str, left: Value, right: Value) -> Value:
    """The operator table of batch-semantics-2 §4.2 (and double ∘ doubleVec, the mirror of doubleVec ∘ double)."""
    if op in _COMPARISONS:
        return _compare(op, left, right)
    if op == "/" and _is_zero(right):
        raise EvaluationError("Division by zero.")
    result = _arithmetic(op, left, right)
    if result is None:
        raise EvaluationError(f"Operator {op} does not apply to a {type_name(left)} and a {type_name(right)}.")
    return result


def _is_zero(value: Value) -> bool:
    return (isinstance(value, float) and value == 0) or (isinstance(value, Vector) and 0 in value.values)


def _arithmetic(op: str, left: Value, right: Value) -> Value | None:
    apply = _ARITHMETIC[op]
    match left, right:
        case float(), float():
            return apply(left, right)
        case Vector() | float(), Vector() | float():
            return _vectors(op, left, right)
        case (float(), TimeInterval()) if op == "*":
            return _interval(left * right.ticks)
        case (TimeInterval(), float()) if op in "*/":
            return _interval(apply(left.ticks, right))
        case (TimeInterval(), TimeInterval()) if op in "+-":
            return _interval(left.ticks + right.ticks if op == "+" else left.ticks - right.ticks)
        case (TimeInterval(), datetime()) if op == "+":
            return right + left.delta()
        case (datetime(), TimeInterval()) if op == "+":
            return left + right.delta()
        case (datetime(), datetime()) if op == "-":
            return TimeInterval.of(left - right)
    return None


#: A timeinterval is .NET's TimeSpan: a signed 64-bit count of ticks.
MAX_TICKS = 2**63 - 1


def _interval(ticks: float) -> TimeInterval:
    """A computed timeinterval; one past TimeSpan's range (or not a number) fails the formula, as on Azure."""
    if not math.isfinite(ticks) or abs(ticks) > MAX_TICKS:
        raise EvaluationError("The timeinterval is out of range.")
    return TimeInterval(round(ticks))


def _vectors(op: str, left: Vector | float, right: Vector | float) -> Vector:
    apply = _ARITHMETIC[op]
    if isinstance(left, Vector) and isinstance(right, Vector):
        if len(left.values) != len(right.values):
            raise EvaluationError(
                f"Operator {op} needs doubleVecs of one length, not {len(left.values)} and {len(right.values)}."
            )
        return Vector(tuple(apply(a, b) for a, b in zip(left.values, right.values, strict=True)))
    if isinstance(left, Vector):
        return Vector(tuple(apply(a, float(right)) for a in left.values))  # type: ignore[arg-type]
    return Vector(tuple(apply(left, b) for b in right.values))  # type: ignore[union-attr]


def _compare(op: str, left: Value, right: Value) -> float:
    comparable = (float, str, datetime, TimeInterval)
    kinds = {type(left), type(right)}
    same = len(kinds) == 1 or all(issubclass(kind, str) for kind in kinds)
    if not (same and isinstance(left, comparable)):
        raise EvaluationError(f"Operator {op} does not compare a {type_name(left)} and a {type_name(right)}.")
    return float(_COMPARISONS[op](left, right))


def _call(function: str, args: list[Value], scope: _Scope) -> Value:
    if function in functions.AGGREGATES:
        return functions.AGGREGATES[function](functions.doubles(args, function))
    if function in functions.ELEMENTWISE:
        return functions.elementwise(function, args)
    match function:
        case "percentile":
            return functions.percentile(args)
        case "val":
            return functions.val(args)
        case "time":
            return functions.time(args, scope.seen.now)
        case "rand":
            return scope.rand()
        case "stop":
            raise _Stop()
    raise EvaluationError(f"Unknown function {function}.")


def _member(value: Value, member: str) -> float:
    if not isinstance(value, datetime):
        raise EvaluationError(f"Only a timestamp has .{member}, not a {type_name(value)}.")
    if member == "weekday":
        return float(value.isoweekday())
    return float(getattr(value, member))


def _method(target: Value, method: str, args: list[Value], scope: _Scope) -> Value:
    if not isinstance(target, Metric):
        raise EvaluationError(f"Only a sampled service variable has .{method}(), not a {type_name(target)}.")
    history, metric, now = scope.history, target.name, scope.seen.now
    match method:
        case "GetSamplePeriod":
            return TimeInterval.of(history.period)
        case "Count":
            return float(history.count(metric))
        case "HistoryBeginTime":
            begin = history.begin(metric)
            if begin is None:
                raise InsufficientSamples(metric, 100.0, 0.0)
            return begin
        case "GetSamplePercent":
            start, end = _window(args, now)
            return history.window(metric, start, end)[1]
    return _get_sample(metric, args, scope)


def _get_sample(metric: str, args: list[Value], scope: _Scope) -> Vector:
    """GetSample(n), or GetSample(start[, end][, percent]): fails when fewer samples exist than asked for
    (without a percent, only when the window holds none)."""
    if len(args) == 1 and isinstance(args[0], float):
        return Vector(tuple(scope.history.last(metric, int(args[0]))))
    wanted: float | None = None
    if len(args) >= 2 and isinstance(args[-1], float):
        wanted, args = args[-1], args[:-1]
    start, end = _window(args, scope.seen.now)
    values, percent = scope.history.window(metric, start, end)
    if (wanted is not None and percent < wanted) or (wanted is None and not values):
        raise InsufficientSamples(metric, 100.0 if wanted is None else wanted, percent)
    return Vector(tuple(values))


def _window(args: list[Value], now: datetime) -> tuple[datetime, datetime]:
    """(start, end) of a look-back window: intervals count back from now, timestamps are taken as they are."""
    if not args or len(args) > 2:
        raise EvaluationError("A sample window is a start, and optionally an end, each a timeinterval or timestamp.")
    bounds = [_moment(arg, now) for arg in args] + ([now] if len(args) == 1 else [])
    return bounds[0], bounds[1]


def _moment(value: Value, now: datetime) -> datetime:
    if isinstance(value, TimeInterval):
        return now - value.delta()
    if isinstance(value, datetime):
        return value
    raise EvaluationError(f"A sample window bound is a timeinterval or a timestamp, not a {type_name(value)}.")
