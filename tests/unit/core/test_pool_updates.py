"""Pool update rules as data: what needs an empty pool, and how a change merges into the stored spec."""

from __future__ import annotations

import pytest

from kiln.core.pool_updates import check_changeable, updated_spec
from kiln.errors import Conflict
from kiln.wire.pool_updates import EMPTY_POOL_ONLY


@pytest.mark.parametrize(
    ("changes", "nodes", "refused"),
    [
        ({"vmSize": "x"}, 0, None),
        ({"vmSize": "x"}, 2, "vmSize"),
        ({"metadata": [], "startTask": None}, 2, None),
        ({"metadata": [], "userAccounts": [], "taskSlotsPerNode": 2}, 1, "taskSlotsPerNode"),
    ],
)
def test_empty_pool_fields_are_refused_while_the_pool_has_nodes(changes, nodes, refused):
    if refused is None:
        check_changeable(changes, EMPTY_POOL_ONLY, nodes)
        return
    with pytest.raises(Conflict) as caught:
        check_changeable(changes, EMPTY_POOL_ONLY, nodes)
    assert caught.value.status == 409 and caught.value.values["PropertyName"] == refused


@pytest.mark.parametrize(
    ("spec", "changes", "expected"),
    [
        ({"vmSize": "a", "metadata": [1]}, {"metadata": []}, {"vmSize": "a", "metadata": []}),
        ({"vmSize": "a", "startTask": {"commandLine": "x"}}, {"startTask": None}, {"vmSize": "a"}),
        ({"vmSize": "a"}, {"startTask": None, "metadata": [2]}, {"vmSize": "a", "metadata": [2]}),
    ],
    ids=["replace-a-list", "none-removes", "none-of-an-absent-field"],
)
def test_changes_merge_and_none_removes(spec, changes, expected):
    assert updated_spec(spec, changes) == expected
