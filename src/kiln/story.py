"""Every transition with the stimulus that caused it (a task's story, after dask distributed's `story`).

core.lifecycle notes each transition it computes; the store writes the notes with the transaction that
applies them (one executemany), so a failed transaction leaves no story behind and nothing is counted twice.
The stimulus is set where work enters: an API request, a node's report, a timer, the recovery at start.
Both live in context variables, so nothing is passed through the call chains in between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any

#: A transition as noted: a row of the transitions table but for its stimulus.
Note = dict[str, Any]

#: What set the current work going: `request <id> <METHOD path>`, `node <id> report`, `timer <what>`, ...
stimulus: ContextVar[str] = ContextVar("kiln_stimulus", default="")
#: Notes of the open store transaction; None outside one (nothing is noted then).
_journal: ContextVar[list[Note] | None] = ContextVar("kiln_journal", default=None)
#: What the open transaction deleted, as note fields to match: its notes would outlive it in the table
_gone: ContextVar[list[Mapping[str, Any]] | None] = ContextVar("kiln_gone", default=None)


@contextlib.contextmanager
def caused_by(text: str) -> Iterator[None]:
    token = stimulus.set(text)
    try:
        yield
    finally:
        stimulus.reset(token)


@contextlib.contextmanager
def collecting() -> Iterator[list[Note]]:
    """Collect the notes of one transaction."""
    notes: list[Note] = []
    token, gone_token = _journal.set(notes), _gone.set([])
    try:
        yield notes
    finally:
        _journal.reset(token)
        _gone.reset(gone_token)


def gone(**fields: Any) -> None:
    """The open transaction deleted an object (and its records): its notes, made before or after, are not kept."""
    deleted = _gone.get()
    if deleted is not None:
        deleted.append(fields)


def stimulated(template: str, handler: Callable[[str], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
    """`handler(node_id)` with the stimulus `template.format(node_id)`."""

    async def run(node_id: str) -> None:
        with caused_by(template.format(node_id)):
            await handler(node_id)

    return run


def note(
    kind: str,
    row: Mapping[str, Any],
    from_state: str | None,
    to_state: str,
    changes: Mapping[str, Any],
    event: Mapping[str, Any],
    at: datetime,
) -> None:
    """Note a transition for the open transaction (its row and changes as they are now: both change later)."""
    journal = _journal.get()
    if journal is None:
        return
    journal.append(
        {
            "kind": kind,
            "job_key": row.get("key") if kind == "job" else row.get("job_key"),
            "task_seq": row.get("seq") if kind in ("task", "fault") else None,
            "node_id": row.get("id") if kind == "node" else (changes.get("node_id") or row.get("node_id")),
            "from_state": from_state,
            "to_state": to_state,
            "detail": _detail(kind, changes, event)[:DETAIL_LENGTH] or None,
            "at": at,
            "since": row.get("state_transition_time"),  #: when it entered from_state (for kiln.metrics; not stored)
            "stimulus": stimulus.get(),  #: a batch of events applies each under its own (scheduler.batching)
        }
    )


def created(kind: str, rows: Sequence[Mapping[str, Any]], state: str, at: datetime) -> None:
    """Objects that begin their story in `state` (added tasks)."""
    for row in rows:
        note(kind, row, None, state, {}, {}, at)


def records(notes: list[Note]) -> list[Note]:
    """The notes as rows of the transitions table, each with the stimulus it was made under (else the current
    one), but for deleted objects'."""
    cause = (stimulus.get() or "server")[:STIMULUS_LENGTH]
    deleted = _gone.get() or []
    kept = [n for n in notes if not any(all(n[k] == v for k, v in d.items()) for d in deleted)]
    for record in kept:
        record["stimulus"] = record["stimulus"][:STIMULUS_LENGTH] or cause
    return kept


#: Column widths of the transitions table.
STIMULUS_LENGTH = 256
DETAIL_LENGTH = 256


def _detail(kind: str, changes: Mapping[str, Any], event: Mapping[str, Any]) -> str:
    """Short words on what came with the transition: exit code, failure code, retry or requeue number."""
    prefix = f"{kind}_" if kind in ("prep", "release") else ""
    parts: list[str] = []
    exit_code = changes.get(f"{prefix}exit_code", event.get("exit_code"))
    if exit_code is not None:
        parts.append(f"exit code {exit_code}")
    failure = changes.get(f"{prefix}failure_info")
    if failure:
        parts.append(f"failure {failure.get('code')}")
    if event.get("retry") or (kind == "prep" and "prep_retry_count" in changes):
        parts.append(f"retry {changes.get('retry_count', changes.get('prep_retry_count'))}")
    if event.get("requeue"):
        parts.append(f"requeue {changes.get('requeue_count')}")
    if event.get("reason"):
        parts.append(f"reason {event['reason']}")
    return ", ".join(parts)
