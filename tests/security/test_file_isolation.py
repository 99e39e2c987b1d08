"""Task files stay with their account and their node (issue 20.3): every identity reads, lists and signals
every other's, on its own node and on another, with real uids.

On Azure each node is a machine of its own; here nodes share one host, so only file modes and uids keep a
node's files from the accounts of the others. What may pass: the pool-scope account and a named account
reach their own files on their own node, every account of a node reads shared/ and the job's directories
there, and processes of one uid can signal each other (a fixed linuxUserConfiguration uid is one uid on
every node: the documented limit). Nothing else.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kiln.compute.node import identity, layout, process, runner
from kiln.compute.node.spawner import Spawner
from kiln.compute.protocol import Step

pytestmark = pytest.mark.root("tasks run as accounts of their own only under root")

#: How each identity appears in a step (what the scheduler sends for autoUser scope and userIdentity.username).
IDENTITIES: dict[str, dict[str, Any]] = {
    "pool": {"scope": "pool"},
    "task": {"scope": "task"},
    "named": {"scope": "user", "user": {"name": "alice"}},
    "fixed": {"scope": "user", "user": {"name": "bob", "uid": 4711, "gid": 4712}},
}
NODES = ("a", "b")


@pytest.fixture
def roots(open_tmp: Path) -> dict[str, Path]:
    return {node: open_tmp / "nodes" / node for node in NODES}


@pytest.fixture
async def spawners() -> AsyncIterator[dict[str, Spawner]]:
    """Each node has launchers of its own, as each worker does."""
    made = {node: Spawner() for node in NODES}
    yield made
    for spawner in made.values():
        await spawner.close()


def step(root: Path, name: str, who: str, command: str) -> Step:
    return Step(
        step_id=name,
        kind="task",
        node_root=str(root),
        task_dir=f"workitems/j1/job-1/{name}",
        command_line=f"sh -c {shlex.quote(command)}",
        **IDENTITIES[who],
    )


@pytest.fixture
async def victims(roots: dict[str, Path], spawners: dict[str, Spawner]) -> AsyncIterator[dict[str, int]]:
    """On node a, one running command of each identity that has written a secret in its wd and in shared/;
    their pids, by identity."""
    kills = {who: process.KillSwitch() for who in IDENTITIES}
    steps = {
        who: step(
            roots["a"],
            f"victim-{who}",
            who,
            f"echo {who} > secret.txt; echo {who} > $AZ_BATCH_NODE_SHARED_DIR/{who}.txt; "
            "echo $$ > pid.txt; exec sleep 300",
        )
        for who in IDENTITIES
    }
    running = [
        asyncio.create_task(runner.run_step(s, spawner=spawners["a"], kill=kills[who])) for who, s in steps.items()
    ]
    pid_files = {who: roots["a"] / f"workitems/j1/job-1/victim-{who}/wd/pid.txt" for who in IDENTITIES}
    async with asyncio.timeout(60):
        while not all(f.exists() and f.read_text().strip() for f in pid_files.values()):
            assert not any(t.done() for t in running), [t.result() for t in running if t.done()]
            await asyncio.sleep(0.05)
    yield {who: int(f.read_text()) for who, f in pid_files.items()}
    for kill in kills.values():
        kill.set()
    await asyncio.gather(*running)


def targets(root: Path, pids: dict[str, int]) -> dict[str, str]:
    """What a reader tries, by name: a shell test that succeeds when it gets through."""
    tries = {f"{who}'s wd": f"cat {root}/workitems/j1/job-1/victim-{who}/wd/secret.txt" for who in IDENTITIES}
    tries |= {f"{who}'s stdout": f"cat {root}/workitems/j1/job-1/victim-{who}/stdout.txt" for who in IDENTITIES}
    tries |= {f"{who}'s shared file": f"cat {root}/shared/{who}.txt" for who in IDENTITIES}
    tries |= {f"signal {who}": f"kill -0 {pid}" for who, pid in pids.items()}
    tries |= {"the job's directory": f"ls {root}/workitems/j1/job-1", "volatile": f"ls {root}/volatile"}
    return tries


def allowed(reader: str, node: str) -> set[str]:
    """What Kiln lets through: everything else must be refused."""
    if node == "b":  # another node: only a process of the same uid, which a fixed uid is on every node
        return {"signal fixed"} if reader == "fixed" else set()
    passes = {"the job's directory"} | {f"{who}'s shared file" for who in IDENTITIES}
    if reader != "task":  # a task-scope account is the reading task's alone
        passes |= {f"{reader}'s wd", f"{reader}'s stdout", f"signal {reader}"}
    return passes


async def test_an_accounts_files_reach_only_its_own_account_on_its_own_node(
    roots: dict[str, Path], spawners: dict[str, Spawner], victims: dict[str, int]
) -> None:
    tries = targets(roots["a"], victims)
    probe = "; ".join(f"{command} >/dev/null 2>&1 && echo {shlex.quote(name)}" for name, command in tries.items())
    got: dict[tuple[str, str], set[str]] = {}
    for node in NODES:
        for reader in IDENTITIES:
            reader_step = step(roots[node], f"reader-{reader}", reader, probe)
            result = await runner.run_step(reader_step, spawner=spawners[node])
            assert result.failure is None, result.failure
            out = roots[node] / f"workitems/j1/job-1/reader-{reader}/stdout.txt"
            got[node, reader] = set(out.read_text().splitlines())
    assert got == {(node, reader): allowed(reader, node) for node in NODES for reader in IDENTITIES}


def test_a_nodes_root_is_its_groups_alone(roots: dict[str, Path]) -> None:
    for root in roots.values():
        layout.create_node_layout(root)
    groups = {node: identity.node_gid(root) for node, root in roots.items()}
    assert len(set(groups.values())) == 2
    for node, root in roots.items():
        st = root.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, groups[node], 0o750)
