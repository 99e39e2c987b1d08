"""Application package rules as data: variable names and reference checks."""

from __future__ import annotations

import pytest

from kiln.core.applications import check_pool_references, check_references, env_names
from kiln.errors import Conflict, InvalidPropertyValue

KNOWN = {("blender", "2.7"), ("blender", None), ("my-tool", "1.0#b")}


def known(app_id: str, version: str | None) -> bool:
    return (app_id.lower(), version) in KNOWN


@pytest.mark.parametrize(
    ("app_id", "version", "names"),
    [
        ("blender", "2.7", ("AZ_BATCH_APP_PACKAGE_blender_2_7",)),
        ("Blender", "2.7", ("AZ_BATCH_APP_PACKAGE_Blender_2_7", "AZ_BATCH_APP_PACKAGE_blender_2_7")),
        ("my-Tool", "1.0#b", ("AZ_BATCH_APP_PACKAGE_my_Tool_1_0_b", "AZ_BATCH_APP_PACKAGE_my_tool_1_0_b")),
        ("LITWARE", None, ("AZ_BATCH_APP_PACKAGE_LITWARE", "AZ_BATCH_APP_PACKAGE_litware")),
    ],
)
def test_linux_variable_names_flatten_and_keep_case_with_a_lower_case_alias(app_id, version, names):
    assert env_names(app_id, version) == names


@pytest.mark.parametrize(
    ("references", "error", "prop"),
    [
        ([{"applicationId": "blender", "version": "2.7"}, {"applicationId": "Blender"}], None, None),
        ([{"applicationId": "blender", "version": "2.8"}], Conflict, "refs[0]"),
        ([{"applicationId": "blender"}, {"applicationId": "gone"}], Conflict, "refs[1]"),
        ([{"applicationId": "my-tool"}], Conflict, "refs[0]"),
        ([{"version": "1"}], InvalidPropertyValue, "refs[0].applicationId"),
        (None, None, None),
    ],
)
def test_each_reference_must_name_a_package(references, error, prop):
    if error is None:
        check_references(references, known, "refs")
        return
    with pytest.raises(error) as caught:
        check_references(references, known, "refs")
    assert caught.value.values["PropertyName"] == prop
    if error is Conflict:
        assert caught.value.code == "InvalidApplicationPackageReferences"


def test_a_pool_takes_at_most_ten_references():
    check_pool_references([{"applicationId": "blender"}] * 10, known)
    with pytest.raises(InvalidPropertyValue):
        check_pool_references([{"applicationId": "blender"}] * 11, known)
