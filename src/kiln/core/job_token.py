"""Job-scoped authentication tokens (a task's `authenticationTokenSettings.access: ["job"]`).

A task that asks for job access gets AZ_BATCH_AUTHENTICATION_TOKEN and sends it as
`Authorization: Bearer <token>`, as Azure Batch tasks send theirs. The token names one job incarnation
(id and creation sequence number) and carries an HMAC under a key derived from the account key, so the
server needs no table of tokens: it verifies the MAC, checks that this job still exists under that sequence
number (a deleted and re-created job of the same id does not honour old tokens), and lets the request act
only on that job (`/jobs/{jobId}` and everything below it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

#: Prefix and version of the token format.
SCHEME = "kjt1"
_PURPOSE = b"kiln job authentication token v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class JobScope:
    """What a valid token grants: the job with this id (compared without case) and creation sequence."""

    job_id: str
    job_seq: int


class JobTokens:
    """Issues and checks job tokens for one account key."""

    def __init__(self, account_key: bytes) -> None:
        self._key = hmac.new(account_key, _PURPOSE, hashlib.sha256).digest()

    def _mac(self, job_id: str, job_seq: int) -> bytes:
        return hmac.new(self._key, f"{job_id.lower()}\n{job_seq}".encode(), hashlib.sha256).digest()

    def issue(self, job_id: str, job_seq: int) -> str:
        return ".".join((SCHEME, _b64(job_id.encode()), str(job_seq), _b64(self._mac(job_id, job_seq))))

    def verify(self, token: str) -> JobScope | None:
        """The scope a token grants, or None when it is not one of ours (malformed or a bad MAC)."""
        parts = token.strip().split(".")
        if len(parts) != 4 or parts[0] != SCHEME or not (parts[2].isascii() and parts[2].isdigit()):  # not "²"
            return None
        try:
            job_id, mac = _unb64(parts[1]).decode(), _unb64(parts[3])
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        job_seq = int(parts[2])
        if not hmac.compare_digest(mac, self._mac(job_id, job_seq)):
            return None
        return JobScope(job_id, job_seq)


def path_in_scope(path: str, scope: JobScope) -> bool:
    """Whether a request path addresses the token's job: /jobs/{jobId} or anything below it."""
    parts = path.strip("/").split("/")
    return len(parts) >= 2 and parts[0] == "jobs" and parts[1].lower() == scope.job_id.lower()
