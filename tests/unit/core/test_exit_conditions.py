"""core.exit_conditions: (conditions, how the task ended) in, exit options out (batch-semantics §6.3)."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.core.exit_conditions import (
    FAILURE_DEFAULTS,
    SUCCESS_DEFAULTS,
    DependencyAction,
    ExitOptions,
    JobAction,
    all_options,
    for_ended,
    resolve,
)

NONE, DISABLE, TERMINATE = JobAction.NONE, JobAction.DISABLE, JobAction.TERMINATE
SATISFY, BLOCK = DependencyAction.SATISFY, DependencyAction.BLOCK


def opts(job: str | None = None, dep: str | None = None) -> dict[str, Any]:
    out = {}
    if job:
        out["jobAction"] = job
    if dep:
        out["dependencyAction"] = dep
    return out


FULL = {
    "exitCodes": [
        {"code": 3, "exitOptions": opts("disable", "satisfy")},
        {"code": 0, "exitOptions": opts("terminate")},
        {"code": 5, "exitOptions": opts(dep="satisfy")},
    ],
    "exitCodeRanges": [
        {"start": 2, "end": 9, "exitOptions": opts("none", "block")},
        {"start": 3, "end": 3, "exitOptions": opts("terminate", "block")},
    ],
    "preProcessingError": opts("disable"),
    "fileUploadError": opts("none", "satisfy"),
    "default": opts("none", "satisfy"),
}
PARTIAL = {"default": opts("disable")}  # no preProcessingError, no fileUploadError, no lists

CASES = [
    # (conditions, exit code, pre-processing error, upload error, expected)
    # no conditions: the built-in defaults
    (None, 0, False, False, ExitOptions(NONE, SATISFY)),
    (None, 1, False, False, ExitOptions(TERMINATE, BLOCK)),
    (None, -9, False, False, ExitOptions(TERMINATE, BLOCK)),
    (None, None, True, False, ExitOptions(TERMINATE, BLOCK)),
    (None, 0, False, True, ExitOptions(TERMINATE, BLOCK)),
    ({}, 0, False, False, SUCCESS_DEFAULTS),
    # exitCodes first, then the first matching range; a missing field takes the completion's default
    (FULL, 3, False, False, ExitOptions(DISABLE, SATISFY)),
    (FULL, 0, False, False, ExitOptions(TERMINATE, SATISFY)),
    (FULL, 5, False, False, ExitOptions(TERMINATE, SATISFY)),
    (FULL, 2, False, False, ExitOptions(NONE, BLOCK)),
    (FULL, 9, False, False, ExitOptions(NONE, BLOCK)),
    # any other non-zero code: default
    (FULL, 10, False, False, ExitOptions(NONE, SATISFY)),
    (FULL, 1, False, False, ExitOptions(NONE, SATISFY)),
    # pre-processing error: its own entry (whatever exit code there is), else default
    (FULL, None, True, False, ExitOptions(DISABLE, BLOCK)),
    (FULL, None, False, False, ExitOptions(DISABLE, BLOCK)),
    (PARTIAL, None, True, False, ExitOptions(DISABLE, BLOCK)),
    # upload error: an exit-code match wins, else fileUploadError, else default
    (FULL, 3, False, True, ExitOptions(DISABLE, SATISFY)),
    (FULL, 1, False, True, ExitOptions(NONE, SATISFY)),
    (FULL, 0, False, True, ExitOptions(TERMINATE, BLOCK)),  # 0 is listed: its entry, with failure defaults
    (PARTIAL, 0, False, True, ExitOptions(DISABLE, BLOCK)),
    # exit 0 not listed keeps the built-in defaults, even with a default entry
    (PARTIAL, 0, False, False, SUCCESS_DEFAULTS),
    (PARTIAL, 4, False, False, ExitOptions(DISABLE, BLOCK)),
    # enum values in any case
    ({"default": opts("TERMINATE", "Satisfy")}, 1, False, False, ExitOptions(TERMINATE, SATISFY)),
]


@pytest.mark.parametrize(("conditions", "exit_code", "pre", "upload", "expected"), CASES)
def test_resolve(conditions, exit_code, pre, upload, expected) -> None:
    assert resolve(conditions, exit_code=exit_code, pre_processing_error=pre, upload_error=upload) == expected


def test_defaults() -> None:
    assert SUCCESS_DEFAULTS == ExitOptions(NONE, SATISFY)
    assert FAILURE_DEFAULTS == ExitOptions(TERMINATE, BLOCK)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (None, ExitOptions(TERMINATE, BLOCK)),
        (FULL, ExitOptions(NONE, SATISFY)),
        ({"default": opts(dep="satisfy")}, ExitOptions(TERMINATE, SATISFY)),
        ({"exitCodes": [{"code": 1, "exitOptions": opts("none", "satisfy")}]}, ExitOptions(TERMINATE, BLOCK)),
    ],
)
def test_terminated_task_uses_default_only(conditions, expected) -> None:
    assert for_ended(conditions) == expected


def test_all_options_names_each_property() -> None:
    assert [path for path, _ in all_options(FULL)] == [
        "exitConditions.exitCodes[0].exitOptions",
        "exitConditions.exitCodes[1].exitOptions",
        "exitConditions.exitCodes[2].exitOptions",
        "exitConditions.exitCodeRanges[0].exitOptions",
        "exitConditions.exitCodeRanges[1].exitOptions",
        "exitConditions.preProcessingError",
        "exitConditions.fileUploadError",
        "exitConditions.default",
    ]
    assert all_options(None) == []


PERFORM = {"onTaskFailure": "performexitoptionsjobaction", "usesTaskDependencies": True}
PLAIN = {"onTaskFailure": "noaction", "usesTaskDependencies": False}


@pytest.mark.parametrize(
    ("job", "conditions", "refused"),
    [
        (PLAIN, None, None),
        (PLAIN, {"exitCodes": [{"code": 1, "exitOptions": {}}]}, None),
        (PLAIN, {"default": opts("none")}, "exitConditions.default.jobAction"),
        (
            PLAIN,
            {"exitCodeRanges": [{"start": 1, "end": 2, "exitOptions": opts("terminate")}]},
            "exitConditions.exitCodeRanges[0].exitOptions.jobAction",
        ),
        (PLAIN, {"preProcessingError": opts(dep="satisfy")}, "exitConditions.preProcessingError.dependencyAction"),
        ({**PLAIN, "usesTaskDependencies": True}, {"preProcessingError": opts(dep="satisfy")}, None),
        ({**PLAIN, "onTaskFailure": "performexitoptionsjobaction"}, {"default": opts("disable")}, None),
        (PERFORM, FULL, None),
    ],
)
def test_check_allowed(job, conditions, refused) -> None:
    from kiln.core.exit_conditions import check_allowed
    from kiln.errors import InvalidPropertyValue

    if refused is None:
        check_allowed(job, conditions)
        return
    with pytest.raises(InvalidPropertyValue) as caught:
        check_allowed(job, conditions)
    assert caught.value.status == 400 and dict(caught.value.values)["PropertyName"] == refused
