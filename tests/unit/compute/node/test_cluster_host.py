"""A cluster's host agent (kiln.node), called directly: node roots under its own directory whatever root the
server names, and one server at a time owning its nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import kiln.node
from kiln.node import ClusterHostAgent

from ..helpers import alive, eventually
from .test_host import poll, step

SERVER_ROOT = Path("/nowhere/kiln/nodes")  #: the server's idea of where node roots are: not on this host


@pytest.fixture
async def host(open_tmp: Path) -> AsyncIterator[ClusterHostAgent]:
    agent = ClusterHostAgent(open_tmp / "roots", limit=4)
    yield agent
    await agent.close()


async def test_nodes_and_their_steps_live_under_the_hosts_root_dir(host: ClusterHostAgent) -> None:
    assert "ok" in await host.start_node(node_id="n1", node_root=str(SERVER_ROOT / "n1"))
    local = host.root_dir / "n1"
    assert (local / "workitems").is_dir() and not SERVER_ROOT.exists()
    got = await poll(host, {"n1": {"run": [step(SERVER_ROOT / "n1", "s1", "sh -c 'echo $AZ_BATCH_NODE_ROOT_DIR'")]}}, 1)
    assert [m["step_id"] for m in got["n1"]] == ["s1"]
    assert (local / "workitems/j/job-1/s1/stdout.txt").read_text() == f"{local}\n"
    await host.run(node_id="n1", steps=[step(SERVER_ROOT / "n1", "s2", "touch here")])
    await eventually(lambda: (local / "workitems/j/job-1/s2/wd/here").exists(), what="s2 in the host's root")
    (local / "shared" / "left").write_text("x")
    await host.stop_node(node_id="n1")
    await host.wipe_node(node_root=str(SERVER_ROOT / "n1"))
    assert not (local / "shared" / "left").exists() and (local / "workitems").is_dir()


async def test_a_claim_stops_every_node_there_and_only_the_owner_releases(host: ClusterHostAgent) -> None:
    """A claim comes from a server that counts the host's nodes down (a new server, or one that lost the host
    for a while): their commands are killed. A release from a server that no longer owns the host does nothing."""
    assert (await host.claim(session="first"))["limit"] == 4
    pid = await _long_command(host, "n1")
    assert await host.release(session="other") == 0 and "n1" in host.nodes
    assert (await host.claim(session="second"))["roots"] == ["n1"]  # the new server puts n1 back here
    assert host.nodes == {}
    await eventually(lambda: not alive(pid), what="the first server's command to die")


async def test_a_host_that_hears_nothing_for_its_lease_stops_its_nodes(
    host: ClusterHostAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut network: the host kills its nodes' commands before the server (after twice the lease) requeues
    their tasks elsewhere."""
    monkeypatch.setattr(kiln.node, "LEASE", 0.5)
    monkeypatch.setattr(kiln.node, "LEASE_CHECK", 0.1)
    await host.claim(session="s")
    pid = await _long_command(host, "n1")
    await eventually(lambda: not host.nodes, 10, "the lease to run out")
    await eventually(lambda: not alive(pid), what="the command to die")
    assert host.session == "s"  # still the owner: its next calls find the nodes gone and start them again


async def _long_command(host: ClusterHostAgent, node_id: str) -> int:
    await host.start_node(node_id=node_id, node_root=str(SERVER_ROOT / node_id))
    await host.run(node_id=node_id, steps=[step(SERVER_ROOT / node_id, "long", "sh -c 'echo $$ > pid; sleep 300'")])
    pid_file = host.root_dir / node_id / "workitems/j/job-1/long/wd/pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the command")
    return int(pid_file.read_text())


async def test_the_owner_stopping_releases_its_nodes(host: ClusterHostAgent) -> None:
    await host.claim(session="s")
    await host.start_node(node_id="n1", node_root=str(SERVER_ROOT / "n1"))
    assert await host.release(session="s") == 1
    assert host.nodes == {} and host.session is None
