"""A cluster's host agent (kiln.node), called directly: node roots under its own directory whatever root the
server names, and one server at a time owning its nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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


async def test_a_new_server_claiming_the_host_stops_the_nodes_of_the_last(host: ClusterHostAgent) -> None:
    assert (await host.claim(session="first"))["limit"] == 4
    await host.start_node(node_id="n1", node_root=str(SERVER_ROOT / "n1"))
    await host.run(node_id="n1", steps=[step(SERVER_ROOT / "n1", "long", "sh -c 'echo $$ > pid; sleep 300'")])
    pid_file = host.root_dir / "n1/workitems/j/job-1/long/wd/pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the command")
    pid = int(pid_file.read_text())
    await host.claim(session="first")  # the same server again (a worker that re-registered): nothing stops
    assert "n1" in host.nodes and alive(pid)
    assert await host.release(session="other") == 0 and "n1" in host.nodes
    assert (await host.claim(session="second"))["roots"] == ["n1"]  # the new server puts n1 back here
    assert host.nodes == {}
    await eventually(lambda: not alive(pid), what="the first server's command to die")


async def test_the_owner_stopping_releases_its_nodes(host: ClusterHostAgent) -> None:
    await host.claim(session="s")
    await host.start_node(node_id="n1", node_root=str(SERVER_ROOT / "n1"))
    assert await host.release(session="s") == 1
    assert host.nodes == {} and host.session is None
