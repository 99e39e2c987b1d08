from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.compute.node import environment, identity, layout
from kiln.compute.protocol import Step

HOST = {
    "PATH": "/opt/bin:/usr/bin",
    "HOME": "/home/kiln",
    "LANG": "C.UTF-8",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "KILN_NODE_ROOT": "/x",
    "SECRET": "no",
}
CONTEXT = {
    "AZ_BATCH_ACCOUNT_NAME": "devstoreaccount",
    "AZ_BATCH_POOL_ID": "p1",
    "AZ_BATCH_NODE_ID": "tvm-1",
    "AZ_BATCH_JOB_ID": "j1",
    "AZ_BATCH_TASK_ID": "t1",
}


def build(step: Step) -> dict[str, str]:
    return environment.build_environment(step, layout.task_paths(step.node_root, step.task_dir), HOST)


def test_exact_environment_of_a_task(
    make_step: Callable[..., Step], node_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment, "isolating", lambda: False)  # a worker that is not root: its PATH is kept
    step = make_step(
        task_dir="workitems/j1/job-1/t1",
        environment={"MY_VAR": "1"},
        batch_context=CONTEXT,
        prep_task_dir="workitems/j1/job-1/jobpreparation",
    )
    task = node_root / "workitems/j1/job-1/t1"
    prep = node_root / "workitems/j1/job-1/jobpreparation"
    assert build(step) == {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/kiln",
        "LANG": "C.UTF-8",
        "MY_VAR": "1",
        **CONTEXT,
        "AZ_BATCH_NODE_ROOT_DIR": str(node_root),
        "AZ_BATCH_NODE_SHARED_DIR": str(node_root / "shared"),
        "AZ_BATCH_NODE_STARTUP_DIR": str(node_root / "startup"),
        "AZ_BATCH_NODE_MOUNTS_DIR": str(node_root / "fsmounts"),
        "AZ_BATCH_TASK_DIR": str(task),
        "AZ_BATCH_TASK_WORKING_DIR": str(task / "wd"),
        "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES": "0",
        "AZ_BATCH_JOB_PREP_DIR": str(prep),
        "AZ_BATCH_JOB_PREP_WORKING_DIR": str(prep / "wd"),
    }


def test_prep_and_start_do_not_see_the_prep_dir(make_step: Callable[..., Step]) -> None:
    for kind, task_dir in [("prep", "workitems/j1/job-1/jobpreparation"), ("start", "startup")]:
        env = build(make_step(kind=kind, task_dir=task_dir, prep_task_dir="workitems/j1/job-1/jobpreparation"))
        assert "AZ_BATCH_JOB_PREP_DIR" not in env and "AZ_BATCH_JOB_PREP_WORKING_DIR" not in env
    release = build(
        make_step(
            kind="release", task_dir="workitems/j1/job-1/jobrelease", prep_task_dir="workitems/j1/job-1/jobpreparation"
        )
    )
    assert release["AZ_BATCH_JOB_PREP_DIR"].endswith("workitems/j1/job-1/jobpreparation")


def test_no_prep_dir_without_a_prep_task(make_step: Callable[..., Step]) -> None:
    assert "AZ_BATCH_JOB_PREP_DIR" not in build(make_step())


def test_user_variables_override_the_base_but_not_az_batch(make_step: Callable[..., Step], node_root: Path) -> None:
    step = make_step(environment={"PATH": "/custom", "AZ_BATCH_NODE_ROOT_DIR": "/fake"})
    env = build(step)
    assert env["PATH"] == "/custom"
    assert env["AZ_BATCH_NODE_ROOT_DIR"] == str(node_root)


def test_path_defaults_when_the_worker_has_none(make_step: Callable[..., Step]) -> None:
    step = make_step()
    env = environment.build_environment(step, layout.task_paths(step.node_root, step.task_dir), {})
    assert env["PATH"] == environment.TASK_PATH


def test_a_task_account_gets_its_own_login_variables(make_step: Callable[..., Step], node_root: Path) -> None:
    """The account has no home: HOME is the working directory, unless the user sets it."""
    step = make_step(task_dir="workitems/j1/job-1/t1", environment={"USER": "me"})
    paths = layout.task_paths(step.node_root, step.task_dir)
    env = environment.build_environment(step, paths, HOST, account=identity.Account(200_001, 200_001))
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (str(paths.wd), "me", "kiln-200001")
    own_home = make_step(environment={"HOME": "/data"})
    assert environment.build_environment(own_home, paths, HOST, account=identity.Account(1, 1))["HOME"] == "/data"


def test_a_root_worker_gives_steps_the_system_path_not_its_own(
    make_step: Callable[..., Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment, "isolating", lambda: True)
    host = {**HOST, "PATH": "/root/.pyenv/shims:/root/.cargo/bin:/usr/bin"}
    step = make_step()
    env = environment.build_environment(step, layout.task_paths(step.node_root, step.task_dir), host)
    assert env["PATH"] == environment.TASK_PATH == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_an_admin_named_user_account_runs_under_its_name(make_step: Callable[..., Step]) -> None:
    """It runs as root (no account to switch to), but USER, LOGNAME and HOME are its own."""
    step = make_step(scope="user", user={"name": "ops", "uid": None, "gid": None}, elevated=True)
    paths = layout.task_paths(step.node_root, step.task_dir)
    env = environment.build_environment(step, paths, HOST, account=None)
    assert (env["USER"], env["LOGNAME"], env["HOME"]) == ("ops", "ops", str(paths.wd))
