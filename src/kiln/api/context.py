"""What every router needs: the commands' `Control` and the account. One instance per server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fastapi import Request

from kiln.commands.control import Control


@dataclass
class Kiln:
    control: Control
    data_dir: Path
    account_name: str
    account_key: bytes
    #: the shortest startWindow / recurrenceInterval a job schedule may have (Batch: 1 minute; tests use less)
    min_schedule_interval: timedelta = timedelta(minutes=1)
    #: serve an unknown api-version as the newest instead of refusing it (Azurite's --skipApiVersionCheck)
    loose_api_version: bool = False


def kiln(request: Request) -> Kiln:
    return request.app.state.kiln


def control(request: Request) -> Control:
    return request.app.state.kiln.control
