"""Application package references: which ones are valid, and the variables that tell a task where they are."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kiln.errors import Conflict, InvalidPropertyValue

#: Batch's limit on a pool's references.
POOL_REFERENCES_MAX = 10
PREFIX = "AZ_BATCH_APP_PACKAGE_"
_FLATTENED = re.compile(r"[.\-#]")

#: (application id, version or None for the default) → is there such a package?
Lookup = Callable[[str, str | None], bool]


def env_names(app_id: str, version: str | None) -> tuple[str, ...]:
    """Linux names (batch-semantics-2 §5.4): `.`, `-` and `#` become `_`, the case is kept, and a lower-case
    alias is added (nodes have been seen to use either). A reference without a version (the application's
    default) gets the short name, without the version."""
    name = app_id if version is None else f"{app_id}_{version}"
    flat = _FLATTENED.sub("_", name)
    return tuple(dict.fromkeys((PREFIX + flat, PREFIX + flat.lower())))


def check_references(references: Sequence[Mapping[str, Any]] | None, known: Lookup, where: str) -> None:
    """409 InvalidApplicationPackageReferences for the first reference to no package (or to an application
    without a default version when none is named); nothing is created then."""
    for index, reference in enumerate(references or ()):
        app_id, version = reference.get("applicationId"), reference.get("version")
        if not app_id:
            raise InvalidPropertyValue(f"{where}[{index}].applicationId", None, "An application id is required.")
        if not known(str(app_id), version):
            wanted = f"version '{version}'" if version else "a default version"
            raise Conflict(
                f"One or more of the specified application package references are invalid: application "
                f"'{app_id}' has no {wanted}.",
                code="InvalidApplicationPackageReferences",
                values={"PropertyName": f"{where}[{index}]", "applicationId": str(app_id), "version": str(version)},
            )


def check_pool_references(references: Sequence[Mapping[str, Any]] | None, known: Lookup) -> None:
    if references is not None and len(references) > POOL_REFERENCES_MAX:
        raise InvalidPropertyValue(
            "applicationPackageReferences",
            len(references),
            f"A pool may reference at most {POOL_REFERENCES_MAX} application packages.",
        )
    check_references(references, known, "applicationPackageReferences")


def deployment_errors(failure: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The node's `errors` once its pool's packages could not be deployed as it came up: what failed and
    what to do. `failure` is the failureInfo of the node's deployment (None: it could not run at all)."""
    failure = failure or {}
    what = failure.get("message") or "The pool's application packages could not be deployed."
    details = list(failure.get("details") or ())
    return [
        {
            "code": failure.get("code") or "PoolApplicationPackageDeploymentFailed",
            "message": (
                f"{what} No task is"
                " scheduled on this node. Add the package again (`kiln app add`) or change the pool's"
                " applicationPackageReferences, then reboot or reimage the node to deploy them again."
            ),
            "errorDetails": details,
        }
    ]
