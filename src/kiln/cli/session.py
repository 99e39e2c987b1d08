"""What every `kiln` command over the REST API shares: the connection options, the official SDK client,
output as a table or as JSON, and Batch errors turned into exit codes (kiln.cli.exit_codes)."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest
from rich.console import Console
from rich.table import Table

from kiln.cli.exit_codes import ExitCode
from kiln.dev_account import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

#: Piped (not a terminal), a table keeps each row on one line, for grep.
PIPED_WIDTH = 400
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)  # ids and URLs stay whole
errors = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)

#: A table column: its header, and the dotted path of its value in the wire JSON (camelCase, as Batch sends it).
Column = tuple[str, str]

ENDPOINT = typer.Option(
    "http://127.0.0.1:8520",
    "--endpoint",
    envvar=["KILN_ENDPOINT", "AZURE_BATCH_ENDPOINT"],
    help="The Batch endpoint.",
)
ACCOUNT = typer.Option(
    DEV_ACCOUNT_NAME,
    "--account",
    envvar=["KILN_ACCOUNT_NAME", "AZURE_BATCH_ACCOUNT"],
    help="Account name.",
)
KEY = typer.Option(
    DEV_ACCOUNT_KEY,
    "--key",
    envvar=["KILN_ACCOUNT_KEY", "AZURE_BATCH_ACCESS_KEY"],
    help="Account key (base64).",
    show_default=False,
)
AS_JSON = typer.Option(False, "--json", help="Print the wire JSON instead of a table (for scripts).")
#: How often a long-running operation is polled (the SDK's default, 5 s, is long for a local Kiln).
POLL_SECONDS = 0.5
JSON_FILE = typer.Option(None, "--json-file", help="The request body as Batch's REST API takes it (as az does).")


@dataclass
class Session:
    """One command's connection and output mode."""

    endpoint: str
    account: str
    key: str
    as_json: bool

    @functools.cached_property
    def client(self) -> BatchClient:
        # The SDK logs a traceback where it cannot parse the error of a streamed response (a file download);
        # the command reports the error itself.
        logging.getLogger("azure").setLevel(logging.ERROR)
        return BatchClient(self.endpoint.rstrip("/"), AzureNamedKeyCredential(self.account, self.key))

    def kiln(
        self, method: str, path: str, body: Any = None, *, content: bytes | None = None, params: Any = None
    ) -> Any:
        """A call to one of Kiln's own routes (/kiln/…), through the SDK's pipeline and its Shared Key signing:
        a JSON body, or raw `content`."""
        request = HttpRequest(method, path, json=body, content=content, params=params)
        response = self.client.send_request(request)
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        return response.json() if response.content else None

    def run_to_end(self, begin: Callable[..., LROPoller[Any]], *args: Any) -> None:
        """A long-running operation, waited for as the SDK's poller waits (a deleted pool: until it is gone)."""
        with errors.status(f"waiting for {begin.__name__.removeprefix('begin_').replace('_', ' ')}…"):
            begin(*args, polling_interval=POLL_SECONDS).result()

    def print_list(self, items: Iterable[Any], columns: list[Column], title: str) -> None:
        docs = [wire(item) for item in items]
        if self.as_json:
            print_json(docs)
            return
        table = Table(title=title, title_justify="left")
        for header, _ in columns:
            table.add_column(header, overflow="fold")
        for doc in docs:
            table.add_row(*(cell(doc, path) for _, path in columns))
        console.print(table)

    def print_one(self, item: Any, title: str) -> None:
        """Every field that has a value, one a row, with dotted names."""
        doc = wire(item)
        if self.as_json:
            print_json(doc)
            return
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for name, value in flatten(doc):
            table.add_row(name, value)
        console.print(table)

    def done(self, message: str, **fields: Any) -> None:
        """What an operation without a body to show did: a line, or with --json its fields."""
        if self.as_json:
            print_json(fields)
        else:
            console.print(message, highlight=False)


def wire(item: Any) -> Any:
    return item.as_dict() if hasattr(item, "as_dict") else item


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def cell(doc: Mapping[str, Any], path: str) -> str:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    return _json_default(value) if not isinstance(value, (list, dict)) else json.dumps(value, default=_json_default)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for name, value in doc.items():
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{prefix}{name}.")
        elif value not in (None, [], {}):
            yield f"{prefix}{name}", cell({name: value}, name)


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        errors.print(f"[red]cannot read {path}: {error}[/red]", highlight=False)
        raise typer.Exit(ExitCode.USAGE) from None


def usage(message: str) -> typer.Exit:
    errors.print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(ExitCode.USAGE)


_EXIT_BY_STATUS = {404: ExitCode.NOT_FOUND, 409: ExitCode.CONFLICT, 401: ExitCode.AUTHENTICATION}
_EXIT_BY_STATUS[403] = ExitCode.AUTHENTICATION


def exit_for(error: HttpResponseError) -> typer.Exit:
    """Batch's error as one red line (code: message), and the exit code a script can branch on."""
    status = error.status_code or 0
    code, message = _batch_error(error)
    errors.print(f"[red]{code or status}: {message}[/red]", highlight=False)
    return typer.Exit(_EXIT_BY_STATUS.get(status, ExitCode.FAILED))


def _batch_error(error: HttpResponseError) -> tuple[str, str]:
    """The SDK parses Batch's error body, except on a streamed response (a file download): then only the status."""
    parsed = getattr(error, "error", None)
    if parsed is not None and parsed.code:
        return parsed.code, (parsed.message or "").split("\n")[0]
    return "", str(error.reason or error).split("\n")[0]


def command(group: typer.Typer, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register fn(session, …) as a command of group, with --endpoint, --account, --key and --json added
    to its own options, and the service's errors mapped to exit codes."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(fn).parameters.values()][1:]
        shared = [
            inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
            for option, default, kind in (
                ("endpoint", ENDPOINT, str),
                ("account", ACCOUNT, str),
                ("key", KEY, str),
                ("as_json", AS_JSON, bool),
            )
        ]

        @functools.wraps(fn)
        def run(*, endpoint: str, account: str, key: str, as_json: bool, **arguments: Any) -> Any:
            session = Session(endpoint, account, key, as_json)
            try:
                return fn(session, **arguments)
            except HttpResponseError as error:
                raise exit_for(error) from None
            except ServiceRequestError as error:
                errors.print(f"[red]cannot reach {endpoint}: {error}[/red]", highlight=False)
                raise typer.Exit(ExitCode.UNREACHABLE) from None
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            finally:
                if "client" in session.__dict__:
                    session.client.close()

        parameters = own + shared
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        group.command(name or fn.__name__.replace("_", "-"))(run)
        return fn

    return register
