"""Issue 20.2: a task swapping symlinks in its working directory must not make the file API, which reads as
root on the node, serve a byte from outside the node root."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from azure.batch import models

from kiln.api.client_auth import SharedKeyAuth
from kiln.testing import read_task_file, unique, wait_for, wait_tasks_completed

#: As many GETs on every machine, however loaded (a quiet one makes ~200 a second): the test's power is the
#: number of races tried, not a time.
GETS = 10_000
GETTERS = 8
REAL = b"not a secret\n"

#: Run by a non-admin task (the default identity: a task account), as fast as it goes, until told to stop (at
#: most 600 s): `x`
#: is now a hard link of real.txt, now a symlink to /etc/shadow; `d` now a directory holding a `shadow` of
#: its own, now a symlink to /etc. Perl (perl-base is essential on Debian) swaps without forking per link.
#: Prints how many rounds it made.
SWAPPER = r"""
my ($stop, $started) = @ARGV;
open(my $real, ">", "real.txt") or die; print $real "not a secret\n"; close $real;
mkdir "d" or die; link("real.txt", "d/shadow") or die; link("real.txt", "x") or die;
my $rounds = 0;
while (!-e $stop && time - $^T < 600) {
    symlink("/etc/shadow", "x.new") or die; rename("x.new", "x") or die;
    link("real.txt", "x.new") or die; rename("x.new", "x") or die;
    rename("d", "d.real") or die; symlink("/etc", "d") or die; unlink("d") or die; rename("d.real", "d") or die;
    open(my $mark, ">", $started) or die if $rounds++ == 0;
}
print "$rounds\n";
"""


@pytest.mark.timeout(900)
def test_ten_thousand_gets_under_a_symlink_swapping_task_read_nothing_outside(
    client, server, pool, cleanup, open_tmp: Path, marks_dir: Path
):
    shadow = Path("/etc/shadow").read_bytes()
    assert shadow and REAL not in shadow
    script = open_tmp / "swapper.pl"
    script.write_text(SWAPPER)
    job_id = unique("race")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    cleanup(job=job_id)
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="swapper",
            command_line=f"/usr/bin/perl {script} {marks_dir / 'stop'} {marks_dir / 'started'}",
        ),
    )
    wait_for(lambda: (marks_dir / "started").exists(), 30, "the swapper started")
    url = f"{server.endpoint}/jobs/{job_id}/tasks/swapper/files"
    answers: Counter[tuple[int, bytes]] = Counter()
    with httpx.Client(auth=SharedKeyAuth(server.account_name, server.account_key), timeout=30) as http:

        def get_every_nth(first: int) -> Counter[tuple[int, bytes]]:
            """(status, body) of GETs first, first + GETTERS, ...: the swapped file and the file in the swapped dir."""
            seen: Counter[tuple[int, bytes]] = Counter()
            for n in range(first, GETS, GETTERS):
                response = http.get(
                    f"{url}/{('wd%2Fx', 'wd%2Fd%2Fshadow')[n % 2]}", params={"api-version": "2025-06-01"}
                )
                seen[response.status_code, response.content if response.status_code == 200 else _code(response)] += 1
            return seen

        with ThreadPoolExecutor(GETTERS) as getters:
            for seen in getters.map(get_every_nth, range(GETTERS)):
                answers.update(seen)
    (marks_dir / "stop").touch()
    task = wait_tasks_completed(client, job_id, 30)[0]
    rounds = int(read_task_file(client, job_id, "swapper", "stdout.txt"))

    leaked = sum(count for (status, body), count in answers.items() if status == 200 and body != REAL)
    statuses: Counter[tuple[int, bytes]] = Counter()
    for (status, body), count in answers.items():
        statuses[status, body[:20]] += count
    assert leaked == 0, f"{leaked} of {answers.total()} answers held bytes from outside the node root: {statuses}"
    assert answers.total() == GETS and answers[(200, REAL)] > 0, statuses
    assert {status for status, _ in answers} <= {200, 404}, statuses
    assert task.execution_info.exit_code == 0 and rounds > 10, (task.execution_info, rounds)


def _code(response: httpx.Response) -> bytes:
    """The Batch error code (a HEAD-like 404 of a streamed body may have none)."""
    return response.json().get("code", "").encode() if response.content else b""
