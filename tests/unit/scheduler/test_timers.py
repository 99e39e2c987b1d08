"""Timers: each action runs once, at or after its due time, earliest first; a key scheduled again replaces it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from kiln.scheduler.timers import Timers
from kiln.wire.times import now


async def _run(schedule, expect: int) -> list[str]:
    fired: list[str] = []
    done = asyncio.Event()

    def action(name: str):
        async def run() -> None:
            fired.append(name)
            if len(fired) >= expect:
                done.set()

        return run

    timers = Timers()
    timers.start()
    try:
        schedule(timers, action)
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(0.05)  # nothing else fires
    finally:
        await timers.close()
    return fired


async def test_timers_fire_earliest_first_whatever_the_order_they_were_scheduled_in() -> None:
    def schedule(timers: Timers, action) -> None:
        start = now()
        timers.schedule("late", start + timedelta(milliseconds=60), action("late"))
        timers.schedule("early", start + timedelta(milliseconds=20), action("early"))  # wakes the sleeping loop
        timers.schedule("latest", start + timedelta(milliseconds=90), action("latest"))  # behind the head: no wake

    assert await _run(schedule, 3) == ["early", "late", "latest"]


async def test_a_timer_scheduled_behind_a_sleeping_head_still_fires_once_its_turn_comes() -> None:
    def schedule(timers: Timers, action) -> None:
        start = now()
        timers.schedule("head", start + timedelta(milliseconds=30), action("head"))
        for i in range(5):
            timers.schedule(f"t{i}", start + timedelta(milliseconds=40 + i), action(f"t{i}"))

    assert await _run(schedule, 6) == ["head", "t0", "t1", "t2", "t3", "t4"]


async def test_a_key_scheduled_again_replaces_it_and_a_cancelled_one_never_fires() -> None:
    def schedule(timers: Timers, action) -> None:
        start = now()
        timers.schedule("moved", start + timedelta(milliseconds=10), action("moved-early"))
        timers.schedule("moved", start + timedelta(milliseconds=40), action("moved-late"))
        timers.schedule("gone", start + timedelta(milliseconds=20), action("gone"))
        timers.cancel("gone")
        timers.schedule("last", start + timedelta(milliseconds=60), action("last"))

    assert await _run(schedule, 2) == ["moved-late", "last"]
