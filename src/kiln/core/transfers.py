"""Kiln's transfer accounting, added up: what a job's steps downloaded (resource files) and uploaded (output files)
per step, per node (its preparation task, its release task, its tasks) and for the whole job, and per node what
the preparation task saved against every task downloading the same on its own. No Batch offers it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: A step's kind, by the part of a node's figures it adds to (a multi-instance coordination command is a task's).
PART_OF_KIND = {"prep": "preparation", "release": "release", "task": "tasks", "coord": "tasks"}
PARTS = ("preparation", "release", "tasks")


@dataclass(slots=True)
class Tally:
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    download_seconds: float = 0.0
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    upload_seconds: float = 0.0

    def add(self, row: Mapping[str, Any]) -> None:
        """A row of the transfers table: one direction and source of one step."""
        if row["direction"] == "download":
            self.downloaded_files += row["files"]
            self.downloaded_bytes += row["bytes"]
            self.download_seconds += row["seconds"]
        else:
            self.uploaded_files += row["files"]
            self.uploaded_bytes += row["bytes"]
            self.upload_seconds += row["seconds"]


@dataclass(slots=True)
class StepTransfers:
    """One attempt of a task, or of a node's preparation or release task."""

    kind: str
    task_id: str | None
    node_id: str
    attempt: int
    tally: Tally = field(default_factory=Tally)
    #: per direction and source: {direction, source, files, bytes, seconds}
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class NodeTransfers:
    node_id: str
    parts: dict[str, Tally] = field(default_factory=lambda: {part: Tally() for part in PARTS})
    tasks_run: int = 0  #: the job's tasks whose latest attempt ran on this node
    #: what the latest preparation attempt downloaded: what each task would have had to download itself
    prep_download: int = 0

    @property
    def prep_saved_bytes(self) -> int:
        """Every task downloading the preparation task's data, against what the preparation task downloaded
        (a retried preparation task downloads again: it can cost more than it saves)."""
        return self.tasks_run * self.prep_download - self.parts["preparation"].downloaded_bytes


@dataclass(slots=True)
class JobTransfers:
    total: Tally
    parts: dict[str, Tally]
    nodes: list[NodeTransfers]
    steps: list[StepTransfers]


def summarize(rows: Iterable[Mapping[str, Any]], tasks_per_node: Mapping[str, int]) -> JobTransfers:
    """rows: the job's transfers rows (with task_id), oldest first; tasks_per_node: its tasks by their node."""
    total, parts = Tally(), {part: Tally() for part in PARTS}
    nodes = {node_id: NodeTransfers(node_id, tasks_run=count) for node_id, count in tasks_per_node.items()}
    steps: dict[tuple[str, int | None, str, int], StepTransfers] = {}
    latest_prep: dict[str, int] = {}
    for row in rows:
        part = PART_OF_KIND.get(row["kind"], "tasks")
        node = nodes.setdefault(row["node_id"], NodeTransfers(row["node_id"]))
        key = (row["kind"], row["task_seq"], row["node_id"], row["attempt"])
        step = steps.setdefault(key, StepTransfers(row["kind"], row["task_id"], row["node_id"], row["attempt"]))
        for tally in (total, parts[part], node.parts[part], step.tally):
            tally.add(row)
        step.sources.append({k: row[k] for k in ("direction", "source", "files", "bytes", "seconds")})
        if part == "preparation" and row["direction"] == "download":
            if row["attempt"] != latest_prep.get(row["node_id"]):
                latest_prep[row["node_id"]], node.prep_download = row["attempt"], 0
            node.prep_download += row["bytes"]
    return JobTransfers(total, parts, sorted(nodes.values(), key=lambda n: n.node_id), list(steps.values()))
