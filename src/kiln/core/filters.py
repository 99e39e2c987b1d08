"""A checked ``$filter`` as data (api.odata builds it), so the store can turn what it can into SQL against its
indexes and leave the rest to the compiled predicate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class Compare:
    """``path op value``; a missing value matches only ``ne`` (and ``eq null``)."""

    path: str
    op: str  #: eq, ne, gt, ge, lt, le
    kind: str  #: string, int, bool, time (value in 100 ns ticks since the epoch) or null
    value: Any
    caseless: bool  #: an enum: the value is lower case, and so is what the store holds


@dataclass(frozen=True, slots=True)
class StartsWith:
    path: str
    prefix: str
    wanted: bool  #: False: ``startswith(...) eq false``


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Term


Term: TypeAlias = Compare | StartsWith | AllOf | AnyOf | Not
