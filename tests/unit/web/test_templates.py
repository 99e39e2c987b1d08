"""The dashboard's templates on rows as the store gives them: a node's start task failure as a banner (once the
node row carries startTaskInfo), the heat map's cells, the progress bar."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from kiln.commands.dashboard import NodeCell, NodeView, PoolView, StartTaskFailure
from kiln.web.pages import templates

MACROS = templates.env.get_template("macros.html").module
REQUEST = SimpleNamespace(url=SimpleNamespace(path="/ui/pools/p/nodes/n1", query=""))


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


def test_a_nodes_page_shows_its_start_task_info_and_errors_once_the_row_has_them() -> None:
    info = {"state": "completed", "result": "failure", "exitCode": 7, "retryCount": 1,
            "failureInfo": {"code": "FailureExitCode", "message": "exit code 7"}}  # fmt: skip
    errors = [{"code": "StartTaskFailed", "message": "The start task failed",
               "errorDetails": [{"name": "ExitCode", "value": "7"}]}]  # fmt: skip
    row = {"id": "n1", "scheduling_state": "enabled", "total_tasks_run": 0, "total_tasks_succeeded": 0,
           "allocation_time": None, "start_task_info": info, "errors": errors}  # fmt: skip
    pool_row = {"id": "p", "task_slots_per_node": 2, "spec": {"startTask": {"commandLine": "false"}}}
    view = NodeView(pool_row, NodeCell(row, "starttaskfailed", 0, 0), [], [])
    html = templates.env.get_template("node.html").render(
        request=REQUEST, node=view, path="", listing=[], file_href=str
    )
    assert "FailureExitCode: exit code 7" in html and "<dt>Retries</dt><dd>1</dd>" in html
    assert "<strong>StartTaskFailed</strong>: The start task failed" in html and "ExitCode: 7" in html

    row.update(start_task_info=None, errors=None)
    html = templates.env.get_template("node.html").render(
        request=REQUEST, node=view, path="", listing=[], file_href=str
    )
    assert "it has not reported on this node" in html and "StartTaskFailed" not in html
    assert 'hx-get="/ui/pools/p/nodes/n1" hx-trigger="every 2s"' in " ".join(html.split())  # its live part


def test_a_page_without_a_live_part_does_not_poll_itself() -> None:
    html = templates.env.get_template("file.html").render(
        request=REQUEST, path="stdout.txt", text="hello", back="/ui/jobs/j/tasks/t", url="/ui/jobs/j/tasks/t/file"
    )
    assert 'id="live"' not in html and 'hx-get="/ui/jobs/j/tasks/t/file?path=stdout.txt&amp;tail=true"' in html


def test_a_nodes_page_lists_its_recent_tasks_each_linked_to_its_job_and_task_page() -> None:
    row = {"id": "n1", "scheduling_state": "enabled", "total_tasks_run": 3, "total_tasks_succeeded": 1,
           "allocation_time": None, "start_task_info": None, "errors": None}  # fmt: skip
    started, ended = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC)
    tasks = [
        {"job_id": "j1", "id": "ok", "state": "completed", "result": "success", "exit_code": 0,
         "start_time": started, "end_time": ended},
        {"job_id": "j1", "id": "broke", "state": "completed", "result": "failure", "exit_code": 3,
         "start_time": started, "end_time": ended},
        {"job_id": "j2", "id": "busy", "state": "running", "result": None, "exit_code": None,
         "start_time": started, "end_time": None},
    ]  # fmt: skip
    view = NodeView({"id": "p", "task_slots_per_node": 2, "spec": {}}, NodeCell(row, "running", 1, 1), tasks, [])
    html = templates.env.get_template("node.html").render(
        request=REQUEST, node=view, path="", listing=[], file_href=str
    )
    table = html[html.index("<h2>Recent tasks</h2>") :].split("</table>")[0]
    rows = [" ".join(r.split()) for r in table.split("<tr>")[2:]]  # after the header's
    assert len(rows) == 3 and "No task has run here" not in table
    ok, broke, busy = rows
    assert '<a href="/ui/jobs/j1">j1</a>' in ok and '<a href="/ui/jobs/j1/tasks/ok">ok</a>' in ok
    assert "completed · success" in ok and "<td>0</td>" in ok  # exit code 0 shows, it is not "none"
    assert "<td>2026-01-02 03:04:05</td><td>2026-01-02 03:04:09</td>" in ok
    assert 'class="state state-completed result-failure">completed · failure' in broke and "<td>3</td>" in broke
    assert (
        '<a href="/ui/jobs/j2/tasks/busy">busy</a>' in busy and "<td></td><td>2026-01-02 03:04:05</td><td></td>" in busy
    )
    assert "1 of the recent tasks below failed." in html  # under Errors

    empty = NodeView(view.pool, view.cell, [], [])
    html = templates.env.get_template("node.html").render(
        request=REQUEST, node=empty, path="", listing=[], file_href=str
    )
    assert "No task has run here." in html and "recent tasks below failed" not in html
