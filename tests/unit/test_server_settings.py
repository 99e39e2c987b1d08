"""kiln serve's node cap: 1,000 nodes unless --max-nodes or KILN_MAX_NODES say otherwise, so that a resize to any
count Batch's API takes ends short with resizeErrors rather than starting nodes for ever."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kiln import server
from kiln.cli import main
from kiln.server import MAX_NODES, Settings


@pytest.mark.parametrize(
    ("argv", "env", "cap"),
    [([], None, MAX_NODES), ([], "40", 40), (["--max-nodes", "7"], "40", 7)],
    ids=["default", "environment", "flag-over-environment"],
)
def test_kiln_serve_caps_the_nodes_of_all_pools(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None, cap: int
) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(server, "serve", lambda settings, on_ready=None: served.append(settings))
    if env is None:
        monkeypatch.delenv("KILN_MAX_NODES", raising=False)
    else:
        monkeypatch.setenv("KILN_MAX_NODES", env)
    result = CliRunner().invoke(main.app, ["serve", *argv])
    assert result.exit_code == 0, result.output
    assert served[0].max_nodes == cap
    assert MAX_NODES == 1000
