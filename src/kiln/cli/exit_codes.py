"""What a `kiln` command's exit status means, so scripts can branch on it (documented in docs/cli.md)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: the service answered with an error not listed below (400 invalid input, 500, …)
    FAILED = 1
    #: bad command-line usage (Click's own code), or `kiln serve` refusing to start with the settings given
    USAGE = 2
    #: the pool, node, job, task, file or schedule does not exist (404)
    NOT_FOUND = 3
    #: it exists already, or is in a state that does not allow the operation (409)
    CONFLICT = 4
    #: the endpoint could not be reached
    UNREACHABLE = 5
    #: the account name or key was refused (401/403)
    AUTHENTICATION = 6
    #: `kiln job watch`: the job completed and at least one of its tasks failed
    TASKS_FAILED = 7
    #: `kiln job watch --timeout`: the job did not complete in time
    TIMED_OUT = 8
