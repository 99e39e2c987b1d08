"""Application packages under the data dir: `applications/<id>/<version>.zip` and `application.json`.

Azure manages packages through its management plane; Kiln's `kiln app add` (and its REST endpoint) puts them
here. They are files, not rows: a zip is what nodes extract, and the index beside it is small.
"""

from __future__ import annotations

import json
import os
import re
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Application ids and versions: what Batch accepts, and safe as a file name.
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
INDEX = "application.json"


@dataclass(slots=True)
class Application:
    id: str
    display_name: str | None = None
    default_version: str | None = None
    #: version as given → the zip's file name
    versions: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """BatchApplication: displayName only when one was given, as the service answers (its recordings,
        tests/e2e/test_wire_fidelity.py: an application without one is `{"id", "versions"}`)."""
        wire: dict[str, Any] = {"id": self.id}
        if self.display_name:
            wire["displayName"] = self.display_name
        return wire | {"versions": sorted(self.versions)}

    def version_named(self, version: str | None) -> str | None:
        """The stored spelling of `version` (case-insensitive; None: the default version), or None."""
        if version is None:
            return self.default_version
        return next((v for v in self.versions if v.lower() == version.lower()), None)


class PackageStore:
    """The index is read once and kept in memory; only `add` changes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._apps: dict[str, Application] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Application]:
        if self._apps is None:
            apps: dict[str, Application] = {}
            for index in sorted(self.root.glob(f"*/{INDEX}")) if self.root.is_dir() else ():
                doc = json.loads(index.read_text())
                app = Application(doc["id"], doc.get("displayName"), doc.get("defaultVersion"), doc["versions"])
                apps[app.id.lower()] = app
            self._apps = apps
        return self._apps

    def applications(self) -> list[Application]:
        return sorted(self._load().values(), key=lambda app: app.id.lower())

    def get(self, app_id: str) -> Application | None:
        return self._load().get(app_id.lower())

    def zip_path(self, app_id: str, version: str) -> Path:
        return self.root / app_id.lower() / f"{version.lower()}.zip"

    def add(self, app_id: str, version: str, data: bytes, *, default: bool, display_name: str | None = None) -> None:
        """Store (or replace) one version; raises ValueError naming what is wrong with the input."""
        for what, name in (("application id", app_id), ("version", version)):
            if not NAME.fullmatch(name):
                raise ValueError(f"The {what} '{name}' must be 1-64 letters, digits, '_', '-' or '.'.")
        path = self.zip_path(app_id, version)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            try:
                with zipfile.ZipFile(partial) as archive:
                    bad = archive.testzip()
            except zipfile.BadZipFile:
                bad = "(not a zip file)"
            if bad is not None:
                partial.unlink()
                raise ValueError(f"The package is not a valid zip file: {bad}")
            os.replace(partial, path)
            apps = self._load()
            app = apps.get(app_id.lower()) or Application(app_id)
            stored = app.version_named(version) or version
            app.versions[stored] = path.name
            if default:
                app.default_version = stored
            if display_name:
                app.display_name = display_name
            apps[app_id.lower()] = app
            self._write_index(app)

    def _write_index(self, app: Application) -> None:
        doc = {"id": app.id, "displayName": app.display_name, "defaultVersion": app.default_version}
        doc["versions"] = app.versions  # type: ignore[assignment]
        index = self.root / app.id.lower() / INDEX
        partial = index.with_suffix(".partial")
        partial.write_text(json.dumps(doc))
        os.replace(partial, index)
