"""kiln.web.timeline: tasks packed into their nodes' slot rows, and placed on the time axis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiln.web import timeline

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else T0 + timedelta(seconds=seconds)


def task(task_id: str, node: str | None, start: float | None, end: float | None, result: str | None = "success"):
    return {"id": task_id, "node_id": node, "start_time": moment(start), "end_time": moment(end), "result": result}


def test_a_task_takes_the_first_slot_row_of_its_node_free_when_it_starts() -> None:
    drawn = timeline.lay_out(
        [
            task("a", "n1", 0, 10),
            task("b", "n1", 1, 4),
            task("c", "n1", 4, 8),  # b's row is free again at 4
            task("d", "n1", 5, 9),  # both rows busy: a third
            task("e", "n2", 2, 3),
        ],
        until=T0 + timedelta(seconds=20),
    )
    assert drawn.rows == [("n1", 0), ("n1", 1), ("n1", 2), ("n2", 0)]
    assert {bar.task_id: bar.row for bar in drawn.bars} == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}


def test_the_axis_runs_from_the_first_start_to_the_last_end_or_now_while_a_task_runs() -> None:
    done = timeline.lay_out([task("a", "n", 10, 20), task("b", "n", 15, 30)], until=T0 + timedelta(hours=1))
    assert (done.start, done.end) == (T0 + timedelta(seconds=10), T0 + timedelta(seconds=30))
    a, b = done.bars
    assert a.x == timeline.LABEL_WIDTH and b.x + b.width == timeline.WIDTH

    now = T0 + timedelta(seconds=40)
    running = timeline.lay_out([task("a", "n", 10, 20), task("r", "n", 15, None, result=None)], until=now)
    assert running.end == now
    assert [bar.outcome for bar in running.bars] == ["success", "running"]


def test_tasks_that_never_started_draw_nothing_and_an_instant_task_still_shows() -> None:
    assert timeline.lay_out([task("w", None, None, None, None)], until=T0).bars == []
    drawn = timeline.lay_out([task("a", "n", 0, 100), task("i", "n", 50, 50, "failure")], until=T0)
    assert drawn.bars[1].width >= 1.0 and drawn.bars[1].outcome == "failure"


def test_a_row_label_keeps_the_distinct_end_of_a_long_node_id() -> None:
    assert timeline.label("tvmps_675583d2d27a4f52901ca939_d", 1) == "…f52901ca939_d · 1"
    assert timeline.label("n1", 0) == "n1 · 0"


def test_the_svg_has_a_labelled_row_per_node_slot_and_a_linked_bar_per_task() -> None:
    drawn = timeline.lay_out(
        [task("a", "n<1>", 0, 10), task("b", "n<1>", 1, 4, "failure"), task("r", "n2", 2, None, None)],
        until=T0 + timedelta(seconds=20),
    )
    svg = str(timeline.svg(drawn, "job 1"))
    assert svg.startswith('<svg class="timeline" viewBox="0 0 1000 ') and svg.endswith("</svg>")
    assert svg.count('<text class="lane"') == 3 and "n&lt;1&gt; · 1" in svg  # escaped, never markup
    assert '<a href="/ui/jobs/job%201/tasks/b"><rect class="bar failure"' in svg
    assert svg.count('class="bar success"') == 1 and svg.count('class="bar running"') == 1
    assert "r on n2: running, 00:00:02.000</title>" in svg  # a running task has no end yet
    assert f'<text class="axis" x="{timeline.LABEL_WIDTH}"' in svg and ">00:00:20.000</text>" in svg
