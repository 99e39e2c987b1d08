"""Shared Key signing and verification, byte-for-byte as azure-batch's ``BatchSharedKeyAuthPolicy`` signs."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import parse_qs

from kiln.errors import AuthenticationFailed

#: Standard headers signed one per line, in this order (empty line when absent).
SIGNED_HEADERS: tuple[str, ...] = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
#: Where the Content-Length line is among them: a verifier tries up to three forms of it.
_CONTENT_LENGTH_AT = SIGNED_HEADERS.index("content-length")
#: How far ``ocp-date``/``Date`` may be from server time.
MAX_CLOCK_SKEW = timedelta(minutes=15)

_SCHEME = "SharedKey"


def string_to_sign(
    method: str,
    raw_path: str,
    query_string: str,
    headers: Mapping[str, str],
    account: str,
    content_length: str | None = None,
) -> str:
    """The exact text the SDK signs; ``content_length`` overrides the header's line when given."""
    lowered = _lower(headers)
    if content_length is None:
        content_length = lowered.get("content-length", "")
        if not content_length and method.upper() not in ("GET", "HEAD"):
            content_length = "0"  # the SDK signs 0 for a bodiless write
    before, after = _text_around_content_length(method, raw_path, query_string, lowered, account)
    return before + content_length + after


def _text_around_content_length(
    method: str, raw_path: str, query_string: str, lowered: Mapping[str, str], account: str
) -> tuple[str, str]:
    """The signed text before and after its Content-Length line, so a verifier builds the rest once."""
    after = [lowered.get(name, "") for name in SIGNED_HEADERS[_CONTENT_LENGTH_AT + 1 :]]
    after += [f"{name}:{value}" for name, value in sorted(lowered.items()) if "ocp-" in name and value]
    canonical = f"/{account}{raw_path}"
    query = parse_qs(query_string)
    canonical += "".join(f"\n{name}:{query[name][0]}" for name in sorted(query) if query[name][0])
    before = [method.upper(), *(lowered.get(name, "") for name in SIGNED_HEADERS[:_CONTENT_LENGTH_AT]), ""]
    return "\n".join(before), "\n" + "\n".join(after) + "\n" + canonical


def sign(key: bytes, text: str) -> str:
    """Base64 HMAC-SHA256 of ``text`` under the decoded account key."""
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def sign_request(
    method: str, raw_path: str, query_string: str, headers: Mapping[str, str], account: str, key: bytes
) -> str:
    """The ``Authorization`` header value for a request (headers must already hold ``ocp-date``)."""
    text = string_to_sign(method, raw_path, query_string, headers, account)
    return f"{_SCHEME} {account}:{sign(key, text)}"


def decode_key(key_b64: str) -> bytes:
    """Decode a Base64 account key, as the portal shows it."""
    try:
        return base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the account key is not valid Base64") from exc


def verify_shared_key(
    method: str,
    raw_path: str | bytes,
    query_string: str | bytes,
    headers: Mapping[str, str],
    body_length: int,
    accounts: Mapping[str, bytes],
    now: datetime,
) -> str:
    """Check a request's Shared Key signature and date; return the account it authenticates."""
    lowered = _lower(headers)
    account, signature = _parse_authorization(lowered.get("authorization"))
    name, key = _find_account(account, accounts)
    _check_date(lowered, now)
    path, query = _text(raw_path).partition("?")[0], _text(query_string)  # some servers keep the query in raw_path
    candidates = _content_length_lines(method, lowered.get("content-length", ""), body_length)
    given = signature.encode("ascii", "replace")
    before, after = _text_around_content_length(method, path, query, lowered, account)
    # Compare every candidate, so timing does not reveal which line form was tried.
    matches = [hmac.compare_digest(given, sign(key, before + cl + after).encode()) for cl in candidates]
    if not any(matches):
        raise AuthenticationFailed(
            f"The MAC signature found in the HTTP request '{signature}' is not the same as any computed signature."
        )
    return name


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _parse_authorization(header: str | None) -> tuple[str, str]:
    if not header:
        raise AuthenticationFailed("The Authorization header is missing; expected 'SharedKey <account>:<signature>'.")
    scheme, _, credential = header.strip().partition(" ")
    account, sep, signature = credential.strip().partition(":")
    if scheme != _SCHEME or not sep or not account or not signature:
        raise AuthenticationFailed("The Authorization header is malformed; expected 'SharedKey <account>:<signature>'.")
    return account, signature


def _find_account(account: str, accounts: Mapping[str, bytes]) -> tuple[str, bytes]:
    if account in accounts:
        return account, accounts[account]
    for name, key in accounts.items():  # account names are case-insensitive
        if name.lower() == account.lower():
            return name, key
    raise AuthenticationFailed(f"The account '{account}' does not exist on this server.")


def _check_date(headers: Mapping[str, str], now: datetime) -> None:
    name = "ocp-date" if headers.get("ocp-date") else "Date"
    value = headers.get(name.lower())
    if not value:
        raise AuthenticationFailed("The request has neither an ocp-date nor a Date header.")
    sent = _parsed_date(value)
    if sent is None:
        raise AuthenticationFailed(f"The {name} header '{value}' is not an RFC 1123 date.")
    if abs(sent - _utc(now)) > MAX_CLOCK_SKEW:
        raise AuthenticationFailed(
            f"The {name} header '{value}' is more than 15 minutes away from the server time "
            f"'{format_datetime(_utc(now), usegmt=True)}'."
        )


@functools.lru_cache(maxsize=64)
def _parsed_date(value: str) -> datetime | None:
    """An RFC 1123 date in UTC, or None; cached, since clients send the same second's date many times over."""
    try:
        return _utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year past datetime's 9999
        return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _content_length_lines(method: str, header: str, body_length: int) -> Iterable[str]:
    """The Content-Length lines a legitimate client may have signed."""
    first = header or ("0" if method.upper() not in ("GET", "HEAD") else "")
    if body_length != 0:
        return (first,)
    # Empty body: the SDK signs "0" on writes, older clients an empty line.
    return tuple(dict.fromkeys((first, "0", "")))
