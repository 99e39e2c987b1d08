"""What each api-version reads and is answered with, as data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln.wire import versions

POOL = {
    "id": "p",
    "taskSlotsPerNode": 4,
    "resourceTags": {"requiredSlots": "mine"},
    "upgradePolicy": {"mode": "manual"},
}


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2025-06-01", POOL),
        ("2024-02-01.19.0", POOL),
        ("2023-11-01.18.0", {"id": "p", "taskSlotsPerNode": 4, "resourceTags": {"requiredSlots": "mine"}}),
        ("2023-05-01.17.0", {"id": "p", "taskSlotsPerNode": 4}),
        ("2020-03-01.11.0", {"id": "p", "maxTasksPerNode": 4}),
    ],
)
def test_a_pool_is_answered_with_the_fields_its_version_has(version, expected):
    assert versions.downgrade_response(version, "/pools/p", POOL) == expected


def test_fields_are_dropped_and_renamed_at_any_depth_in_lists():
    body = {"value": [{"id": "j", "maxParallelTasks": 2, "poolInfo": {"autoPoolSpecification": {"pool": POOL}}}]}
    assert versions.downgrade_response("2020-03-01.11.0", "/jobs", body) == {
        "value": [{"id": "j", "poolInfo": {"autoPoolSpecification": {"pool": {"id": "p", "maxTasksPerNode": 4}}}}]
    }


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2020-03-01.11.0", {"odata.metadata": "m", "active": 1, "running": 2}),
        ("2020-09-01.12.0", {"odata.metadata": "m", "taskCounts": {"active": 1, "running": 2}, "taskSlotCounts": {}}),
    ],
)
def test_task_counts_were_the_body_itself_before_slot_counts(version, expected):
    body = {"odata.metadata": "m", "taskCounts": {"active": 1, "running": 2}, "taskSlotCounts": {}}
    assert versions.downgrade_response(version, "/jobs/j/taskcounts", body) == expected


@pytest.mark.parametrize(
    ("version", "sent", "read"),
    [
        ("2020-03-01.11.0", {"id": "p", "maxTasksPerNode": 3}, {"id": "p", "taskSlotsPerNode": 3}),
        ("2022-01-01.15.0", {"id": "p", "taskSlotsPerNode": 3}, {"id": "p", "taskSlotsPerNode": 3}),
        ("2025-06-01", {"id": "p", "taskSlotsPerNode": 3}, {"id": "p", "taskSlotsPerNode": 3}),
    ],
)
def test_a_request_is_read_in_the_newest_names(version, sent, read):
    assert versions.upgrade_request(version, sent) == read


@pytest.mark.parametrize(
    ("sent", "loose", "served"),
    [
        ("2022-10-01.16.0", False, "2022-10-01.16.0"),
        ("2019-08-01.10.0", False, None),
        ("2019-08-01.10.0", True, "2025-06-01"),
        ("2099-01-01", True, "2025-06-01"),
    ],
)
def test_resolve(sent, loose, served):
    assert versions.resolve(sent, loose=loose) == served


def test_every_change_is_made_by_a_supported_version_and_the_newest_changes_nothing():
    assert set(versions.CHANGES) <= set(versions.VERSIONS)
    assert not versions.changes_anything(versions.NEWEST)
    assert all(versions.changes_anything(v) for v in versions.VERSIONS[:-1])


@pytest.mark.parametrize("document", ["README.md", "docs/compatibility.md"])
def test_the_docs_list_every_supported_version(document):
    """Their api-version tables (`| `VERSION` | sent by |` rows) name exactly VERSIONS, newest first."""
    text = (Path(__file__).resolve().parents[3] / document).read_text()
    listed = re.findall(r"^\| `(\d{4}-\d\d-\d\d(?:\.\d+\.\d+)?)` \|", text, re.MULTILINE)
    assert listed == list(reversed(versions.VERSIONS))
