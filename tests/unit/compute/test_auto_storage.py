"""The linked storage account (auto-storage): the connection strings it takes, and how `kiln serve` gets one."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from kiln import server
from kiln.cli import main
from kiln.compute import auto_storage
from kiln.compute.auto_storage import AutoStorage
from kiln.server import Settings
from kiln.testing_azurite import ACCOUNT_KEY, ACCOUNT_NAME

LINKED = f"DefaultEndpointsProtocol=http;AccountName=linked;AccountKey={ACCOUNT_KEY};BlobEndpoint=http://h:1/linked;"


def test_use_development_storage_is_azurites_well_known_account_on_its_default_port() -> None:
    storage = AutoStorage.from_connection_string("UseDevelopmentStorage=true")
    assert (storage.account_name, storage.account_key) == (ACCOUNT_NAME, ACCOUNT_KEY)
    assert storage.account_url == "http://127.0.0.1:10000/devstoreaccount1"
    url = urlsplit(storage.container_url("inputs"))
    assert (url.scheme, url.netloc, url.path) == ("http", "127.0.0.1:10000", "/devstoreaccount1/inputs")
    assert parse_qs(url.query)["sp"] == ["rl"]  # read and list: what a node needs, and no more


@pytest.mark.parametrize(
    ("argv", "env", "linked"),
    [
        (["--storage-connection-string", "UseDevelopmentStorage=true"], None, "UseDevelopmentStorage=true"),
        ([], LINKED, LINKED),
        (["--storage-connection-string", "UseDevelopmentStorage=true"], LINKED, "UseDevelopmentStorage=true"),
        ([], None, None),
    ],
    ids=["flag", "environment", "flag-over-environment", "neither"],
)
def test_kiln_serve_takes_the_storage_connection_string_from_its_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None, linked: str | None
) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(server, "serve", lambda settings, on_ready=None: served.append(settings))
    if env is None:
        monkeypatch.delenv(auto_storage.ENV, raising=False)
    else:
        monkeypatch.setenv(auto_storage.ENV, env)
    result = CliRunner().invoke(main.app, ["serve", *argv])
    assert result.exit_code == 0, result.output
    assert served[0].storage_connection_string == linked
