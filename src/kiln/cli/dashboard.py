"""How to open the dashboard: its address and a login token to paste into its sign-in form. The token is
derived from the account key but signs no Batch request, so it can be handed to someone who only looks."""

from __future__ import annotations

import base64
import binascii

from kiln.cli.session import Session, usage
from kiln.web.session import login_token


def sign_in(endpoint: str, account: str, key: str) -> tuple[str, str]:
    """(the dashboard's URL, the login token for the account and key)."""
    try:
        secret = base64.b64decode(key, validate=True)
    except binascii.Error:
        raise usage("the account key is not Base64") from None
    return f"{endpoint.rstrip('/')}/", login_token(account, secret)


def sign_in_text(endpoint: str, account: str, key: str) -> str:
    url, token = sign_in(endpoint, account, key)
    return f"\nDashboard: {url}\n  sign in with the login token {token} (or the account key)"


def dashboard(session: Session) -> None:
    """Print the dashboard's address and the login token to sign in with (it cannot sign Batch requests)."""
    url, token = sign_in(session.endpoint, session.account, session.key)
    session.done(sign_in_text(session.endpoint, session.account, session.key).lstrip(), url=url, loginToken=token)
