"""What a node uses, measured on this host: the processes working in the node's directory, and its files.

A node's task processes are found by their working directory (every task runs in its directory under the
node's root). CPU percent and resident memory are summed over them; disk read/write bytes and operations
are the growth of their I/O counters since the last measurement (a process that ended in between takes
its counts with it); disk bytes are the size of the files under the node's root. Network traffic is not
measured per process on Linux without privileges Kiln does not take: it reads 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs installed

#: The node metrics measured here, by service variable.
IO_COUNTERS = {
    "$DiskReadBytes": "read_bytes",
    "$DiskWriteBytes": "write_bytes",
    "$DiskReadOps": "read_count",
    "$DiskWriteOps": "write_count",
}


@dataclass
class UsageMeter:
    """Keeps each process between measurements: CPU percent and I/O growth are measured over the gap."""

    processes: dict[int, psutil.Process] = field(default_factory=dict)
    io: dict[int, dict[str, int]] = field(default_factory=dict)

    def measure(self, roots: Mapping[str, str]) -> dict[str, dict[str, float]]:
        """Per node id (whose root directory is given): its metrics."""
        usage = {node_id: _zero() for node_id in roots}
        prefixes = {node_id: os.path.join(root, "") for node_id, root in roots.items()}
        alive: set[int] = set()
        for proc in psutil.process_iter(["pid", "cwd"]):
            cwd = proc.info.get("cwd") or ""
            node_id = next((n for n, prefix in prefixes.items() if cwd.startswith(prefix)), None)
            if node_id is None:
                continue
            alive.add(proc.pid)
            try:
                self._add(usage[node_id], self.processes.setdefault(proc.pid, proc))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        for pid in set(self.processes) - alive:
            self.processes.pop(pid, None)
            self.io.pop(pid, None)
        for node_id, root in roots.items():
            usage[node_id]["$DiskBytes"] = float(tree_size(Path(root)))
        return usage

    def _add(self, usage: dict[str, float], proc: psutil.Process) -> None:
        with proc.oneshot():
            usage["$CPUPercent"] += proc.cpu_percent(None)  # since this process's previous measurement
            usage["$MemoryBytes"] += proc.memory_info().rss
            counters = proc.io_counters()._asdict()
        before = self.io.get(proc.pid, dict.fromkeys(IO_COUNTERS.values(), 0))
        self.io[proc.pid] = {name: counters[name] for name in IO_COUNTERS.values()}
        for metric, name in IO_COUNTERS.items():
            usage[metric] += max(0, counters[name] - before[name])


def _zero() -> dict[str, float]:
    metrics = ("$CPUPercent", "$MemoryBytes", "$DiskBytes", "$NetworkInBytes", "$NetworkOutBytes", *IO_COUNTERS)
    return dict.fromkeys(metrics, 0.0)


def tree_size(root: Path) -> int:
    """Bytes in the regular files under root (links not followed); what vanishes meanwhile counts 0."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                stat = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            total += stat.st_size
    return total
