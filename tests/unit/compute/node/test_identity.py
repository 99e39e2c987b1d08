"""Non-admin steps run as task accounts of their own; admin steps as root. Needs a root worker."""

from __future__ import annotations

import asyncio
import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.compute.node import identity, layout, process
from kiln.compute.protocol import ResourceFile, Step

from ..helpers import FileServer, alive, eventually

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="task accounts need a root worker (setuid/setgid); these tests run as root in CI"
)


@pytest.fixture
def data_dir(open_tmp: Path) -> Path:
    """Like the service's data dir: the store beside the node roots."""
    data = open_tmp / "data"
    data.mkdir(mode=0o755)
    (data / "kiln.db").write_bytes(b"store")
    os.chmod(data / "kiln.db", 0o644)
    return data


@pytest.fixture
def node_root(data_dir: Path) -> Path:
    return data_dir / "nodes" / "n1"


@pytest.fixture
def make_step(make_step: Callable[..., Step]) -> Callable[..., Step]:
    """Steps of autoUser scope task unless a test says pool: most tests here are about isolation."""
    return functools.partial(make_step, scope="task")


def paths_of(step: Step) -> layout.TaskPaths:
    return layout.task_paths(step.node_root, step.task_dir)


def output(step: Step) -> tuple[str, str]:
    paths = paths_of(step)
    return paths.stdout.read_text(), paths.stderr.read_text()


async def test_a_nonadmin_step_runs_as_the_uid_of_its_task_directory(run_step, make_step: Callable[..., Step]) -> None:
    step = make_step("sh -c 'id -u; id -g; id -G; echo $HOME $USER'")
    result = await run_step(step)
    uid, paths = identity.preferred_uid(paths_of(step)), paths_of(step)
    assert (result.exit_code, result.failure) == (0, None)
    group = identity.node_gid(paths.node_root)
    assert output(step) == (f"{uid}\n{uid}\n{uid} {group}\n{paths.wd} kiln-{uid}\n", "")
    for path in (paths.task_dir, paths.wd, paths.stdout, paths.stderr):
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, uid)
    assert stat.S_IMODE(paths.task_dir.stat().st_mode) == stat.S_IMODE(paths.wd.stat().st_mode) == 0o700


async def test_fresh_task_directories_are_private_whatever_the_umask(run_step, make_step: Callable[..., Step]) -> None:
    """A first run hands its new directories over by path; they end as a retry's careful hand-over would."""
    step = make_step("/bin/true")
    paths = paths_of(step)
    layout.create_node_layout(paths.node_root)
    paths.task_dir.parent.mkdir(parents=True)  # the job's directories, as the umask of the test leaves them
    old = os.umask(0o177)  # mkdir would leave them 0600
    identity._fresh_mode.cache_clear()
    try:
        assert (await run_step(step)).exit_code == 0
    finally:
        os.umask(old)
        identity._fresh_mode.cache_clear()
    uid = identity.preferred_uid(paths)
    for path in (paths.task_dir, paths.wd):
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (uid, 0o700)


async def test_fresh_task_directories_are_handed_over_one_by_one_without_the_umask(
    run_step, make_step: Callable[..., Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity, "_fresh_mode", lambda: None)  # a kernel without Umask in /proc/self/status
    step = make_step("/bin/true")
    assert (await run_step(step)).exit_code == 0
    paths, uid = paths_of(step), identity.preferred_uid(paths_of(step))
    for path in (paths.task_dir, paths.wd):
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (uid, 0o700)


async def test_a_job_directory_is_looked_at_until_found_open(run_step, make_step: Callable[..., Step]) -> None:
    """Each job directory is checked once found open: closed later (by an admin task), the next step still
    starts there (the command enters wd before it drops root) instead of failing on the check."""
    first = make_step("/bin/true", task_dir="workitems/jc/job-1/a")
    assert (await run_step(first)).exit_code == 0
    job_dir = paths_of(first).task_dir.parent
    assert str(job_dir) in identity._open_dirs
    os.chmod(job_dir, 0o700)
    try:
        result = await run_step(make_step("sh -c 'pwd'", task_dir="workitems/jc/job-1/b"))
    finally:
        os.chmod(job_dir, 0o755)
    assert (result.exit_code, result.failure) == (0, None)


async def test_an_admin_step_runs_as_root(run_step, make_step: Callable[..., Step]) -> None:
    step = make_step("sh -c 'id -u; id -g'", elevated=True)
    assert (await run_step(step)).exit_code == 0
    assert output(step) == ("0\n0\n", "")
    assert paths_of(step).wd.stat().st_uid == 0


async def test_a_worker_that_is_not_root_runs_everything_as_itself(
    run_step, make_step: Callable[..., Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity, "isolating", lambda: False)
    step = make_step("id -u")
    assert (await run_step(step)).exit_code == 0
    assert output(step) == (f"{os.geteuid()}\n", "")


async def test_it_writes_its_wd_and_the_shared_dir(run_step, make_step: Callable[..., Step], node_root: Path) -> None:
    step = make_step("sh -c 'echo mine > mine.txt && echo ours > $AZ_BATCH_NODE_SHARED_DIR/ours.txt'")
    assert (await run_step(step)).exit_code == 0
    uid = identity.preferred_uid(paths_of(step))
    assert (paths_of(step).wd / "mine.txt").stat().st_uid == uid
    shared = node_root / "shared/ours.txt"
    assert shared.read_text() == "ours\n"
    assert (shared.stat().st_uid, shared.stat().st_gid) == (uid, identity.node_gid(node_root))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o660  # the node's accounts only (umask 007)


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("touch {other}/x", "touch: cannot touch '{other}/x': Permission denied"),
        ("touch {other_wd}/x", "touch: cannot touch '{other_wd}/x': Permission denied"),
        (
            "truncate -s 0 {other}/stdout.txt",
            "truncate: cannot open '{other}/stdout.txt' for writing: Permission denied",
        ),
        ("touch {root}/x", "touch: cannot touch '{root}/x': Permission denied"),
        ("touch {root}/workitems/x", "touch: cannot touch '{root}/workitems/x': Permission denied"),
        ("touch {root}/startup/x", "touch: cannot touch '{root}/startup/x': Permission denied"),
        ("touch {data}/x", "touch: cannot touch '{data}/x': Permission denied"),
        ("truncate -s 0 {data}/kiln.db", "truncate: cannot open '{data}/kiln.db' for writing: Permission denied"),
    ],
)
async def test_it_cannot_write_outside_its_own_directories(
    run_step, make_step: Callable[..., Step], node_root: Path, data_dir: Path, command: str, error: str
) -> None:
    other = make_step("sh -c 'echo secret > file.txt'")
    assert (await run_step(other)).exit_code == 0
    names = {"other": paths_of(other).task_dir, "other_wd": paths_of(other).wd, "root": node_root, "data": data_dir}
    step = make_step(f"sh -c '{command.format(**names)}'")  # through sh: argv[0] is then the bare name
    result = await run_step(step)
    assert (result.exit_code, result.failure) == (1, None)
    assert output(step) == ("", error.format(**names) + "\n")
    assert (data_dir / "kiln.db").read_bytes() == b"store"
    assert (paths_of(other).wd / "file.txt").read_text() == "secret\n"


async def test_a_retry_gets_its_uid_back_and_reuses_its_files(run_step, make_step: Callable[..., Step]) -> None:
    first = make_step("sh -c 'echo 1 >> runs.txt; exit 3'", task_dir="workitems/j1/job-1/again")
    assert (await run_step(first)).exit_code == 3
    retry = make_step("sh -c 'echo 2 >> runs.txt; id -u'", task_dir="workitems/j1/job-1/again")
    assert (await run_step(retry)).exit_code == 0
    assert (paths_of(retry).wd / "runs.txt").read_text() == "1\n2\n"
    assert output(retry) == (f"{identity.preferred_uid(paths_of(retry))}\n", "")


async def test_the_job_shares_files_as_in_azures_prep_and_release_sample(
    run_step, make_step: Callable[..., Step], file_server: FileServer
) -> None:
    """Prep downloads and writes shared/, tasks of the pool-scope account read the download and append, a
    task-scope task may append to shared/ but not read the download, release deletes the shared file."""
    file_server.files = {"/tool.sh": b"#!/bin/sh\necho tool\n"}
    prep = make_step(
        "sh -c 'echo prep > $AZ_BATCH_NODE_SHARED_DIR/log.txt'",
        kind="prep",
        scope="pool",
        task_dir="workitems/j1/job-1/jobpreparation",
        resource_files=(ResourceFile(file_server.url("/tool.sh"), "bin/tool.sh"),),
    )
    assert (await run_step(prep)).exit_code == 0
    prep_paths = paths_of(prep)
    tool, uid = prep_paths.wd / "bin/tool.sh", identity.preferred_uid(prep_paths, "pool")
    assert (tool.stat().st_uid, stat.S_IMODE(tool.stat().st_mode)) == (uid, 0o770)  # fileMode 0770
    assert (tool.parent.stat().st_uid, stat.S_IMODE(tool.parent.stat().st_mode)) == (uid, 0o700)
    task = make_step(
        "sh -c '$AZ_BATCH_JOB_PREP_WORKING_DIR/bin/tool.sh >> $AZ_BATCH_NODE_SHARED_DIR/log.txt'",
        scope="pool",
        prep_task_dir=prep.task_dir,
    )
    assert (await run_step(task)).exit_code == 0
    assert (prep_paths.node_root / "shared/log.txt").read_text() == "prep\ntool\n"
    own = make_step(
        "sh -c 'echo own >> $AZ_BATCH_NODE_SHARED_DIR/log.txt; cat $AZ_BATCH_JOB_PREP_WORKING_DIR/bin/tool.sh'",
        prep_task_dir=prep.task_dir,
    )
    assert (await run_step(own)).exit_code == 1
    assert output(own) == ("", f"cat: {tool}: Permission denied\n")
    assert (prep_paths.node_root / "shared/log.txt").read_text() == "prep\ntool\nown\n"
    release = make_step(
        "sh -c 'rm $AZ_BATCH_NODE_SHARED_DIR/log.txt'",
        kind="release",
        task_dir="workitems/j1/job-1/jobrelease",
        prep_task_dir=prep.task_dir,
    )
    assert (await run_step(release)).exit_code == 0
    assert not (prep_paths.node_root / "shared/log.txt").exists()


async def test_a_program_only_root_may_execute_is_not_run(
    run_step, make_step: Callable[..., Step], open_tmp: Path
) -> None:
    program = open_tmp / "root-only.sh"
    program.write_text("#!/bin/sh\necho ran\n")
    program.chmod(0o700)
    result = await run_step(make_step(str(program)))
    assert result.exit_code is None and result.failure is not None
    assert (result.failure["code"], result.failure["message"]) == (
        "CommandProgramNotFound",
        f"The program {str(program)!r} was not found or is not executable by the task's account.",
    )


TREE = "sh -c 'sleep 300 & echo $! > grandchild.pid; wait'"


def uid_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


async def grandchild(step: Step) -> int:
    pid_file = paths_of(step).wd / "grandchild.pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the grandchild")
    return int(pid_file.read_text())


async def test_the_wall_clock_kills_a_nonadmin_tree(run_step, make_step: Callable[..., Step]) -> None:
    step = make_step(TREE, max_wall_clock_seconds=1.0)
    running = asyncio.create_task(run_step(step))
    pid = await grandchild(step)
    assert uid_of(pid) == identity.preferred_uid(paths_of(step))
    result = await running
    assert result.timed_out and result.exit_code == 137
    assert result.failure is not None and result.failure["code"] == "MaxWallClockTimeExceeded"
    await eventually(lambda: not alive(pid), what="the grandchild to die")


async def test_a_kill_request_kills_a_nonadmin_tree(run_step, make_step: Callable[..., Step]) -> None:
    kill = process.KillSwitch()
    step = make_step(TREE)
    running = asyncio.create_task(run_step(step, kill=kill))
    pid = await grandchild(step)
    assert uid_of(pid) == identity.preferred_uid(paths_of(step))
    kill.set()
    result = await running
    assert result.killed and result.exit_code == 137
    await eventually(lambda: not alive(pid), what="the grandchild to die")


async def test_links_left_by_a_task_are_not_followed_by_the_worker(
    run_step, make_step: Callable[..., Step], open_tmp: Path, file_server: FileServer
) -> None:
    """The account owns its task directory: a retry must not write, chmod or chown through its links."""
    victim = open_tmp / "victim"
    victim.write_text("keep")
    os.chmod(victim, 0o600)
    file_server.files = {"/f": b"data"}
    task_dir, files = "workitems/j1/job-1/linker", (ResourceFile(file_server.url("/f"), "f.txt"),)

    def step(command: str) -> Step:
        return make_step(f"sh -c '{command}'", task_dir=task_dir, resource_files=files)

    plant = step(
        f"ln -s {victim} ../stdout.txt.new && mv ../stdout.txt.new ../stdout.txt; "
        f"rm f.txt; ln -s {victim} .f.txt.kiln-part"
    )
    assert (await run_step(plant)).exit_code == 0
    assert paths_of(plant).stdout.is_symlink()
    retry = step("cat f.txt")
    assert (await run_step(retry)).exit_code == 0
    assert output(retry) == ("data", "")
    assert (await run_step(step(f"rm f.txt; ln -s {victim} f.txt"))).exit_code == 0
    refused = await run_step(step("cat f.txt"))
    assert refused.failure is not None and refused.failure["code"] == "ResourceFileCreateFailed"
    assert (victim.read_text(), victim.stat().st_uid, stat.S_IMODE(victim.stat().st_mode)) == ("keep", 0, 0o600)


async def test_a_wd_replaced_by_a_link_fails_the_retry(
    run_step, make_step: Callable[..., Step], open_tmp: Path
) -> None:
    task_dir = "workitems/j1/job-1/swapped"
    swap = make_step(f"sh -c 'cd .. && mv wd old && ln -s {open_tmp} wd'", task_dir=task_dir)
    assert (await run_step(swap)).exit_code == 0
    result = await run_step(make_step("/bin/true", task_dir=task_dir))
    assert result.exit_code is None and result.failure is not None
    assert (result.failure["category"], result.failure["code"]) == ("servererror", "TaskAccountSetupFailed")
    assert open_tmp.stat().st_uid == 0


async def test_an_unreachable_node_root_is_a_clear_failure(
    run_step, open_tmp: Path, make_step: Callable[..., Step]
) -> None:
    private = open_tmp / "private"
    private.mkdir(mode=0o700)
    step = make_step(node_root=str(private / "node"))
    result = await run_step(step)
    assert result.exit_code is None and result.failure is not None
    assert (result.failure["category"], result.failure["code"]) == ("servererror", "TaskAccountSetupFailed")
    assert f"{private} cannot be passed through by other users" in result.failure["message"]
    assert (await run_step(make_step("id -u", node_root=str(private / "node"), elevated=True))).exit_code == 0


# -- the uid registry ------------------------------------------------------------------------------


@pytest.fixture
def two_dirs(node_root: Path) -> tuple[layout.TaskPaths, layout.TaskPaths]:
    a, b = (layout.task_paths(node_root, f"workitems/j1/job-1/{n}") for n in ("a", "b"))
    for paths in (a, b):
        layout.create_task_dir(paths)
    return a, b


def test_a_uid_held_by_another_live_directory_is_skipped(
    two_dirs: tuple[layout.TaskPaths, layout.TaskPaths], uid_registry: Path
) -> None:
    a, b = two_dirs
    uid = identity.preferred_uid(b)
    uid_registry.mkdir()
    (uid_registry / str(uid)).symlink_to(a.task_dir)  # a hash clash: a already holds b's first choice
    expected = identity.UID_FIRST + (uid - identity.UID_FIRST + 1) % identity.UID_COUNT
    assert identity.task_uid(b) == expected
    assert identity.task_uid(b) == expected  # and keeps it
    assert os.readlink(uid_registry / str(uid)) == str(a.task_dir)


def test_a_uid_whose_directory_is_gone_is_taken_over(
    two_dirs: tuple[layout.TaskPaths, layout.TaskPaths], uid_registry: Path
) -> None:
    _, b = two_dirs
    uid = identity.preferred_uid(b)
    uid_registry.mkdir()
    (uid_registry / str(uid)).symlink_to(b.node_root / "workitems/deleted-job")
    assert identity.task_uid(b) == uid
    assert os.readlink(uid_registry / str(uid)) == str(b.task_dir)


def test_a_task_directory_keeps_the_uid_it_was_handed(
    two_dirs: tuple[layout.TaskPaths, layout.TaskPaths], uid_registry: Path
) -> None:
    """Even when its first choice has come free since: its files belong to the uid it has."""
    a, b = two_dirs
    uid = identity.preferred_uid(b)
    uid_registry.mkdir()
    (uid_registry / str(uid)).symlink_to(a.task_dir)
    second = identity.task_uid(b)
    os.chown(b.task_dir, second, second)  # handed over, as prepare does
    a.wd.rmdir()
    a.task_dir.rmdir()  # the clash is gone
    assert identity.task_uid(b) == second != uid


def test_private_modes() -> None:
    assert identity.private(0o770) == 0o770
    assert identity.private(0o644) == 0o640
    assert identity.private(0o777) == 0o770
    assert identity.private(0o4755) == 0o750
    assert identity.private(stat.S_IFREG | 0o2700) == 0o700


async def test_pool_scope_steps_of_a_node_share_one_account(
    run_step, make_step: Callable[..., Step], node_root: Path
) -> None:
    """Azure's default scope: the release task can delete what prep left in its own working directory."""
    prep = make_step(
        "sh -c 'mkdir data && echo common > data/file.txt; id -u'",
        kind="prep",
        scope="pool",
        task_dir="workitems/j1/job-1/jobpreparation",
    )
    task = make_step(
        "sh -c 'cat $AZ_BATCH_JOB_PREP_WORKING_DIR/data/file.txt; id -u'", scope="pool", prep_task_dir=prep.task_dir
    )
    release = make_step(
        "sh -c 'rm -r $AZ_BATCH_JOB_PREP_WORKING_DIR/data; id -u'",
        kind="release",
        scope="pool",
        task_dir="workitems/j1/job-1/jobrelease",
        prep_task_dir=prep.task_dir,
    )
    uid = identity.preferred_uid(paths_of(prep), "pool")
    assert identity.is_task_uid(uid) and uid != identity.preferred_uid(paths_of(prep), "task")
    for step in (prep, task, release):
        assert (await run_step(step)).exit_code == 0, output(step)
    assert output(prep) == output(release) == (f"{uid}\n", "")
    assert output(task) == (f"common\n{uid}\n", "")
    assert not (paths_of(prep).wd / "data").exists()
    assert paths_of(task).task_dir.stat().st_uid == uid


async def test_a_task_scope_step_cannot_touch_pool_scope_files(run_step, make_step: Callable[..., Step]) -> None:
    pooled = make_step("sh -c 'echo mine > mine.txt'", scope="pool", task_dir="workitems/j1/job-1/pooled")
    assert (await run_step(pooled)).exit_code == 0
    target = paths_of(pooled).wd / "mine.txt"
    alone = make_step(f"sh -c 'rm -f {target}'")
    assert (await run_step(alone)).exit_code == 1
    assert target.read_text() == "mine\n"


async def test_nodes_have_pool_accounts_of_their_own(run_step, make_step: Callable[..., Step], data_dir: Path) -> None:
    one = make_step("id -u", scope="pool")
    two = make_step("id -u", scope="pool", node_root=str(data_dir / "nodes" / "n2"))
    assert (await run_step(one)).exit_code == (await run_step(two)).exit_code == 0
    assert output(one)[0] != output(two)[0]


async def test_a_named_user_account_is_one_account_per_node_and_name(run_step, make_step: Callable[..., Step]) -> None:
    alice = {"name": "alice"}
    first = make_step("sh -c 'id -u; echo $USER $LOGNAME'", scope="user", user=alice)
    second = make_step("id -u", scope="user", user=alice)
    other = make_step("id -u", scope="user", user={"name": "bob"})
    for step in (first, second, other):
        assert (await run_step(step)).exit_code == 0, output(step)
    uid = identity.preferred_uid(paths_of(first), "user", "alice")
    assert output(first) == (f"{uid}\nalice alice\n", "")
    assert output(second)[0] == f"{uid}\n" != output(other)[0]


async def test_a_named_user_with_the_pools_uid_and_gid(run_step, make_step: Callable[..., Step]) -> None:
    step = make_step("sh -c 'id -u; id -g'", scope="user", user={"name": "carol", "uid": 4321, "gid": 4322})
    assert (await run_step(step)).exit_code == 0
    assert output(step) == ("4321\n4322\n", "")


async def test_an_admin_named_user_runs_as_root(run_step, make_step: Callable[..., Step]) -> None:
    step = make_step("id -u", scope="user", user={"name": "root-ish"}, elevated=True)
    assert (await run_step(step)).exit_code == 0
    assert output(step) == ("0\n", "")


async def test_an_unknown_user_fails_the_step_before_it_runs(run_step, make_step: Callable[..., Step]) -> None:
    step = make_step("touch ran", scope="user", user={"name": "nobody-here"}, user_missing=True)
    result = await run_step(step)
    assert result.exit_code is None and result.failure is not None
    assert (result.failure["category"], result.failure["code"]) == ("usererror", "UserAccountNotFound")
    assert not (paths_of(step).wd / "ran").exists()


async def test_a_node_wide_account_is_claimed_once_per_process(
    run_step, make_step: Callable[..., Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_step("id -u", scope="pool"), make_step("id -u", scope="pool")
    assert identity.claims_uid(first, paths_of(first))
    assert (await run_step(first)).exit_code == 0
    assert not identity.claims_uid(second, paths_of(second))
    monkeypatch.setattr(identity, "_registry_lock", None)  # taking the lock again would fail the step
    assert (await run_step(second)).exit_code == 0
    assert output(second) == output(first)
    assert paths_of(second).task_dir.stat().st_uid == int(output(first)[0])
    task_scoped = make_step()
    assert identity.claims_uid(task_scoped, paths_of(task_scoped))  # a claim per task directory


async def test_a_job_directory_accounts_cannot_pass_is_a_clear_failure(
    run_step, make_step: Callable[..., Step], node_root: Path
) -> None:
    """Even once the node root is known to be reachable: Kiln makes the job's directories per job."""
    assert (await run_step(make_step(scope="pool"))).exit_code == 0
    (node_root / "workitems/closed").mkdir(mode=0o700)
    result = await run_step(make_step(scope="pool", task_dir="workitems/closed/job-1/t"))
    assert result.failure is not None and result.failure["code"] == "TaskAccountSetupFailed"
    assert f"{node_root / 'workitems/closed'} cannot be passed through" in result.failure["message"]


async def test_a_bare_program_name_is_looked_up_as_the_task_account(
    run_step, make_step: Callable[..., Step], open_tmp: Path
) -> None:
    """A PATH entry only root may pass through (a pyenv shim under /root) does not hide the program later on
    PATH that the account may run."""
    hidden, shared = open_tmp / "root-only", open_tmp / "shared-bin"
    for directory, word in ((hidden, "hidden"), (shared, "shared")):
        directory.mkdir()
        (directory / "tool").write_text(f"#!/bin/sh\necho {word}\n")
        (directory / "tool").chmod(0o755)
    hidden.chmod(0o700)
    step = make_step("tool", environment={"PATH": f"{hidden}:{shared}"})
    assert (await run_step(step)).exit_code == 0
    assert output(step) == ("shared\n", "")
