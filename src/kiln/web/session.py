"""Who may see the dashboard: whoever gives the account key (or the login token derived from it) gets a session
cookie signed with that key. Changing the key ends every session."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

#: The session cookie's name.
COOKIE = "kiln_session"
#: How long a session lasts (seconds).
LIFETIME = 12 * 3600


def _mac(key: bytes, purpose: str, text: str) -> str:
    digest = hmac.new(key, f"kiln-dashboard-{purpose}:{text}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def login_token(account: str, key: bytes) -> str:
    """A token that signs in to the dashboard without handing out the account key (it cannot sign Batch
    requests)."""
    return _mac(key, "login", account)


def accepts(secret: str, account: str, key: bytes) -> bool:
    """Whether a login form's secret is the account key (Base64, as given to the SDK) or the login token."""
    secret = secret.strip()
    try:
        decoded = base64.b64decode(secret, validate=True)
    except ValueError:
        decoded = b""
    token = login_token(account, key).encode()
    return hmac.compare_digest(decoded, key) | hmac.compare_digest(secret.encode(), token)


def issue(account: str, key: bytes, now: float | None = None) -> str:
    """A session cookie's value: the account, its expiry and their MAC."""
    expires = int((time.time() if now is None else now) + LIFETIME)
    text = f"{account}.{expires}"
    return f"{text}.{_mac(key, 'session', text)}"


def valid(cookie: str | None, account: str, key: bytes, now: float | None = None) -> bool:
    if not cookie:
        return False
    text, _, mac = cookie.rpartition(".")
    name, _, expires = text.rpartition(".")
    if not hmac.compare_digest(mac.encode(), _mac(key, "session", text).encode()) or name != account:
        return False
    return expires.isdigit() and int(expires) > (time.time() if now is None else now)
