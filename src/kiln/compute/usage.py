"""What a node uses, measured on this host: the processes working in the node's directory, and its files.

A node's task processes are found by their working directory (every task runs in its directory under the
node's root). CPU percent and resident memory are summed over them; disk read/write bytes and operations
are the growth of their I/O counters since the last measurement (a process that ended in between takes
its counts with it); disk bytes are the size of the files under the node's root.

Network traffic is not measurable per process on Linux without privileges Kiln does not take, and the nodes
of one host share its network namespace. What is measured is the host's: the bytes received and sent on its
interfaces other than loopback (/proc/net/dev, which shows the namespace of the process reading it) since the
previous measurement, shared equally among the nodes the host runs: exact for a host with one node, an even
split of the host's traffic otherwise. The first measurement has nothing to compare with: 0.
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


#: The host's network counters: one line per interface of the reading process's network namespace.
NET_DEV = Path("/proc/net/dev")
LOOPBACK = "lo"


@dataclass
class UsageMeter:
    """Keeps each process, and the host's network counters, between measurements: CPU percent, I/O growth and
    network traffic are measured over the gap."""

    processes: dict[int, psutil.Process] = field(default_factory=dict)
    io: dict[int, dict[str, int]] = field(default_factory=dict)
    net_dev: Path = NET_DEV  #: where the host's interface counters are read (tests give a file of their own)
    #: bytes (received, sent) per interface at the previous measurement; None before the first
    network: dict[str, tuple[int, int]] | None = None

    def measure(self, roots: Mapping[str, str], host_nodes: int = 0) -> dict[str, dict[str, float]]:
        """Per node id (whose root directory is given): its metrics. `host_nodes`: how many nodes the host
        runs, among which its network traffic is shared (at least those measured)."""
        usage = {node_id: _zero() for node_id in roots}
        received, sent = self._network_growth()
        share = max(host_nodes, len(roots), 1)
        for node_usage in usage.values():
            node_usage["$NetworkInBytes"] = received / share
            node_usage["$NetworkOutBytes"] = sent / share
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

    def _network_growth(self) -> tuple[int, int]:
        """Bytes received and sent on the host's interfaces other than loopback since the previous
        measurement. An interface that is new, or whose counters went back (it was made again), adds nothing
        this time; one that went away adds nothing."""
        now = read_net_dev(self.net_dev)
        before, self.network = self.network, now
        if before is None:
            return 0, 0
        received = sent = 0
        for name, (rx, tx) in now.items():
            if name in before and rx >= before[name][0] and tx >= before[name][1]:
                received += rx - before[name][0]
                sent += tx - before[name][1]
        return received, sent

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


def read_net_dev(path: Path = NET_DEV) -> dict[str, tuple[int, int]]:
    """Bytes (received, sent) per interface but loopback, from /proc/net/dev's format: two header lines, then
    `name: rx_bytes rx_packets … (8 receive fields) tx_bytes …`. Unreadable: none."""
    try:
        lines = path.read_text().splitlines()[2:]
    except OSError:
        return {}
    counters: dict[str, tuple[int, int]] = {}
    for line in lines:
        name, _, fields = line.partition(":")
        values = fields.split()
        name = name.strip()
        if name and name != LOOPBACK and len(values) >= 9:
            counters[name] = (int(values[0]), int(values[8]))
    return counters


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
