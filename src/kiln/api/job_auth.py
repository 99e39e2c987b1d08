"""Requests authenticated by a job token (`Authorization: Bearer <AZ_BATCH_AUTHENTICATION_TOKEN>`).

A task given `authenticationTokenSettings.access: ["job"]` may act on its own job (`/jobs/{jobId}` and below:
read the job, add, list and read its tasks...). Anything else answers 403 `AuthorizationFailure`; a token that
is not ours, or whose job is gone, answers 403 `AuthenticationFailed`, as a bad Shared Key signature does.
"""

from __future__ import annotations

from fastapi import Request

from kiln.api.context import Kiln
from kiln.commands import jobs
from kiln.core.job_token import JobTokens, path_in_scope
from kiln.errors import AuthenticationFailed, KilnError

BEARER = "bearer"


def bearer_token(authorization: str | None) -> str | None:
    """The token of a `Bearer` Authorization header, or None for any other scheme."""
    scheme, _, credential = (authorization or "").strip().partition(" ")
    return credential.strip() if scheme.lower() == BEARER else None


class AuthorizationFailure(KilnError):
    """This request is not authorized to perform this operation."""

    status = 403
    code = "AuthorizationFailure"


async def verify_job_token(request: Request, state: Kiln, token: str) -> None:
    scope = JobTokens(state.account_key).verify(token)
    if scope is None:
        raise AuthenticationFailed("The bearer token is not a valid Kiln job authentication token.")
    job = await jobs.find(state.control, scope.job_id)
    if job is None or job["seq"] != scope.job_seq:
        raise AuthenticationFailed(f"The job '{scope.job_id}' this token was issued for no longer exists.")
    if not path_in_scope(request.url.path, scope):
        raise AuthorizationFailure(
            f"This request is not authorized to perform this operation: the authentication token grants access "
            f"to job '{job['id']}' only (/jobs/{job['id']} and below)."
        )
