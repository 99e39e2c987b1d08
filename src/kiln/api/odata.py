"""Batch's OData subset: ``$filter`` compiled once to closures over wire JSON, and ``$select``."""

from __future__ import annotations

import calendar
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeAlias

import lark

from kiln.core import filters
from kiln.errors import InvalidQueryParameterValue

#: A compiled ``$filter``: true when the wire JSON entity matches.
Predicate: TypeAlias = Callable[[dict], bool]
#: Property path (``executionInfo/exitCode``) → the operators ``$filter`` may use on it.
Allowed: TypeAlias = Mapping[str, frozenset[str]]
#: a property name (one segment of a path) as the newest api-version names it
Rename: TypeAlias = Callable[[str], str]

_CMP = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_EQ = frozenset({"eq", "ne"})
_ST = frozenset({"startswith"})
_ST_CMP = _CMP | _ST
_STATE = _EQ  # ``ne`` on ``state`` is accepted everywhere, as doc versions differ

POOL_FILTERS: Allowed = MappingProxyType(
    {
        "id": _ST_CMP,
        "state": _STATE,
        "allocationState": frozenset({"eq"}),
        "stateTransitionTime": _CMP,
        "allocationStateTransitionTime": _CMP,
        "creationTime": _CMP,
        "lastModified": _CMP,
        "enableAutoScale": _EQ,
        "enableInterNodeCommunication": _EQ,
        "vmSize": _EQ,
    }
)
NODE_FILTERS: Allowed = MappingProxyType(
    {
        "state": _STATE,
        "stateTransitionTime": _CMP,
        "lastBootTime": _CMP,
        "allocationTime": _CMP,
        "startTaskInfo/state": _STATE,
        "startTaskInfo/result": _EQ,
        "startTaskInfo/exitCode": _CMP,
        "startTaskInfo/startTime": _CMP,
        "startTaskInfo/endTime": _CMP,
    }
)
#: A schedule's jobs (``GET /jobschedules/{s}/jobs``): the job table without ``id``.
SCHEDULE_JOBS_FILTERS: Allowed = MappingProxyType(
    {
        "state": _STATE,
        "stateTransitionTime": _CMP,
        "creationTime": _CMP,
        "lastModified": _CMP,
        "executionInfo/startTime": _CMP,
        "executionInfo/endTime": _CMP,
        "executionInfo/poolId": _ST_CMP,
    }
)
JOB_FILTERS: Allowed = MappingProxyType({"id": _ST_CMP, **SCHEDULE_JOBS_FILTERS})
SCHEDULE_FILTERS: Allowed = MappingProxyType(
    {
        "id": _ST_CMP,
        "state": _STATE,
        "stateTransitionTime": _CMP,
        "creationTime": _CMP,
        "lastModified": _CMP,
        "executionInfo/endTime": _CMP,
        "schedule/doNotRunUntil": _CMP,
        "schedule/doNotRunAfter": _CMP,
    }
)
TASK_FILTERS: Allowed = MappingProxyType(
    {
        "id": _ST_CMP,
        "state": _STATE,
        "stateTransitionTime": _CMP,
        "creationTime": _CMP,
        "lastModified": _CMP,
        "lastModifiedTime": _CMP,
        "executionInfo/startTime": _CMP,
        "executionInfo/endTime": _CMP,
        "executionInfo/exitCode": _CMP,
        "executionInfo/result": _EQ,
    }
)
PREP_RELEASE_FILTERS: Allowed = MappingProxyType(
    {
        "poolId": _EQ,
        "nodeId": _EQ,
        **{
            f"{info}/{name}": ops
            for info in ("jobPreparationTaskExecutionInfo", "jobReleaseTaskExecutionInfo")
            for name, ops in {
                "state": _STATE,
                "startTime": _CMP,
                "endTime": _CMP,
                "exitCode": _CMP,
                "result": _EQ,
            }.items()
        },
    }
)
FILE_FILTERS: Allowed = MappingProxyType({"name": _ST})
NODE_COUNT_FILTERS: Allowed = MappingProxyType({"poolId": frozenset({"eq"})})
USAGE_METRICS_FILTERS: Allowed = MappingProxyType({"poolId": _ST_CMP})
IMAGE_FILTERS: Allowed = MappingProxyType({"osType": _EQ, "verificationType": _EQ, "nodeAgentSKUId": _EQ})

#: Filter names that differ from the wire name (old docs spell ``lastModified`` so).
WIRE_NAMES: Mapping[str, str] = MappingProxyType({"lastModifiedTime": "lastModified"})
#: Last path segments holding enums (or Azure names) that compare ignoring case.
CASELESS: frozenset[str] = frozenset(
    {"state", "allocationState", "result", "vmSize", "osType", "verificationType", "nodeAgentSKUId"}
)
#: Last path segments holding times that are not named ``…Time``.
_TIME_NAMES = frozenset({"lastModified", "doNotRunUntil", "doNotRunAfter"})
_MAX_DEPTH = 50

_GRAMMAR = r"""
start: or_expr
?or_expr: and_expr
        | and_expr (_OR and_expr)+      -> any_of
?and_expr: not_expr
         | not_expr (_AND not_expr)+    -> all_of
?not_expr: _NOT not_expr                -> negate
         | atom
?atom: comparison
     | startswith
     | "(" or_expr ")"
comparison: PROPERTY OPERATOR literal
startswith: _STARTSWITH "(" PROPERTY "," STRING ")" (OPERATOR BOOLEAN)?
?literal: STRING | INTEGER | BOOLEAN | DATETIME | NULL

_OR: "or"i
_AND: "and"i
_NOT: "not"i
_STARTSWITH: "startswith"i
OPERATOR: "eq"i | "ne"i | "gt"i | "ge"i | "lt"i | "le"i
BOOLEAN: "true"i | "false"i
NULL: "null"i
PROPERTY: /[A-Za-z_][A-Za-z0-9_]*(\/[A-Za-z_][A-Za-z0-9_]*)*/
STRING: /'([^']|'')*'/
DATETIME.2: /datetime'[^']*'/i
INTEGER: /-?[0-9]+/

%ignore /[ \t\r\n]+/
"""

# Human names for the grammar's terminals, used in syntax error reasons.
_TERMINALS = {
    "_OR": "'or'",
    "_AND": "'and'",
    "_NOT": "'not'",
    "_STARTSWITH": "'startswith'",
    "OPERATOR": "an operator (eq, ne, gt, ge, lt, le)",
    "BOOLEAN": "true or false",
    "NULL": "null",
    "PROPERTY": "a property name",
    "STRING": "a quoted string",
    "DATETIME": "datetime'…'",
    "INTEGER": "an integer",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "$END": "end of the filter",
}


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=False)


def _same(name: str) -> str:
    return name


def compile_filter(text: str, allowed: Allowed, rename: Rename = _same) -> Predicate:
    """Parse and check ``$filter`` once per request; the result is cheap to run per entity.

    rename: a property name of the client's api-version as the newest names it (versioning.filter_names):
    an older client filters by its own names; its errors name them as it wrote them."""
    if not text or not text.strip():
        return _always
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise _invalid(text, _syntax_reason(text, exc)) from None
    if _depth(tree) > _MAX_DEPTH:
        raise _invalid(text, f"The filter nests more than {_MAX_DEPTH} levels deep.")
    try:
        return _Compiler(text, allowed, rename).transform(tree)
    except lark.exceptions.VisitError as exc:
        raise exc.orig_exc from None


def apply_select(doc: dict, select: str | None) -> dict:
    """Keep only the ``$select``-ed top-level properties (and ``odata.*`` annotations)."""
    names = {name.strip().lower() for name in (select or "").split(",") if name.strip()}
    if not names or "*" in names:
        return doc
    return {key: value for key, value in doc.items() if key.lower() in names or key.startswith("odata.")}


def _always(doc: dict) -> bool:
    return True


def _invalid(text: str, reason: str) -> InvalidQueryParameterValue:
    return InvalidQueryParameterValue("$filter", text, reason)


def _syntax_reason(text: str, exc: lark.exceptions.UnexpectedInput) -> str:
    position = getattr(exc, "column", None)
    at = f" at character {position}" if isinstance(position, int) and position > 0 else ""
    if isinstance(exc, lark.exceptions.UnexpectedEOF) or getattr(getattr(exc, "token", None), "type", "") == "$END":
        at = ""
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        char = exc.char  # the character at exc.pos_in_stream, which lark types as None
        found = '"\'" (an unterminated string?)' if char == "'" else f'"{char}"'
        expected = exc.allowed
    elif isinstance(exc, lark.exceptions.UnexpectedToken):
        found = "end of the filter" if exc.token.type == "$END" else f'"{exc.token}"'
        expected = exc.expected
    else:
        found, expected = "end of the filter", getattr(exc, "expected", set())
    wanted = sorted({_TERMINALS.get(name, name) for name in expected or ()})
    hint = f"; expected {', '.join(wanted)}" if wanted else ""
    return (
        f"Syntax error{at}: unexpected {found}{hint}. The filter must be comparisons such as "
        "\"state eq 'active'\" or startswith(id,'x') joined by and, or, not and parentheses."
    )


def _depth(tree: lark.Tree) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node.children if isinstance(child, lark.Tree))
    return deepest


_OPERATORS: Mapping[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


class _Compiler(lark.Transformer):
    """Turns the parse tree into nested closures, checking properties and operators on the way."""

    def __init__(self, text: str, allowed: Allowed, rename: Rename) -> None:
        super().__init__()
        self._text = text
        self._allowed = allowed
        self._by_lower = {name.lower(): name for name in allowed}
        self._rename = rename

    def start(self, children: list[Predicate]) -> Predicate:
        return children[0]

    def any_of(self, children: list[Predicate]) -> Predicate:
        if len(children) == 2:
            first, second = children
            return lambda doc: first(doc) or second(doc)
        parts = tuple(children)
        return lambda doc: any(part(doc) for part in parts)

    def all_of(self, children: list[Predicate]) -> Predicate:
        if len(children) == 2:
            first, second = children
            return lambda doc: first(doc) and second(doc)
        parts = tuple(children)
        return lambda doc: all(part(doc) for part in parts)

    def negate(self, children: list[Predicate]) -> Predicate:
        inner = children[0]
        return lambda doc: not inner(doc)

    def comparison(self, children: list[lark.Token]) -> Predicate:
        prop, op_token, literal = children
        op = op_token.lower()
        path = self._property(prop, op)
        return _compare(path, op, self._literal(path, op, literal))

    def startswith(self, children: list[lark.Token]) -> Predicate:
        prop, prefix_token, *suffix = children
        path = self._property(prop, "startswith")
        prefix = _unquote(prefix_token)
        get = _getter(path)
        caseless = _last(path) in CASELESS
        if caseless:
            prefix = prefix.lower()
        wanted = self._startswith_outcome(suffix)

        def starts(doc: dict) -> bool:
            value = get(doc)
            if not isinstance(value, str):
                return not wanted  # a missing value does not start with anything
            return (value.lower() if caseless else value).startswith(prefix) == wanted

        return starts

    def _startswith_outcome(self, suffix: list[lark.Token]) -> bool:
        """``startswith(p,'x') eq true`` (or ``ne false``) is the plain call; ``eq false`` negates it."""
        if not suffix:
            return True
        op, boolean = (str(token).lower() for token in suffix)
        if op not in _EQ:
            raise _invalid(self._text, f"startswith(...) can only be compared with eq or ne, not '{op}'.")
        return (boolean == "true") == (op == "eq")

    def _property(self, token: lark.Token, op: str) -> str:
        path = self._by_lower.get("/".join(self._rename(part) for part in str(token).split("/")).lower())
        if path is None:
            known = ", ".join(sorted(self._allowed)) or "none"
            raise _invalid(
                self._text,
                f"The property '{token}' cannot be used in $filter on this list. Filterable properties: {known}.",
            )
        ops = self._allowed[path]
        if op not in ops:
            raise _invalid(
                self._text,
                f"The operator '{op}' is not allowed on property '{path}'. "
                f"Allowed operators: {', '.join(_ordered(ops))}.",
            )
        return path

    def _literal(self, path: str, op: str, token: lark.Token) -> _Literal:
        literal = _parse_literal(token)
        if _is_time(path) and literal.kind == "string":
            ticks = _time_key(literal.value)
            if ticks is None:
                raise _invalid(
                    self._text,
                    f"The property '{path}' is a time; '{literal.value}' is not an "
                    "ISO 8601 time such as '2024-01-01T00:00:00Z'.",
                )
            literal = _Literal("time", ticks)
        if _is_time(path) and literal.kind not in ("time", "null"):
            raise _invalid(
                self._text,
                f"The property '{path}' is a time; compare it with a quoted ISO 8601 "
                f"time or datetime'2024-01-01T00:00:00Z', not {token}.",
            )
        if literal.kind == "null" and op not in _EQ:
            raise _invalid(self._text, f"null can only be compared with eq or ne, not '{op}'.")
        if literal.kind == "time" and literal.value is None:
            raise _invalid(self._text, f"{token} is not a valid ISO 8601 time such as datetime'2024-01-01T00:00:00Z'.")
        return literal


@dataclass(frozen=True, slots=True)
class _Literal:
    """A typed constant from the filter text."""

    #: ``string``, ``int``, ``bool``, ``time`` (100 ns ticks since the epoch) or ``null``.
    kind: str
    value: Any


def _parse_literal(token: lark.Token) -> _Literal:
    text = str(token)
    if token.type == "STRING":
        return _Literal("string", _unquote(text))
    if token.type == "INTEGER":
        return _Literal("int", int(text))
    if token.type == "BOOLEAN":
        return _Literal("bool", text.lower() == "true")
    if token.type == "DATETIME":
        return _Literal("time", _time_key(text[text.index("'") + 1 : -1]))
    return _Literal("null", None)


def _compare(path: str, op: str, literal: _Literal) -> Predicate:
    get = _getter(path)
    if literal.kind == "null":
        want_missing = op == "eq"
        return lambda doc: (get(doc) is None) == want_missing
    coerce = _COERCE[literal.kind]
    if literal.kind == "string" and _last(path) in CASELESS:
        coerce, constant = _caseless, literal.value.lower()
    else:
        constant = literal.value
    test = _OPERATORS[op]
    missing = op == "ne"

    def compare(doc: dict) -> bool:
        value = coerce(get(doc))
        if value is None:
            return missing
        return test(value, constant)

    return compare


def _getter(path: str) -> Callable[[dict], Any]:
    parts = tuple(WIRE_NAMES.get(part, part) for part in path.split("/"))
    if len(parts) == 1:
        (key,) = parts
        return lambda doc: doc.get(key)
    if len(parts) == 2:
        outer, inner = parts

        def get_nested(doc: dict) -> Any:
            child = doc.get(outer)
            return child.get(inner) if isinstance(child, dict) else None

        return get_nested

    def get_deep(doc: dict) -> Any:
        value: Any = doc
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get_deep


def _as_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _caseless(value: Any) -> str | None:
    text = _as_string(value)
    return None if text is None else text.lower()


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):  # int64 values travel as JSON strings
        try:
            return int(value)
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _as_time(value: Any) -> int | None:
    if isinstance(value, str):
        return _time_key(value)
    if isinstance(value, datetime):
        return _datetime_key(value)
    return None


_COERCE: Mapping[str, Callable[[Any], Any]] = {
    "string": _as_string,
    "int": _as_int,
    "bool": _as_bool,
    "time": _as_time,
}

_TIME = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?\s*(Z|z|[+-]\d{2}:?\d{2})?\s*"
)
#: The form the wire uses (``2026-11-25T20:10:00.1234567Z``), parsed by slicing on the hot path.
_WIRE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?Z")
_TICKS_PER_SECOND = 10_000_000


def _time_key(text: str) -> int | None:
    """100 ns ticks since the epoch (UTC), so 7-digit fractions compare exactly; None if not a time."""
    if _WIRE_TIME.fullmatch(text):
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
        day = _day_seconds(text[:10])
        if day is None or hour > 23 or minute > 59 or second > 59:
            return None
        return (day + hour * 3600 + minute * 60 + second) * _TICKS_PER_SECOND + int(text[20:-1].ljust(7, "0"))
    return _iso_time_key(text)


@functools.lru_cache(maxsize=1024)
def _day_seconds(date: str) -> int | None:
    try:
        day = datetime.strptime(date, "%Y-%m-%d")
    except ValueError:
        return None
    return calendar.timegm(day.timetuple())


def _iso_time_key(text: str) -> int | None:
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    fields = (int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    try:
        datetime(*fields)
    except ValueError:
        return None
    seconds = calendar.timegm((*fields, 0, 0, 0))
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "+" else 1
        digits = zone[1:].replace(":", "")
        seconds += sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * _TICKS_PER_SECOND + int((fraction or "0")[:7].ljust(7, "0"))


def _datetime_key(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta // timedelta(microseconds=1)) * 10


def _unquote(token: str) -> str:
    return token[1:-1].replace("''", "'")


def _last(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _is_time(path: str) -> bool:
    name = WIRE_NAMES.get(_last(path), _last(path))
    return name.endswith("Time") or name in _TIME_NAMES


def _ordered(ops: frozenset[str]) -> list[str]:
    order = ["eq", "ne", "gt", "ge", "lt", "le", "startswith"]
    return sorted(ops, key=lambda op: order.index(op) if op in order else len(order))


def filter_terms(text: str, allowed: Allowed, rename: Rename = _same) -> filters.Term | None:
    """The filter as data (None: no filter), checked as `compile_filter` checks it, for a store to serve by index."""
    if not text or not text.strip():
        return None
    compile_filter(text, allowed, rename)  # errors as for any other use of the filter
    return _Terms(text, allowed, rename).transform(_parser().parse(text))


class _Terms(_Compiler):
    """The parse tree as kiln.core.filters terms, with literals typed as the predicates type them."""

    def start(self, children: list[Any]) -> Any:
        return children[0]

    def any_of(self, children: list[Any]) -> Any:
        return filters.AnyOf(tuple(children))

    def all_of(self, children: list[Any]) -> Any:
        return filters.AllOf(tuple(children))

    def negate(self, children: list[Any]) -> Any:
        return filters.Not(children[0])

    def comparison(self, children: list[lark.Token]) -> Any:
        prop, op_token, token = children
        op = op_token.lower()
        path = self._property(prop, op)
        literal = self._literal(path, op, token)
        caseless = _last(path) in CASELESS and literal.kind == "string"
        return filters.Compare(path, op, literal.kind, literal.value.lower() if caseless else literal.value, caseless)

    def startswith(self, children: list[lark.Token]) -> Any:
        prop, prefix_token, *suffix = children
        path = self._property(prop, "startswith")
        prefix = _unquote(prefix_token)
        return filters.StartsWith(
            path, prefix.lower() if _last(path) in CASELESS else prefix, self._startswith_outcome(suffix)
        )
