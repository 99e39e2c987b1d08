"""Batch failureInfo dicts, built by the hook that fails."""

from __future__ import annotations

from typing import Any

#: A Batch failureInfo: {category, code, message, details?}.
FailureInfo = dict[str, Any]

USER_ERROR = "usererror"
SERVER_ERROR = "servererror"


def failure_info(category: str, code: str, message: str, **details: str) -> FailureInfo:
    info: FailureInfo = {"category": category, "code": code, "message": message}
    if details:
        info["details"] = [{"name": k, "value": v} for k, v in details.items()]
    return info


class StepFailure(Exception):
    """A hook could not do its part; carries the failureInfo the user will see."""

    def __init__(self, info: FailureInfo) -> None:
        self.info = info
        super().__init__(info["message"])

    @classmethod
    def of(cls, category: str, code: str, message: str, **details: str) -> StepFailure:
        return cls(failure_info(category, code, message, **details))
