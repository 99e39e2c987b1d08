"""Autoscale through the SDK: create with a formula, enable, disable, evaluate, errors, and real scaling.

Batch evaluates at most every 5 minutes and samples every 30 s; these tests run a server of their own that
allows a 1 s interval (KILN_MIN_AUTOSCALE_INTERVAL) and samples every second (KILN_AUTOSCALE_SAMPLE_PERIOD).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.batch import BatchClient, models
from azure.core.exceptions import HttpResponseError

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import (
    create_pool_and_wait,
    make_client,
    pool_options,
    preempt_node,
    shell,
    unique,
    wait_for,
    wait_tasks_completed,
)

FAST = {"KILN_MIN_AUTOSCALE_INTERVAL": "PT1S", "KILN_AUTOSCALE_SAMPLE_PERIOD": "PT1S"}
HEAD = "$TargetDedicatedNodes={};$TargetLowPriorityNodes=0;$NodeDeallocationOption={}"
#: The documented pending-tasks formula over a 5 s window, capped at 2 nodes.
PENDING_TASKS = """
$samples = $PendingTasks.GetSamplePercent(TimeInterval_Second * 5);
$tasks = $samples < 70 ? max(0, $PendingTasks.GetSample(1)) :
    max($PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Second * 5)));
$targetVMs = $tasks > 0 ? $tasks : max(0, $TargetDedicatedNodes / 2);
$TargetDedicatedNodes = max(0, min($targetVMs, 2));
$NodeDeallocationOption = taskcompletion;
"""


@pytest.fixture(scope="module")
def fast_server(open_base) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(open_base / "autoscale", env=FAST) as running:
        yield running


@pytest.fixture(scope="module")
def ac(fast_server) -> BatchClient:
    return make_client(fast_server)


def _create(client: BatchClient, formula: str, interval: timedelta = timedelta(minutes=5), **fields) -> str:
    pool_id = unique("autoscale")
    client.create_pool(
        pool_options(
            pool_id,
            enable_auto_scale=True,
            auto_scale_formula=formula,
            auto_scale_evaluation_interval=interval,
            **fields,
        )
    )
    return pool_id


def _steady_with(client: BatchClient, pool_id: str, nodes: int, spot: int = 0) -> models.BatchPool:
    def steady() -> models.BatchPool | None:
        pool = client.get_pool(pool_id)
        counts = (pool.current_dedicated_nodes, pool.current_low_priority_nodes)
        return pool if pool.allocation_state == "steady" and counts == (nodes, spot) else None

    return wait_for(steady, 300, f"{pool_id} steady with {nodes} + {spot} nodes")  # node starts are slow on a busy host


def _error(call) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as caught:
        call()
    return caught.value


def test_a_pool_created_with_a_formula_takes_its_size_from_it(ac) -> None:
    pool_id = _create(ac, "$TargetDedicatedNodes = 2.9; spare = 1", interval=timedelta(minutes=6))
    pool = _steady_with(ac, pool_id, 2)
    assert pool.enable_auto_scale is True
    assert pool.auto_scale_formula == "$TargetDedicatedNodes = 2.9; spare = 1"
    assert pool.auto_scale_evaluation_interval == timedelta(minutes=6)
    assert pool.target_dedicated_nodes == 2
    assert pool.auto_scale_run.results == HEAD.format(2, "requeue") + ";$spare=1"
    assert pool.auto_scale_run.error is None
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


@pytest.mark.parametrize(
    ("fields", "code", "detail"),
    [
        ({"auto_scale_formula": "$TargetDedicatedNodes = (1"}, "AutoScalingFormulaSyntaxError", "Line 1, Col 27"),
        ({"auto_scale_formula": "$CPUPercent = 1"}, "AutoScalingFormulaSyntaxError", "read-only"),
        ({"auto_scale_formula": "a = 1;" + " " * 8200}, "AutoScalingFormulaTooLong", None),
        ({"auto_scale_formula": "a = 1", "target_dedicated_nodes": 1}, "InvalidPropertyValue", None),
        (
            {"auto_scale_formula": "a = 1", "auto_scale_evaluation_interval": timedelta(hours=169)},
            "InvalidPropertyValue",
            None,
        ),
        ({}, "MissingRequiredProperty", None),
    ],
    ids=["syntax", "read-only", "too-long", "targets-too", "interval", "no-formula"],
)
def test_bad_autoscale_settings_at_create_are_400(ac, fields, code, detail) -> None:
    pool_id = unique("bad")
    options = pool_options(pool_id, enable_auto_scale=True, **fields)
    error = _error(lambda: ac.create_pool(options))
    assert (error.status_code, error.error.code) == (400, code)
    if detail:
        assert any(detail in (d.message or "") for d in error.error.details or [])
    assert pool_id not in [p.id for p in ac.list_pools()]


def test_enable_evaluate_disable(ac) -> None:
    pool_id = create_pool_and_wait(ac, nodes=1)
    evaluate = models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = 3")
    assert _error(lambda: ac.evaluate_pool_auto_scale(pool_id, evaluate)).status_code == 409
    no_formula = models.BatchPoolEnableAutoScaleOptions(auto_scale_evaluation_interval=timedelta(minutes=5))
    refused = _error(lambda: ac.enable_pool_auto_scale(pool_id, no_formula))
    assert (refused.status_code, refused.error.code) == (400, "InvalidAutoScalingSettings")

    enable = models.BatchPoolEnableAutoScaleOptions(
        auto_scale_formula="$TargetDedicatedNodes = 2; $NodeDeallocationOption = requeue",
        auto_scale_evaluation_interval=timedelta(minutes=10),
    )
    ac.enable_pool_auto_scale(pool_id, enable)
    pool = ac.get_pool(pool_id)  # evaluated at once
    assert (pool.enable_auto_scale, pool.target_dedicated_nodes) == (True, 2)
    assert pool.auto_scale_run.results == HEAD.format(2, "requeue")
    _steady_with(ac, pool_id, 2)

    again = _error(lambda: ac.enable_pool_auto_scale(pool_id, enable))
    assert (again.status_code, again.error.code) == (503, "TooManyEnableAutoScaleRequests")
    resize = _error(
        lambda: ac.begin_resize_pool(pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=1)).result()
    )
    assert resize.status_code == 409
    node_id = next(iter(ac.list_nodes(pool_id))).id
    remove = _error(lambda: ac.begin_remove_nodes(pool_id, models.BatchNodeRemoveOptions(node_ids=[node_id])).result())
    assert remove.status_code == 409

    run = ac.evaluate_pool_auto_scale(pool_id, evaluate)
    assert run.results == HEAD.format(3, "requeue") and run.error is None
    failing = ac.evaluate_pool_auto_scale(
        pool_id, models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="n = 1;\n$TargetDedicatedNodes = n / 0")
    )
    assert failing.error.code == "AutoScalingFormulaEvaluationError"
    assert failing.error.error_values[0].value == "Line 2, Col 25: Division by zero."
    assert failing.results == HEAD.format(2, "requeue") + ";$n=1"
    syntax = _error(
        lambda: ac.evaluate_pool_auto_scale(pool_id, models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="x ="))
    )
    assert (syntax.status_code, syntax.error.code) == (400, "AutoScalingFormulaSyntaxError")
    pool = ac.get_pool(pool_id)
    assert pool.target_dedicated_nodes == 2  # evaluating applies nothing
    assert pool.auto_scale_run.results == HEAD.format(2, "requeue")

    ac.disable_pool_auto_scale(pool_id)
    pool = ac.get_pool(pool_id)
    assert (pool.enable_auto_scale, pool.target_dedicated_nodes, pool.auto_scale_formula) == (False, 2, None)
    ac.begin_resize_pool(pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1).result()
    _steady_with(ac, pool_id, 1)
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


def test_a_new_pool_has_no_samples_yet(ac) -> None:
    pool_id = _create(ac, "$TargetDedicatedNodes = max($PendingTasks.GetSample(TimeInterval_Minute, 70))")
    run = ac.get_pool(pool_id).auto_scale_run
    assert run.error.code == "InsufficientSampleData"
    assert run.error.message == "Autoscale evaluation failed due to insufficient sample data"
    assert run.error.error_values[0].value == (
        "Line 1, Col 29: Insufficient data from data set: $PendingTasks wanted 70%, received 0%"
    )
    assert run.results == HEAD.format(0, "requeue")
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


def test_the_pending_tasks_formula_grows_the_pool_and_shrinks_it_to_zero(ac, marks_dir) -> None:
    """Tasks wait on a file: the pool grows to 2 nodes (its cap) for 3 waiting tasks; a formula of 0 nodes with
    taskcompletion lets the running tasks finish (none is requeued, as requeue would), then the pool is empty."""
    pool_id = _create(ac, PENDING_TASKS, interval=timedelta(seconds=2))
    job_id = unique("autoscale-job")
    ac.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    hold = shell(f"while [ ! -f {marks_dir}/go ]; do sleep 0.1; done")
    tasks = [models.BatchTaskCreateOptions(id=f"t{i}", command_line=hold) for i in range(3)]
    ac.create_tasks(job_id, tasks)

    _steady_with(ac, pool_id, 2)
    wait_for(lambda: any(t.state == "running" for t in ac.list_tasks(job_id)), 60, "a running task")
    ac.enable_pool_auto_scale(
        pool_id,
        models.BatchPoolEnableAutoScaleOptions(
            auto_scale_formula="$TargetDedicatedNodes = 0; $NodeDeallocationOption = taskcompletion"
        ),
    )
    pool = ac.get_pool(pool_id)
    assert (pool.target_dedicated_nodes, pool.allocation_state) == (0, "resizing")
    # idle nodes leave at once; a node with a task stays until its task has finished
    busy = wait_for(
        lambda: (nodes := list(ac.list_nodes(pool_id))) and all(n.state == "running" for n in nodes) and nodes,
        60,
        "only busy nodes left",
    )
    assert ac.get_pool(pool_id).allocation_state == "resizing"
    assert len(busy) >= 1
    (marks_dir / "go").touch()
    _steady_with(ac, pool_id, 0)
    ended = [t for t in ac.list_tasks(job_id) if t.state == "completed"]
    assert ended
    assert [(t.execution_info.requeue_count, t.execution_info.exit_code) for t in ended] == [(0, 0)] * len(ended)
    ac.begin_delete_job(job_id, polling_interval=0.5).result()
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


def test_the_pending_tasks_formula_shrinks_an_idle_pool_to_zero(ac) -> None:
    pool_id = _create(ac, PENDING_TASKS, interval=timedelta(seconds=1))
    job_id = unique("autoscale-job")
    ac.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    ac.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="true") for i in range(2)])
    wait_tasks_completed(ac, job_id)  # on nodes the formula asked for
    pool = _steady_with(ac, pool_id, 0)
    assert pool.auto_scale_run.results.startswith(HEAD.format(0, "taskcompletion"))
    ac.begin_delete_job(job_id, polling_interval=0.5).result()
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


@pytest.mark.parametrize("option", ["requeue", "terminate"])
def test_a_shrink_requeues_or_ends_the_tasks_of_the_nodes_it_removes(ac, marks_dir, option) -> None:
    pool_id = _create(ac, "$TargetDedicatedNodes = 1")
    job_id = unique("autoscale-job")
    ac.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    hold = shell(f"while [ ! -f {marks_dir}/go ]; do sleep 0.1; done")
    ac.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line=hold))
    wait_for(lambda: ac.get_task(job_id, "t").state == "running", 300, "the task running")
    formula = f"$TargetDedicatedNodes = 0; $NodeDeallocationOption = {option}"
    ac.enable_pool_auto_scale(pool_id, models.BatchPoolEnableAutoScaleOptions(auto_scale_formula=formula))
    _steady_with(ac, pool_id, 0)
    task = ac.get_task(job_id, "t")
    if option == "requeue":
        assert (task.state, task.execution_info.requeue_count) == ("active", 1)
    else:
        assert (task.state, task.execution_info.requeue_count) == ("completed", 0)
        assert task.execution_info.failure_info.code == "TaskEnded"
    ac.begin_delete_job(job_id, polling_interval=0.5).result()
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


def test_after_a_restart_autoscale_goes_on_and_the_samples_start_afresh(open_tmp) -> None:
    """Samples live in memory: after a restart the history begins after the restart, as a new pool's does."""
    server = EmbeddedServer(open_tmp / "data", env=FAST).start()
    try:
        client = make_client(server)
        pool_id = _create(client, "$TargetDedicatedNodes = 0; n = $PendingTasks.Count()", interval=timedelta(seconds=2))
        wait_for(lambda: not client.get_pool(pool_id).auto_scale_run.results.endswith("$n=0"), 120, "samples taken")
        assert server.stop() == 0
        restarted = datetime.now(UTC)
        server = EmbeddedServer(open_tmp / "data", port=server.port, env=FAST).start()
        client = make_client(server)
        pool = client.get_pool(pool_id)
        assert (pool.enable_auto_scale, pool.auto_scale_evaluation_interval) == (True, timedelta(seconds=2))
        wait_for(lambda: client.get_pool(pool_id).auto_scale_run.timestamp > restarted, 120, "an evaluation")
        begin = "b = $PendingTasks.HistoryBeginTime()"
        run = wait_for(
            lambda: (r := client.evaluate_pool_auto_scale(pool_id, _evaluate(begin))).error is None and r,
            120,
            "a sample after the restart",
        )
        first = datetime.fromisoformat(run.results.split("$b=")[1].replace("Z", "+00:00"))
        assert first > restarted
    finally:
        server.stop()


def _evaluate(formula: str) -> models.BatchPoolEvaluateAutoScaleOptions:
    return models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=formula)


def _variables(run: models.AutoScaleRun) -> dict[str, str]:
    """autoScaleRun.results as name -> printed value; a run that failed has none to read."""
    assert run.error is None, run.error
    return dict(item.split("=", 1) for item in run.results.split(";"))


def test_enable_on_a_resizing_pool_is_409(ac, marks_dir) -> None:
    """A shrink with taskcompletion keeps the pool resizing while its busy node finishes its task."""
    pool_id = create_pool_and_wait(ac, nodes=1)
    job_id = unique("autoscale-job")
    ac.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    hold = shell(f"while [ ! -f {marks_dir}/go ]; do sleep 0.1; done")
    ac.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line=hold))
    wait_for(lambda: ac.get_task(job_id, "t").state == "running", 300, "the task running")
    shrink = models.BatchPoolResizeOptions(target_dedicated_nodes=0, node_deallocation_option="taskcompletion")
    ac.begin_resize_pool(pool_id, shrink)  # sent; not waited for
    assert ac.get_pool(pool_id).allocation_state == "resizing"

    enable = models.BatchPoolEnableAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = 2")
    refused = _error(lambda: ac.enable_pool_auto_scale(pool_id, enable))
    assert (refused.status_code, refused.error.code) == (409, "PoolBeingResized")
    pool = ac.get_pool(pool_id)
    assert (pool.enable_auto_scale, pool.target_dedicated_nodes, pool.allocation_state) == (False, 0, "resizing")

    (marks_dir / "go").touch()
    _steady_with(ac, pool_id, 0)
    ac.enable_pool_auto_scale(pool_id, enable)  # steady: it may
    assert ac.get_pool(pool_id).target_dedicated_nodes == 2
    ac.begin_delete_job(job_id, polling_interval=0.5).result()
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


def test_a_bad_enable_is_400_and_changes_nothing(ac) -> None:
    pool_id = _create(ac, "$TargetDedicatedNodes = 0", interval=timedelta(minutes=7))
    syntax = models.BatchPoolEnableAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = (1")
    error = _error(lambda: ac.enable_pool_auto_scale(pool_id, syntax))
    assert (error.status_code, error.error.code) == (400, "AutoScalingFormulaSyntaxError")
    assert any("Line 1, Col 27" in (d.message or "") for d in error.error.details or [])
    error = _error(lambda: ac.enable_pool_auto_scale(pool_id, models.BatchPoolEnableAutoScaleOptions()))
    assert (error.status_code, error.error.code) == (400, "InvalidAutoScalingSettings")
    pool = ac.get_pool(pool_id)
    assert (pool.auto_scale_formula, pool.auto_scale_evaluation_interval) == (
        "$TargetDedicatedNodes = 0",
        timedelta(minutes=7),
    )
    # refused enables do not count: one may follow at once
    ac.enable_pool_auto_scale(pool_id, models.BatchPoolEnableAutoScaleOptions(auto_scale_formula="n = 1"))
    assert ac.get_pool(pool_id).auto_scale_run.results == HEAD.format(0, "requeue") + ";$n=1"
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


def test_an_interval_under_five_minutes_is_400_on_a_server_without_a_lower_minimum(client, cleanup) -> None:
    """The session server has no KILN_MIN_AUTOSCALE_INTERVAL: Batch's 5 minutes hold, at create and enable."""
    short = timedelta(minutes=4, seconds=59)
    pool_id = unique("autoscale")
    error = _error(
        lambda: client.create_pool(
            pool_options(
                pool_id,
                enable_auto_scale=True,
                auto_scale_formula="$TargetDedicatedNodes = 0",
                auto_scale_evaluation_interval=short,
            )
        )
    )
    assert (error.status_code, error.error.code) == (400, "InvalidPropertyValue")
    pool_id = _create(client, "$TargetDedicatedNodes = 0", interval=timedelta(minutes=5))  # the least
    cleanup(pool=pool_id)
    enable = models.BatchPoolEnableAutoScaleOptions(auto_scale_evaluation_interval=short)
    error = _error(lambda: client.enable_pool_auto_scale(pool_id, enable))
    assert (error.status_code, error.error.code) == (400, "InvalidPropertyValue")
    assert ("PropertyName", "autoScaleEvaluationInterval") in {(d.code, d.message) for d in error.error.details}
    assert client.get_pool(pool_id).auto_scale_evaluation_interval == timedelta(minutes=5)


def test_a_new_interval_restarts_the_timer(ac) -> None:
    """Every 4 s, then an enable with 8 s just after an evaluation: the next is 8 s after the enable's own
    evaluation, not where the old timer had it (4 s after the previous one)."""
    pool_id = _create(ac, "$TargetDedicatedNodes = 0", interval=timedelta(seconds=4))

    def evaluated_after(moment: datetime) -> datetime | None:
        stamp = ac.get_pool(pool_id).auto_scale_run.timestamp
        return stamp if stamp > moment else None

    created = ac.get_pool(pool_id).auto_scale_run.timestamp
    ticked = wait_for(lambda: evaluated_after(created), 60, "a timer's evaluation")
    enable = models.BatchPoolEnableAutoScaleOptions(auto_scale_evaluation_interval=timedelta(seconds=8))
    ac.enable_pool_auto_scale(pool_id, enable)
    enabled = ac.get_pool(pool_id).auto_scale_run.timestamp
    assert enabled > ticked  # the enable evaluated at once
    following = wait_for(lambda: evaluated_after(enabled), 60, "the next evaluation")
    assert timedelta(seconds=7) < following - enabled < timedelta(seconds=30)
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


#: The pool's node counts, as a formula reads them.
NODE_COUNTS = (
    "d = $CurrentDedicatedNodes; l = $CurrentLowPriorityNodes; p = $PreemptedNodeCount;"
    " u = $UsableNodeCount; s = $TaskSlotsPerNode"
)


def test_node_counts_and_a_preempted_spot_node_as_a_formula_reads_them(ac, fast_server) -> None:
    """A preempted spot node still counts in $CurrentLowPriorityNodes, is not usable, and counts in
    $PreemptedNodeCount (its samples too) until it is back."""
    pool_id = _create(ac, "$TargetDedicatedNodes = 1; $TargetLowPriorityNodes = 1", task_slots_per_node=3)
    _steady_with(ac, pool_id, 1, spot=1)
    wait_for(lambda: all(n.state == "idle" for n in ac.list_nodes(pool_id)), 120, "both nodes idle")
    counts = _variables(ac.evaluate_pool_auto_scale(pool_id, _evaluate(NODE_COUNTS)))
    assert (counts["$d"], counts["$l"], counts["$p"], counts["$u"], counts["$s"]) == ("1", "1", "0", "2", "3")

    spot = next(n for n in ac.list_nodes(pool_id) if not n.is_dedicated)
    assert preempt_node(fast_server, pool_id, spot.id).status_code == 200
    counts = _variables(ac.evaluate_pool_auto_scale(pool_id, _evaluate(NODE_COUNTS)))
    assert (counts["$d"], counts["$l"], counts["$p"], counts["$u"]) == ("1", "1", "1", "1")
    sampled = "m = max($PreemptedNodeCount.GetSample(TimeInterval_Minute))"
    wait_for(
        lambda: (
            (run := ac.evaluate_pool_auto_scale(pool_id, _evaluate(sampled))).error is None
            and _variables(run)["$m"] == "1"
        ),
        60,
        "a sample with the preempted node",
    )

    wait_for(lambda: ac.get_node(pool_id, spot.id).state == "idle", 120, "the preempted node back")
    counts = _variables(ac.evaluate_pool_auto_scale(pool_id, _evaluate(NODE_COUNTS)))
    assert (counts["$l"], counts["$p"], counts["$u"]) == ("1", "0", "2")
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()


def test_active_tasks_leave_out_those_waiting_for_dependencies_and_cpu_is_measured(ac, marks_dir) -> None:
    """One slot: `a` or `b` runs (a busy loop), the other waits for the slot, `c` waits for `a`: one active task,
    one running, two pending; the running task's CPU shows in $CPUPercent."""
    pool_id = _create(ac, "$TargetDedicatedNodes = 1")
    _steady_with(ac, pool_id, 1)
    job_id = unique("autoscale-job")
    ac.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), uses_task_dependencies=True
        )
    )
    burn = shell(f"while [ ! -f {marks_dir}/go ]; do :; done")
    after_a = models.BatchTaskDependencies(task_ids=["a"])
    ac.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(id="a", command_line=burn),
            models.BatchTaskCreateOptions(id="b", command_line=burn),
            models.BatchTaskCreateOptions(id="c", command_line="true", depends_on=after_a),
        ],
    )
    metrics = "a = $ActiveTasks.GetSample(1); r = $RunningTasks.GetSample(1); p = $PendingTasks.GetSample(1);" + (
        " cpu = $CPUPercent.GetSample(1)"
    )

    def burning() -> dict[str, str] | None:
        run = ac.evaluate_pool_auto_scale(pool_id, _evaluate(metrics))
        if run.error is not None:
            return None  # no sample yet
        values = _variables(run)
        return values if values["$r"] == "[1]" and float(values["$cpu"].strip("[]")) > 0 else None

    try:
        values = wait_for(burning, 120, "a sample of the running task using CPU")
        assert (values["$a"], values["$p"]) == ("[1]", "[2]")
    finally:
        (marks_dir / "go").touch()
    wait_tasks_completed(ac, job_id)
    ac.begin_delete_job(job_id, polling_interval=0.5).result()
    ac.begin_delete_pool(pool_id, polling_interval=0.5).result()
