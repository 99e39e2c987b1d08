"""What a step moved through the network: per direction and source, the files, bytes and seconds of its resource
file downloads and output file uploads. The node reports it with the step's result (StepResult.transfers); the
control plane adds it up per task, node and job (Kiln's transfer accounting, docs/transfers.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

DOWNLOAD, UPLOAD = "download", "upload"


@dataclass(slots=True)
class Moved:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


class TransferLog:
    """One step's transfers, by (direction, source); a source is a URL without its SAS, or a container's name."""

    def __init__(self) -> None:
        self.moved: dict[tuple[str, str], Moved] = {}

    @contextmanager
    def timed(self, direction: str, source: str) -> Iterator[Moved]:
        """Counts the time of the block; the block adds the bytes and files it moved to what it is given."""
        moved = self.moved.setdefault((direction, source), Moved())
        start = time.monotonic()
        try:
            yield moved
        finally:
            moved.seconds += time.monotonic() - start

    def to_message(self) -> list[dict[str, Any]] | None:
        """None when nothing moved: most steps move nothing, and their results stay as small as they were."""
        entries = [
            {"direction": d, "source": s, "files": m.files, "bytes": m.bytes, "seconds": round(m.seconds, 6)}
            for (d, s), m in self.moved.items()
            if m.files or m.bytes
        ]
        return entries or None
