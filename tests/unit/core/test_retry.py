"""core.retry.after_exit: the retry decision after a process exits (batch-semantics §5.4, §4.2)."""

from __future__ import annotations

import pytest

from kiln.core.retry import Decision, after_exit

RETRY, COMPLETE = Decision.RETRY, Decision.COMPLETE


@pytest.mark.parametrize(
    ("exit_code", "retry_count", "max_retries", "decision"),
    [
        # exit 0 always completes, whatever the limit
        (0, 0, 0, COMPLETE),
        (0, 0, 3, COMPLETE),
        (0, 0, -1, COMPLETE),
        # non-zero: retried while retry_count < max_retries
        (1, 0, 0, COMPLETE),
        (1, 0, 1, RETRY),
        (1, 1, 1, COMPLETE),
        (2, 2, 3, RETRY),
        (2, 3, 3, COMPLETE),
        (2, 4, 3, COMPLETE),
        (-9, 0, 2, RETRY),  # killed by a signal is non-zero too
        (255, 0, 2, RETRY),
        # -1: no limit
        (1, 0, -1, RETRY),
        (1, 10_000, -1, RETRY),
    ],
)
def test_after_exit(exit_code: int, retry_count: int, max_retries: int, decision: Decision) -> None:
    assert after_exit(exit_code, retry_count=retry_count, max_retries=max_retries) is decision


@pytest.mark.parametrize(("exit_code", "max_retries"), [(1, 3), (1, -1), (0, 3), (None, 3), (None, -1)])
def test_not_retriable_always_completes(exit_code: int | None, max_retries: int) -> None:
    """Pre-processing errors (resource download, launch) are never retried."""
    assert after_exit(exit_code, retry_count=0, max_retries=max_retries, retriable=False) is COMPLETE


def test_retriable_by_default() -> None:
    assert after_exit(1, retry_count=0, max_retries=1) is RETRY


def test_decisions_are_strings() -> None:
    assert [d.value for d in Decision] == ["retry", "complete"]


def test_retry_budget_is_exactly_max_retries() -> None:
    """A process that always fails runs 1 + max_retries times."""
    for max_retries in (0, 1, 4):
        retries = 0
        while after_exit(1, retry_count=retries, max_retries=max_retries) is RETRY:
            retries += 1
        assert retries == max_retries
