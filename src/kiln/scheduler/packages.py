"""Application package references → the packages a step has its node extract (pure but for the index read)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiln.compute.protocol import AppPackage
from kiln.core.applications import env_names
from kiln.store.packages import PackageStore


def resolve(store: PackageStore, reference: Mapping[str, Any], *, pool: bool = False) -> AppPackage:
    """A reference without a version takes the application's default now. One that names no stored package
    (checked at create, so only if its files went) still resolves: the node's extraction fails, and says so."""
    app_id, named = str(reference["applicationId"]), reference.get("version")
    app = store.get(app_id)
    version = (app.version_named(named) if app is not None else None) or named or ""
    return AppPackage(
        app_id=app.id if app is not None else app_id,
        version=version,
        zip_path=str(store.zip_path(app_id, version)),
        env_names=env_names(app.id if app is not None else app_id, named),
        pool=pool,
    )


def pool_packages(store: PackageStore, pool_spec: Mapping[str, Any]) -> tuple[AppPackage, ...]:
    return tuple(resolve(store, ref, pool=True) for ref in pool_spec.get("applicationPackageReferences") or ())


def task_packages(store: PackageStore, spec: Mapping[str, Any]) -> tuple[AppPackage, ...]:
    return tuple(resolve(store, ref) for ref in spec.get("applicationPackageReferences") or ())
