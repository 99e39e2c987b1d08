"""What commands act on: the store, the scheduler and the compute backend of one server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.compute.protocol import ComputeBackend
from kiln.scheduler.engine import Scheduler
from kiln.store.database import Database

Row = dict[str, Any]

#: The caller's preconditions on the row a command acts on (HTTP If-Match and friends); they raise to refuse.
Check = Callable[[Row], None]
#: a list's whole $filter on what a page row renders from (api builds it), for what the store's columns cannot tell
Matches = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Control:
    """Built once in server.py; only commands use its parts."""

    database: Database
    scheduler: Scheduler
    backend: ComputeBackend
