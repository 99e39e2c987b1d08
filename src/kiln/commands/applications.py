"""Application packages: Kiln's way to add them, Batch's reads, and the reference checks of every create."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kiln.commands.control import Control
from kiln.core import applications as rules
from kiln.errors import BadRequest, KilnError, NotFound
from kiln.store.packages import Application, PackageStore
from kiln.wire.models import TaskAdd


def _store(control: Control) -> PackageStore:
    return control.scheduler.package_store


def _known(store: PackageStore) -> rules.Lookup:
    def known(app_id: str, version: str | None) -> bool:
        app = store.get(app_id)
        return app is not None and app.version_named(version) is not None

    return known


async def add(
    control: Control, app_id: str, version: str, data: bytes, *, default: bool, display_name: str | None
) -> Application:
    store = _store(control)
    try:
        await asyncio.to_thread(store.add, app_id, version, data, default=default, display_name=display_name)
    except ValueError as exc:
        raise BadRequest(str(exc), code="InvalidApplicationPackage") from None
    application = store.get(app_id)
    assert application is not None
    return application


def list_all(control: Control) -> list[Application]:
    return _store(control).applications()


def get(control: Control, app_id: str) -> Application:
    application = _store(control).get(app_id)
    if application is None:
        raise NotFound("The specified application does not exist.", code="ApplicationNotFound")
    return application


def check_pool(control: Control, spec: Mapping[str, Any]) -> None:
    """A pool's (or auto pool's) references, at create and update."""
    rules.check_pool_references(spec.get("applicationPackageReferences"), _known(_store(control)))


def check_job(control: Control, doc: Mapping[str, Any], where: str = "") -> None:
    """A new job's job manager task and auto pool; or a job schedule's (where: "jobSpecification.")."""
    known = _known(_store(control))
    manager = doc.get("jobManagerTask") or {}
    rules.check_references(
        manager.get("applicationPackageReferences"), known, f"{where}jobManagerTask.applicationPackageReferences"
    )
    auto = (doc.get("poolInfo") or {}).get("autoPoolSpecification")
    if auto:
        references = (auto.get("pool") or {}).get("applicationPackageReferences")
        rules.check_references(
            references, known, f"{where}poolInfo.autoPoolSpecification.pool.applicationPackageReferences"
        )


def checked_task(control: Control, spec: TaskAdd | KilnError) -> TaskAdd | KilnError:
    """A task of an add (or add-collection): the spec, or the error it gets instead (the others go on)."""
    if isinstance(spec, KilnError):
        return spec
    references = (spec.model_extra or {}).get("applicationPackageReferences")
    if not references:
        return spec
    try:
        rules.check_references(references, _known(_store(control)), "applicationPackageReferences")
    except KilnError as error:
        return error
    return spec
