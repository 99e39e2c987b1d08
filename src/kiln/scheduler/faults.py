"""Faults on demand that wait for their moment: the next preparation task a node runs fails with a given
exit code (`kiln fault fail-next-prep`). Kept in memory: a restart forgets them."""

from __future__ import annotations

import dataclasses
import shlex
from datetime import datetime

from kiln import story
from kiln.compute.protocol import Step
from kiln.undo import TrackedDict

#: The faults' names in stories (a record's to_state) and in `kiln fault`.
LOSE_NODE = "lose-node"
FAIL_NEXT_PREP = "fail-next-prep"
KILL_TASK = "kill-task"


class PendingFaults:
    def __init__(self) -> None:
        #: node id -> the exit code its next preparation task ends with
        self.prep_exit_codes: dict[str, int] = TrackedDict()  #: tracked: a failed commit gives the fault back

    def prep_step(self, step: Step, job_key: str, node_id: str, now: datetime) -> Step:
        """The prep step as the node will run it: a pending fault swaps its command line for an exit with
        the code asked for, noted in the story of the job's tasks on the node."""
        code = self.prep_exit_codes.pop(node_id, None)
        if code is None:
            return step
        story.note(
            "fault", {"job_key": job_key, "node_id": node_id}, None, FAIL_NEXT_PREP, {}, {"exit_code": code}, now
        )
        return dataclasses.replace(step, command_line=f"/bin/sh -c {shlex.quote(f'exit {code}')}")
