"""The dashboard's templates on rows as the store gives them: a node's start task failure as a banner (once the
node row carries startTaskInfo), the heat map's cells, the progress bar."""

from __future__ import annotations

from typing import Any

from kiln.commands.dashboard import NodeCell, PoolView, StartTaskFailure
from kiln.web.pages import templates

MACROS = templates.env.get_template("macros.html").module


def cell(node_id: str, state: str, used: int = 0, **row: Any) -> NodeCell:
    return NodeCell({"id": node_id, **row}, state, used, used)


def pool(*cells: NodeCell, failures: list[StartTaskFailure] | None = None) -> PoolView:
    return PoolView({"id": "p", "task_slots_per_node": 3}, list(cells), failures or [])


def test_a_failed_start_task_is_a_banner_with_the_exit_code_failure_and_stderr_tail() -> None:
    info = {
        "state": "completed",
        "result": "failure",
        "exitCode": 7,
        "failureInfo": {"code": "FailureExitCode", "message": "The task process exited with an unexpected exit code"},
    }
    failed = cell("n1", "starttaskfailed", start_task_info=info)
    assert failed.start_task_failed and not cell("n2", "idle").start_task_failed
    assert cell("n3", "idle", start_task_info={"state": "completed", "result": "failure"}).start_task_failed
    html = str(MACROS.failures(pool(failed, failures=[StartTaskFailure(failed, "mount: <permission> denied\n")])))
    assert 'href="/ui/pools/p/nodes/n1"' in html
    assert "with exit code 7" in html and "FailureExitCode" in html
    assert "mount: &lt;permission&gt; denied" in html  # the tail is escaped, never markup


def test_the_heat_map_has_a_cell_per_node_coloured_by_state_with_its_slots_in_use() -> None:
    html = str(MACROS.heatmap(pool(cell("n1", "running", used=2), cell("n2", "idle"))))
    assert html.count('class="node state-running"') == 1 and html.count('class="node state-idle"') == 1
    assert html.count('<i class="used">') == 2 and html.count("<i class") == 6
    assert "n1: running, 2 of 3 slots in use" in html


def test_the_progress_bar_splits_succeeded_failed_and_running() -> None:
    counts = {"active": 2, "running": 2, "completed": 4, "succeeded": 3, "failed": 1}
    html = str(MACROS.progress(counts))
    assert 'data-completed="4" data-total="8"' in html
    assert "width: 37.5%" in html and "width: 12.5%" in html and "width: 25.0%" in html
