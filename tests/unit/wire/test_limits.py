"""Limits that must agree across layers that may not import each other."""

from __future__ import annotations

from kiln.compute.node import process
from kiln.wire import models


def test_the_node_splits_every_command_line_the_api_accepts() -> None:
    assert process.COMMAND_LINE_MAX == models.COMMAND_LINE_MAX
