"""kiln.web.session: who may sign in, and which cookies are still good."""

from __future__ import annotations

import base64

from kiln.web import session

KEY = b"k" * 32
KEY_B64 = base64.b64encode(KEY).decode()


def test_the_account_key_or_the_login_token_signs_in_and_nothing_else() -> None:
    token = session.login_token("acct", KEY)
    assert session.accepts(KEY_B64, "acct", KEY)
    assert session.accepts(f" {KEY_B64}\n", "acct", KEY)  # pasted with blanks around it
    assert session.accepts(token, "acct", KEY)
    for wrong in ("", "nope", base64.b64encode(b"x" * 32).decode(), session.login_token("other", KEY), KEY.decode()):
        assert not session.accepts(wrong, "acct", KEY), wrong


def test_a_session_cookie_holds_until_it_expires_for_its_account_and_key_only() -> None:
    cookie = session.issue("acct", KEY, now=1000.0)
    assert session.valid(cookie, "acct", KEY, now=1000.0 + session.LIFETIME - 1)
    assert not session.valid(cookie, "acct", KEY, now=1000.0 + session.LIFETIME)
    assert not session.valid(cookie, "other", KEY, now=1000.0)
    assert not session.valid(cookie, "acct", b"j" * 32, now=1000.0)  # the key changed: every session ends


def test_a_forged_or_altered_cookie_is_refused() -> None:
    cookie = session.issue("acct", KEY, now=1000.0)
    account, expires, mac = cookie.split(".")
    assert not session.valid(f"{account}.{int(expires) + 10**6}.{mac}", "acct", KEY, now=1000.0)
    assert not session.valid(f"{account}.{expires}.", "acct", KEY, now=1000.0)
    for junk in (None, "", "acct", "...", "acct.x.y"):
        assert not session.valid(junk, "acct", KEY, now=1000.0)
