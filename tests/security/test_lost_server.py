"""A node starts nothing once it has lost its server (issue 20.8): the server is SIGKILLed (alone, not its
workers) while a node is busy starting short tasks, several sent ahead; no command may start after it died,
or its run would never be counted and a restarted server would run the task again."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from azure.batch import models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, shell, unique, wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="the lifeline is a pidfd")

TASKS = 300


def boot_ticks() -> float:
    """Now, in the clock of /proc/PID/stat's starttime: clock ticks since boot."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK")


def test_no_command_starts_after_the_server_is_killed(open_tmp: Path, marks_dir: Path) -> None:
    server = EmbeddedServer(open_tmp / "kiln").start()
    assert server.process is not None
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=1, slots=4)
        workers = psutil.Process(server.process.pid).children(recursive=True)
        job_id = unique("lost")
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        # each command notes when it was forked (its starttime, in clock ticks since boot), first thing
        mark = shell(f"cut -d' ' -f22 /proc/$$/stat > {marks_dir}/$AZ_BATCH_TASK_ID.$$")
        client.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{n}", command_line=mark) for n in range(100)])
        wait_for(lambda: len(os.listdir(marks_dir)) >= 20, 60, "the node to be busy")
        client.create_tasks(
            job_id, [models.BatchTaskCreateOptions(id=f"t{n}", command_line=mark) for n in range(100, TASKS)]
        )
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        died_by = math.floor(boot_ticks())  # the server had ended by this tick
        wait_for(lambda: not any(w.is_running() and w.status() != "zombie" for w in workers), 30, "the node to go")
        started = {name: int((marks_dir / name).read_text() or 0) for name in os.listdir(marks_dir)}
        assert started, "no command ran"
        assert {name: tick for name, tick in started.items() if tick > died_by} == {}
    finally:
        server.kill()
