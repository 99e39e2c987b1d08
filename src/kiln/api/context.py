"""What every router needs: the commands' `Control` and the account. One instance per server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fastapi import Request

from kiln.commands.control import Control

#: The well-known development account (like Azurite's devstoreaccount1). Override with
#: KILN_ACCOUNT_NAME / KILN_ACCOUNT_KEY.
DEV_ACCOUNT_NAME = "kilndev"
DEV_ACCOUNT_KEY = "a2lsbi1kZXZlbG9wbWVudC1hY2NvdW50LWtleS1ub3Qtc2VjcmV0LTAwMDAwMDAwMDA="

#: api-versions the two SDK generations send.
SUPPORTED_API_VERSIONS = ("2025-06-01", "2024-07-01.20.0", "2024-02-01.19.0", "2023-05-01.17.0")


@dataclass
class Kiln:
    control: Control
    data_dir: Path
    account_name: str
    account_key: bytes
    #: the shortest startWindow / recurrenceInterval a job schedule may have (Batch: 1 minute; tests use less)
    min_schedule_interval: timedelta = timedelta(minutes=1)


def kiln(request: Request) -> Kiln:
    return request.app.state.kiln


def control(request: Request) -> Control:
    return request.app.state.kiln.control
