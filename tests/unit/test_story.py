"""A transition's stimulus is the one in effect when it was made: a batch of node arrivals, applied in one
transaction, tells each node's story with its own (scheduler.batching)."""

from __future__ import annotations

from datetime import UTC, datetime

from kiln import story

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _note(node_id: str) -> None:
    story.note("node", {"id": node_id, "state_transition_time": AT}, "starting", "idle", {}, {}, AT)


def test_each_note_keeps_the_stimulus_it_was_made_under_else_the_transactions() -> None:
    with story.caused_by("batch of arrivals"), story.collecting() as notes:
        with story.caused_by("node a up"):
            _note("a")
        with story.caused_by("node b up"):
            _note("b")
        with story.caused_by(""):
            _note("c")
        records = story.records(notes)
    assert [(r["node_id"], r["stimulus"]) for r in records] == [
        ("a", "node a up"),
        ("b", "node b up"),
        ("c", "batch of arrivals"),
    ]
