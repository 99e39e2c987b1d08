"""Batch id rules: 1-64 of [A-Za-z0-9_-]; case kept, compared without case."""

from __future__ import annotations

import re

from kiln.errors import InvalidPropertyValue

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(value: str, property_name: str = "id") -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidPropertyValue(
            property_name,
            value,
            "An id must be 1 to 64 characters long and may contain only letters, digits, hyphens and underscores.",
        )
    return value


def key(value: str) -> str:
    """The lookup key of an id: Batch ids are unique without regard to case."""
    return value.lower()
