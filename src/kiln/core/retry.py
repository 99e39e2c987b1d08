"""Retry policy: a small pure decision, like procrastinate's get_retry_decision."""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    RETRY = "retry"
    COMPLETE = "complete"


def after_exit(exit_code: int | None, *, retry_count: int, max_retries: int, retriable: bool = True) -> Decision:
    """Non-zero exits are retried up to max_retries (-1: no limit); pre-processing errors never are."""
    if exit_code == 0 or not retriable:
        return Decision.COMPLETE
    if max_retries == -1 or retry_count < max_retries:
        return Decision.RETRY
    return Decision.COMPLETE
