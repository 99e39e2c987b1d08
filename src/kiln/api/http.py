"""Batch's HTTP conventions in one place: JSON bodies, headers, error body, conditions, lists."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.types import Scope

from kiln.api import odata, selection, versioning
from kiln.core.filters import Term
from kiln.errors import BadRequest, ConditionNotMet, InvalidPropertyValue, KilnError, MissingRequiredProperty
from kiln.wire import versions
from kiln.wire.times import format_http_time, format_time, now

M = TypeVar("M", bound=BaseModel)
K = TypeVar("K", int, str)
JSON_TYPE = "application/json; odata=minimalmetadata"  # with the space, as Batch sends it
MAX_RESULTS = 1000
#: Batch refuses a request body of 1 MB or more (413 RequestBodyTooLarge), as it documents for add-collection.
MAX_BODY_BYTES = 1024 * 1024
#: How deeply a JSON body may nest (Json.NET's default MaxDepth); Batch's deepest documents nest about 12 levels.
MAX_JSON_DEPTH = 64
#: A refused value longer than this is not echoed in the error (a 32 KB commandLine would come back whole).
ECHO_MAX = 1024


def declares_no_body(scope: Scope) -> bool:
    """No Content-Length (or 0) and not chunked: HTTP/1.1 frames no body for such a request (nearly every GET),
    so there is none to read, to limit or to wait for."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return False
    return True


def metadata_url(request: Request, fragment: str) -> str:
    return f"{base_url(request)}/$metadata#{fragment}"


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json_bytes(body),
        status_code=status,
        media_type=JSON_TYPE,
        headers={"DataServiceVersion": "3.0", **(headers or {})},
    )


def json_bytes(body: Any) -> bytes:
    """orjson writes a page of 100 tasks in a tenth of json's time; what it refuses (an integer past 64 bits,
    a key that is not a string) json still writes."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(body, separators=(",", ":")).encode()


def entity_response(request: Request, doc: dict[str, Any], row: Mapping[str, Any], fragment: str) -> Response:
    """A single entity with ETag and Last-Modified; honours $select and GET conditions (304)."""
    check_read_conditions(request, row)
    body = {
        "odata.metadata": metadata_url(request, fragment),
        **odata.apply_select(doc, selection.checked_select(request, fragment)),
    }
    return json_response(body, headers=entity_headers(row))


def entity_headers(row: Mapping[str, Any]) -> dict[str, str]:
    return {"ETag": row["etag"], "Last-Modified": format_http_time(row["last_modified"])}


def empty(status: int, request: Request, row: Mapping[str, Any] | None = None, location: str | None = None) -> Response:
    """Writes answer with no body; DataServiceId names what was touched, except after a delete or on an exists
    (HEAD), where Batch sends none."""
    headers = {"DataServiceVersion": "3.0"}
    if location or request.method not in ("DELETE", "HEAD"):
        headers["DataServiceId"] = location or str(request.url).split("?")[0]
    if row is not None:
        headers.update(entity_headers(row))
    if location:
        headers["Location"] = location
    return Response(status_code=status, headers=headers)


def error_response(request: Request, error: KilnError) -> Response:
    request_id = getattr(request.state, "request_id", str(uuid.uuid4()))
    body: dict[str, Any] = {
        "odata.metadata": metadata_url(request, "Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"),
        "code": error.code,
        "message": {"lang": "en-US", "value": f"{error.message}\nRequestId:{request_id}\nTime:{format_time(now())}"},
    }
    if error.values:
        body["values"] = [{"key": k, "value": v} for k, v in error.values.items()]
    return json_response(body, status=error.status)


def error_body(request: Request, error: KilnError) -> dict[str, Any]:
    """The error object as add-collection embeds it per task."""
    return json.loads(bytes(error_response(request, error).body))


async def read_json(request: Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return {}
        raise BadRequest("The request body is missing.", code="InvalidRequestBody")
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError too: a body that is not UTF-8
        raise BadRequest(f"The request body is not valid JSON: {exc}", code="InvalidRequestBody") from None
    except RecursionError:  # nested past the parser's own stack
        raise _too_deep() from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise _too_deep()
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", code="InvalidRequestBody")
    return versions.upgrade_request(versioning.served(request), data)


def _too_deep() -> BadRequest:
    return BadRequest(f"The request body nests JSON more than {MAX_JSON_DEPTH} levels deep.", code="InvalidRequestBody")


def json_depth(data: Any) -> int:
    """How deeply a parsed JSON value nests, counted without recursion (a deep body must not exhaust the stack
    of whatever walks it later: validation, storage, rendering)."""
    deepest, pending = 0, [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # past the limit the answer is known: stop walking
            pending.extend((item, depth + 1) for item in value)
    return deepest


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate a wire model; the first problem becomes Batch's 400 naming the property."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = ".".join(str(part) for part in problem["loc"] if not isinstance(part, int)) or "body"
        if problem["type"] == "missing":
            raise MissingRequiredProperty(name) from None
        value = problem.get("input")
        echoed = isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= ECHO_MAX)
        raise InvalidPropertyValue(name, value if echoed else None, problem["msg"]) from None


async def read_model(request: Request, model: type[M], *, optional: bool = False) -> M:
    return parse(model, await read_json(request, optional=optional))


# ---------------------------------------------------------------- conditions
def _tags(value: str | None) -> list[str]:
    return [t.strip().strip('"') for t in value.split(",")] if value else []


def _http_time(value: str) -> datetime:
    """An If-(Un)Modified-Since date, in UTC: a zone of -0000 parses without one, and comparing that with a
    stored time would fail."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year past datetime's 9999
        raise BadRequest(f"The header value '{value}' is not a valid HTTP date.", code="InvalidHeaderValue") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_write_conditions(request: Request, row: Mapping[str, Any] | None) -> None:
    """If-Match / If-None-Match / If-(Un)Modified-Since on writes: 412 ConditionNotMet."""
    headers = request.headers
    etag = row["etag"] if row else None
    if (match := _tags(headers.get("if-match"))) and (etag is None or ("*" not in match and etag not in match)):
        raise ConditionNotMet()
    if (none := _tags(headers.get("if-none-match"))) and etag is not None and ("*" in none or etag in none):
        raise ConditionNotMet()
    if row and (since := headers.get("if-unmodified-since")):
        if row["last_modified"].replace(microsecond=0) > _http_time(since):
            raise ConditionNotMet()
    if row and (since := headers.get("if-modified-since")):
        if row["last_modified"].replace(microsecond=0) <= _http_time(since):
            raise ConditionNotMet()


def write_conditions(request: Request) -> Callable[[Mapping[str, Any]], None]:
    """`check_write_conditions` of this request, for a command to run on the row it acts on."""
    return lambda row: check_write_conditions(request, row)


class NotModified(Exception):
    """GET conditions say the client's copy is current: answer 304."""


def check_read_conditions(request: Request, row: Mapping[str, Any]) -> None:
    headers = request.headers
    if (match := _tags(headers.get("if-match"))) and "*" not in match and row["etag"] not in match:
        raise ConditionNotMet()
    if (none := _tags(headers.get("if-none-match"))) and ("*" in none or row["etag"] in none):
        raise NotModified()
    if (since := headers.get("if-modified-since")) and row["last_modified"].replace(microsecond=0) <= _http_time(since):
        raise NotModified()
    if (since := headers.get("if-unmodified-since")) and row["last_modified"].replace(microsecond=0) > _http_time(
        since
    ):
        raise ConditionNotMet()


# ---------------------------------------------------------------- lists
def _max_results(request: Request) -> int:
    text = request.query_params.get("maxresults")
    if text is None:
        return MAX_RESULTS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_RESULTS:
        from kiln.errors import InvalidQueryParameterValue

        raise InvalidQueryParameterValue("maxresults", text, "maxresults must be an integer from 1 to 1000.")
    return value


def _skip(request: Request) -> int:
    token = request.query_params.get("$skiptoken")
    if not token:
        return 0
    try:
        skip = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
    except ValueError:
        skip = -1
    if skip < 0:  # only a token Kiln made is valid, and it never counts back
        from kiln.errors import InvalidQueryParameterValue

        raise InvalidQueryParameterValue("$skiptoken", token, "The continuation token is not valid.")
    return skip


def list_response(
    request: Request,
    docs: Sequence[Any],
    fragment: str,
    allowed: odata.Allowed,
) -> Response:
    """Filter, page (maxresults + odata.nextLink with $skiptoken) and $select a short list held in memory
    (files, images, applications); the store's lists seek instead (seek_window, seek_response)."""
    text = request.query_params.get("$filter")
    select = selection.checked_select(request, fragment)
    limit, skip = _max_results(request), _skip(request)
    matches = odata.compile_filter(text or "", allowed, versioning.filter_names(request))
    selected = [d for d in docs if matches(d)] if text else docs
    page, more = selected[skip : skip + limit], skip + limit < len(selected)
    body: dict[str, Any] = {
        "odata.metadata": metadata_url(request, fragment),
        "value": [odata.apply_select(d, select) for d in page],
    }
    if more:
        params = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
        params["$skiptoken"] = base64.urlsafe_b64encode(str(skip + limit).encode()).decode().rstrip("=")
        body["odata.nextLink"] = f"{base_url(request)}{request.url.path}?{urlencode(params)}"
    return json_response(body)


# ---------------------------------------------------------------- keyset lists
#: a keyset continuation token's text: the key (JSON) of the last row the page before read
_SEEK_PREFIX = "after:"


def seek_window(request: Request, first: K) -> tuple[K, int]:
    """(key after which the page starts, rows it may hold): the key of the previous page's last row
    ($skiptoken; one of `first`'s type), `first` on the first page."""
    token = request.query_params.get("$skiptoken")
    if not token:
        return first, _max_results(request)
    try:
        text = base64.urlsafe_b64decode(token.encode() + b"==").decode()
        after = json.loads(text.removeprefix(_SEEK_PREFIX)) if text.startswith(_SEEK_PREFIX) else None
    except ValueError:
        after = None
    if type(after) is not type(first) or after < first:  # only a token Kiln made is valid, and it never counts back
        from kiln.errors import InvalidQueryParameterValue

        raise InvalidQueryParameterValue("$skiptoken", token, "The continuation token is not valid.")
    return after, _max_results(request)


class SeekPage(Protocol):
    """A page a command read by seek_window: its rows, and the key to read on after (None: the last page)."""

    @property
    def rows(self) -> Sequence[Any]: ...

    @property
    def after(self) -> Any: ...


def seek_response(request: Request, page: SeekPage, fragment: str, render: Callable[[Any], dict[str, Any]]) -> Response:
    """A page of rows read by seek_window; the next page's link seeks past the last row it read."""
    select = selection.checked_select(request, fragment)
    body: dict[str, Any] = {
        "odata.metadata": metadata_url(request, fragment),
        "value": [odata.apply_select(render(row), select) for row in page.rows],
    }
    if page.after is not None:
        params = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
        token = _SEEK_PREFIX + json.dumps(page.after)
        params["$skiptoken"] = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        body["odata.nextLink"] = f"{base_url(request)}{request.url.path}?{urlencode(params)}"
    return json_response(body)


def seek_filter(
    request: Request, allowed: odata.Allowed, render: Callable[[Any], dict[str, Any]]
) -> tuple[Term | None, Callable[[Any], bool]]:
    """The list's $filter as terms (for the store's indexes), and as a predicate on a row (rendered) for
    what the store cannot tell from its columns."""
    text = request.query_params.get("$filter") or ""
    rename = versioning.filter_names(request)  # an older api-version's property names
    terms = odata.filter_terms(text, allowed, rename)
    matches = odata.compile_filter(text, allowed, rename)
    return terms, lambda row: matches(render(row))
