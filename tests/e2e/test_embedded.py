"""A `kiln serve` that a test, the demo or a benchmark started stops when that process dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kiln.testing import wait_for

STARTER = """
import sys
from pathlib import Path
from kiln.cli.embedded import EmbeddedServer
server = EmbeddedServer(Path(sys.argv[1])).start()
print(server.process.pid, flush=True)
sys.stdin.read()  # until the test kills this process
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_server_stops_when_the_process_that_started_it_is_killed(open_tmp: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(open_tmp / "kiln")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    server_pid = int(starter.stdout.readline())
    try:
        assert _alive(server_pid)
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        wait_for(lambda: not _alive(server_pid), timeout=60, what="the orphaned server to stop")
    finally:
        if _alive(server_pid):  # the server this test started, left behind: end it
            os.kill(server_pid, signal.SIGKILL)
