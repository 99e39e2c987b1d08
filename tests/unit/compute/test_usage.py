"""compute.usage: a node's processes are found by their working directory, its disk use by its files, its
network traffic by its host's interfaces."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

from kiln.compute.usage import UsageMeter, read_net_dev, tree_size
from kiln.testing import wait_for
from kiln.testing_netns import NetnsCluster, require


def test_a_nodes_processes_and_files_are_measured(tmp_path: Path) -> None:
    node_root, other_root = tmp_path / "node", tmp_path / "other"
    (node_root / "wd").mkdir(parents=True)
    other_root.mkdir()
    (node_root / "wd" / "out.txt").write_bytes(b"x" * 1000)
    (node_root / "stdout.txt").write_bytes(b"y" * 24)
    (node_root / "link").symlink_to(node_root / "wd" / "out.txt")
    task = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=node_root / "wd", stdin=subprocess.PIPE
    )
    try:
        meter = UsageMeter()
        wait_for(lambda: meter.measure({"n": str(node_root)})["n"]["$MemoryBytes"] > 0, 30, "the task's memory")
        usage = meter.measure({"n": str(node_root), "m": str(other_root)})
        assert usage["n"]["$MemoryBytes"] > 0 and usage["m"]["$MemoryBytes"] == 0
        assert usage["n"]["$DiskBytes"] == 1024 + len(str(node_root / "wd" / "out.txt"))  # the link's own size
        assert task.pid in meter.processes
    finally:
        task.communicate(b"")
    meter.measure({"n": str(node_root)})
    assert task.pid not in meter.processes  # an ended process is forgotten


def test_tree_size_of_a_missing_directory_is_zero(tmp_path: Path) -> None:
    assert tree_size(tmp_path / "gone") == 0


HEADER = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier"
    " compressed\n"
)


def net_dev(path: Path, counters: dict[str, tuple[int, int]]) -> None:
    """A /proc/net/dev with these (received, sent) bytes per interface."""
    lines = [f"{name:>6}: {rx} 10 0 0 0 0 0 0 {tx} 7 0 0 0 0 0 0" for name, (rx, tx) in counters.items()]
    path.write_text(HEADER + "\n".join(lines) + "\n")


def test_net_dev_is_read_without_loopback(tmp_path: Path) -> None:
    net_dev(tmp_path / "dev", {"lo": (5, 5), "eth0": (1000, 400), "veth1": (7, 9)})
    assert read_net_dev(tmp_path / "dev") == {"eth0": (1000, 400), "veth1": (7, 9)}
    assert read_net_dev(tmp_path / "missing") == {}


def test_the_hosts_traffic_since_the_last_measurement_is_shared_among_its_nodes(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    roots = {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}
    net_dev(dev, {"lo": (5, 5), "eth0": (1000, 400), "veth1": (100, 100)})
    meter = UsageMeter(net_dev=dev)
    first = meter.measure(roots, host_nodes=4)
    assert {n: (u["$NetworkInBytes"], u["$NetworkOutBytes"]) for n, u in first.items()} == {
        "a": (0, 0),  # nothing to compare with yet
        "b": (0, 0),
    }
    net_dev(dev, {"lo": (9_000_005, 9_000_005), "eth0": (3000, 800), "veth1": (200, 500)})
    usage = meter.measure(roots, host_nodes=4)  # 2,100 in and 800 out: a quarter each
    assert {n: (u["$NetworkInBytes"], u["$NetworkOutBytes"]) for n, u in usage.items()} == {
        "a": (525, 200),
        "b": (525, 200),
    }
    # one node on the host: all of it; an interface made again (its counters back at 0) or new adds nothing
    net_dev(dev, {"eth0": (3100, 810), "veth1": (50, 50), "veth2": (70, 70)})
    (usage,) = meter.measure({"a": roots["a"]}, host_nodes=1).values()
    assert (usage["$NetworkInBytes"], usage["$NetworkOutBytes"]) == (100, 10)
    # fewer nodes said than measured: shared among those measured
    net_dev(dev, {"eth0": (3300, 1010), "veth1": (50, 50), "veth2": (70, 70)})
    usage = meter.measure(roots)
    assert (usage["a"]["$NetworkInBytes"], usage["b"]["$NetworkOutBytes"]) == (100, 100)


#: Run inside a host: measure, exchange bytes with the test over the host's network, measure again.
IN_HOST = """
import json, socket, sys
from kiln.compute.usage import UsageMeter
address, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
meter = UsageMeter()
meter.measure({})
with socket.create_connection((address, port), timeout=30) as peer:
    peer.sendall(b"x" * 200_000)
    peer.shutdown(socket.SHUT_WR)
    got = 0
    while chunk := peer.recv(65536):
        got += len(chunk)
print(json.dumps({"got": got, **meter.measure({"n": root}, host_nodes=1)["n"]}))
"""


def test_a_host_measures_the_traffic_of_its_own_network_namespace(tmp_path: Path) -> None:
    """A host made of a network namespace (one veth, as the multi-host tests' hosts): what it sends and receives
    over its network shows in its node's counters, and nothing of the machine's own traffic does."""
    require()
    with NetnsCluster(1, tmp_path) as cluster:
        listener = socket.create_server((cluster.bridge_address, 0))
        port = listener.getsockname()[1]

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                while connection.recv(65536):
                    pass
                connection.sendall(b"y" * 100_000)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        argv = [sys.executable, "-c", IN_HOST, cluster.bridge_address, str(port), str(tmp_path)]
        ran = cluster.run(cluster.hosts[0], argv, timeout=60)
        thread.join(30)
        listener.close()
    assert ran.returncode == 0, ran.stderr
    usage = json.loads(ran.stdout)
    assert usage["got"] == 100_000
    # the payload and the frames' headers (TCP, IP, Ethernet), the acknowledgements, and at most a few stray
    # packets of the link's own (neighbour discovery)
    assert 200_000 < usage["$NetworkOutBytes"] < 240_000
    assert 100_000 < usage["$NetworkInBytes"] < 140_000
