"""The package store under the data dir: versions, the default, and what it refuses."""

from __future__ import annotations

import io
import zipfile

import pytest

from kiln.store.packages import PackageStore


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # a fixed date: the bytes name parametrized tests, which every xdist worker must collect alike
        archive.writestr(zipfile.ZipInfo("a.txt", date_time=(2026, 1, 1, 0, 0, 0)), "a")
    return buffer.getvalue()


def test_versions_and_the_default_survive_a_new_store_on_the_same_dir(tmp_path):
    store = PackageStore(tmp_path)
    store.add("Tool", "1.0", _zip(), default=False)
    store.add("tool", "2.0", _zip(), default=True, display_name="The tool")
    again = PackageStore(tmp_path).get("TOOL")
    assert again is not None
    assert again.to_wire() == {"id": "Tool", "displayName": "The tool", "versions": ["1.0", "2.0"]}
    assert (again.version_named(None), again.version_named("1.0"), again.version_named("3")) == ("2.0", "1.0", None)
    assert PackageStore(tmp_path).zip_path("tool", "2.0").is_file()


def test_an_application_without_a_display_name_has_none_on_the_wire(tmp_path):
    store = PackageStore(tmp_path)
    store.add("tool", "1.0", _zip(), default=True)
    assert store.get("tool").to_wire() == {"id": "tool", "versions": ["1.0"]}


def test_a_version_added_again_replaces_its_zip(tmp_path):
    store = PackageStore(tmp_path)
    store.add("tool", "1.0", _zip(), default=False)
    store.add("tool", "1.0", _zip(), default=False)
    assert store.get("tool").versions == {"1.0": "1.0.zip"}


@pytest.mark.parametrize(
    ("app_id", "version", "data"),
    [("bad/id", "1", _zip()), ("tool", "../1", _zip()), ("tool", "1", b"not a zip"), ("x" * 65, "1", _zip())],
)
def test_bad_input_is_refused_and_nothing_is_stored(tmp_path, app_id, version, data):
    store = PackageStore(tmp_path)
    with pytest.raises(ValueError):
        store.add(app_id, version, data, default=True)
    assert store.applications() == []
    assert not any(tmp_path.rglob("*.zip"))
