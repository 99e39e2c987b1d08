"""core.job_token: job-scoped bearer tokens (issue, verify, scope)."""

from __future__ import annotations

import pytest

from kiln.core.job_token import JobScope, JobTokens, path_in_scope

KEY = b"account key"


def test_a_token_verifies_to_the_job_it_was_issued_for():
    token = JobTokens(KEY).issue("My-Job", 7)
    assert JobTokens(KEY).verify(token) == JobScope("My-Job", 7)
    assert JobTokens(KEY).verify(f"  {token} ") == JobScope("My-Job", 7)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # MAC changed
        lambda t: t.replace(".7.", ".8."),  # another incarnation of the job
        lambda t: "kjt2" + t[4:],  # unknown version
        lambda t: t + ".x",
        lambda t: "",
        lambda t: "kjt1.!!.7.!!",
    ],
)
def test_tampered_or_malformed_tokens_are_refused(mangle):
    assert JobTokens(KEY).verify(mangle(JobTokens(KEY).issue("My-Job", 7))) is None


def test_another_account_key_refuses_the_token():
    assert JobTokens(b"other key").verify(JobTokens(KEY).issue("j", 1)) is None


def test_the_job_id_in_a_token_cannot_be_swapped():
    token = JobTokens(KEY).issue("a", 1)
    _, _, seq, mac = token.split(".")
    swapped = ".".join(("kjt1", JobTokens(KEY).issue("b", 1).split(".")[1], seq, mac))
    assert JobTokens(KEY).verify(swapped) is None


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/jobs/My-Job", True),
        ("/jobs/my-job/tasks", True),
        ("/jobs/MY-JOB/tasks/t1/files/stdout.txt", True),
        ("/jobs/My-Job/addtaskcollection", True),
        ("/jobs", False),
        ("/jobs/other", False),
        ("/jobs/My-Job-2/tasks", False),
        ("/pools", False),
        ("/pools/jobs/My-Job", False),
    ],
)
def test_scope_is_the_job_and_below(path, allowed):
    assert path_in_scope(path, JobScope("My-Job", 7)) is allowed


def test_a_token_whose_sequence_is_a_non_ascii_digit_is_not_ours() -> None:
    assert JobTokens(b"key").verify("kjt1.eA.\u00b2.AAAA") is None  # "²".isdigit(), but int() refuses it
