"""The transfer accounting's sums, as data: rows of the transfers table in, figures per step, node and job out."""

from __future__ import annotations

from kiln.core.transfers import Tally, summarize


def row(kind, node, direction, size, *, task=None, attempt=1, files=1, seconds=0.5, source="http://s/c"):
    return {
        "kind": kind,
        "task_seq": None if task is None else int(task[1:]),
        "task_id": task,
        "node_id": node,
        "attempt": attempt,
        "direction": direction,
        "source": source,
        "files": files,
        "bytes": size,
        "seconds": seconds,
    }


def test_a_preparation_task_per_node_against_every_task_downloading():
    rows = [
        row("prep", "n1", "download", 100, files=2),
        row("prep", "n2", "download", 100, files=2),
        row("task", "n1", "upload", 7, task="t1"),
        row("task", "n2", "upload", 7, task="t2"),
        row("release", "n1", "upload", 3),
    ]
    figures = summarize(rows, {"n1": 3, "n2": 1})
    assert figures.total == Tally(4, 200, 1.0, 3, 17, 1.5)
    assert figures.parts["preparation"] == Tally(4, 200, 1.0)
    assert figures.parts["tasks"] == Tally(uploaded_files=2, uploaded_bytes=14, upload_seconds=1.0)
    assert figures.parts["release"] == Tally(uploaded_files=1, uploaded_bytes=3, upload_seconds=0.5)
    n1, n2 = figures.nodes
    assert (n1.node_id, n1.tasks_run, n1.prep_saved_bytes) == ("n1", 3, 200)  # 3 x 100 downloaded once
    assert (n2.node_id, n2.tasks_run, n2.prep_saved_bytes) == ("n2", 1, 0)
    assert [(s.kind, s.task_id, s.node_id) for s in figures.steps] == [
        ("prep", None, "n1"),
        ("prep", None, "n2"),
        ("task", "t1", "n1"),
        ("task", "t2", "n2"),
        ("release", None, "n1"),
    ]


def test_a_retried_preparation_task_counts_what_each_attempt_downloaded():
    rows = [row("prep", "n1", "download", 60, attempt=1), row("prep", "n1", "download", 100, attempt=2)]
    (node,) = summarize(rows, {"n1": 2}).nodes
    assert node.parts["preparation"].downloaded_bytes == 160
    assert node.prep_saved_bytes == 2 * 100 - 160


def test_sources_of_one_step_are_listed_and_a_node_with_tasks_but_no_transfers_is_shown():
    rows = [
        row("task", "n1", "download", 5, task="t1", source="http://a/x"),
        row("task", "n1", "download", 6, task="t1", source="auto"),
    ]
    figures = summarize(rows, {"n1": 1, "n2": 4})
    (step,) = figures.steps
    assert [s["source"] for s in step.sources] == ["http://a/x", "auto"] and step.tally.downloaded_bytes == 11
    assert [(n.node_id, n.tasks_run, n.parts["tasks"].downloaded_bytes) for n in figures.nodes] == [
        ("n1", 1, 11),
        ("n2", 4, 0),
    ]
