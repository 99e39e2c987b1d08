"""The formula language's functions (batch-semantics-2 §4.3), on values already evaluated.

Choices where the documentation is silent (docs/compatibility.md lists them): `std` is the population
standard deviation; `percentile` interpolates linearly between the closest ranks; `round` rounds half to
even (.NET's Math.Round); a function of an empty list fails, except `len`, `sum` and `norm`.
"""

from __future__ import annotations

import email.utils
import math
import statistics
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from kiln.autoscale.values import Value, Vector, type_name


class EvaluationError(Exception):
    """A formula failed while it ran (a type error, a division by zero, a value out of range)."""


def doubles(args: Sequence[Value], function: str) -> list[float]:
    """A doubleVecList: doubles and vectors, flattened."""
    flat: list[float] = []
    for arg in args:
        if isinstance(arg, float):
            flat.append(arg)
        elif isinstance(arg, Vector):
            flat.extend(arg.values)
        else:
            raise EvaluationError(f"{function}() takes doubles and doubleVecs, not a {type_name(arg)}.")
    return flat


def _nonempty(function: str, reduce: Callable[[list[float]], float]) -> Callable[[list[float]], float]:
    def apply(values: list[float]) -> float:
        if not values:
            raise EvaluationError(f"{function}() of an empty list.")
        return float(reduce(values))

    return apply


def _percentile(values: list[float], p: float) -> float:
    if not 0 <= p <= 100:
        raise EvaluationError(f"percentile() takes a percent from 0 to 100, not {p}.")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


#: doubleVecList → double.
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "avg": _nonempty("avg", statistics.fmean),
    "len": lambda values: float(len(values)),
    "max": _nonempty("max", max),
    "min": _nonempty("min", min),
    "norm": lambda values: math.sqrt(sum(v * v for v in values)),
    "range": _nonempty("range", lambda values: max(values) - min(values)),
    "std": _nonempty("std", statistics.pstdev),
    "sum": lambda values: float(math.fsum(values)),
}


def _logarithm(name: str, log: Callable[[float], float]) -> Callable[[float], float]:
    def apply(value: float) -> float:
        if value <= 0:
            raise EvaluationError(f"{name}() of {value}: the logarithm needs a positive number.")
        return log(value)

    return apply


#: double → double, applied to each element of a vector (lg: base 2, ln: base e, log: base 10).
ELEMENTWISE: dict[str, Callable[[float], float]] = {
    "lg": _logarithm("lg", math.log2),
    "ln": _logarithm("ln", math.log),
    "log": _logarithm("log", math.log10),
    "ceil": lambda value: float(math.ceil(value)),
    "floor": lambda value: float(math.floor(value)),
    "round": lambda value: float(round(value)),
}

#: Every function name a formula may call, with the number of arguments it takes (None: one or more).
ARITY: dict[str, tuple[int, int | None]] = {
    **dict.fromkeys(AGGREGATES, (1, None)),
    **dict.fromkeys(ELEMENTWISE, (1, None)),
    "percentile": (2, 2),
    "rand": (0, 0),
    "stop": (0, 0),
    "time": (0, 1),
    "val": (2, 2),
}


def elementwise(name: str, args: Sequence[Value]) -> Value:
    """One double gives a double; a vector, or several arguments, give a vector."""
    apply = ELEMENTWISE[name]
    if len(args) == 1 and isinstance(args[0], float):
        return apply(args[0])
    return Vector(tuple(apply(value) for value in doubles(args, name)))


def percentile(args: Sequence[Value]) -> float:
    vector, p = args
    values = doubles([vector], "percentile")
    if not isinstance(p, float):
        raise EvaluationError(f"percentile() takes a double percent, not a {type_name(p)}.")
    if not values:
        raise EvaluationError("percentile() of an empty list.")
    return _percentile(values, p)


def val(args: Sequence[Value]) -> float:
    vector, index = args
    if not isinstance(vector, Vector) or not isinstance(index, float):
        raise EvaluationError(f"val() takes a doubleVec and a double, not {type_name(vector)}, {type_name(index)}.")
    position = int(index)
    if not 0 <= position < len(vector.values):
        raise EvaluationError(f"val(): index {position} is outside the doubleVec of {len(vector.values)} values.")
    return vector.values[position]


def time(args: Sequence[Value], now: datetime) -> datetime:
    """time(): now; time(text): a W3C-DTF (ISO 8601) or RFC 1123 date and time, UTC unless it says otherwise."""
    if not args or args[0] == "":
        return now
    text = args[0]
    if not isinstance(text, str):
        raise EvaluationError(f"time() takes a string, not a {type_name(text)}.")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise EvaluationError(f'time(): "{text}" is neither a W3C-DTF nor an RFC 1123 date and time.') from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
