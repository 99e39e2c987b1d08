"""What a pool update may change, and when: the rules of PATCH and updateproperties (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kiln.errors import Conflict


def check_changeable(changes: Mapping[str, Any], empty_only: Sequence[str], current_nodes: int) -> None:
    """Fields Batch lets change only on an empty pool: 409 naming the first, while the pool has nodes."""
    blocked = [name for name in empty_only if name in changes]
    if blocked and current_nodes:
        raise Conflict(
            f"{blocked[0]} can be changed only while the pool has no compute nodes; it has {current_nodes}. "
            "Resize the pool to 0 first.",
            values={"PropertyName": blocked[0]},
        )


def updated_spec(spec: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The stored spec with the changes merged in: a None value removes the field (a replace that left it out)."""
    merged = {**spec, **changes}
    return {name: value for name, value in merged.items() if value is not None}
