"""Clients that connect and then stall must not exhaust the server: a bound on how long a request's headers may
take, on how many connections are open at once, and a descriptor limit raised to make room for them.

uvicorn bounds neither the time to read a request's headers nor the connections it accepts (its
limit_concurrency answers a bare 503 only once the headers are in, which a stalled client never sends). The
body's deadline is api.deadlines.BodyDeadline's, which can answer with Batch's error body.

Requests are parsed by httptools (llhttp, in C), not h11: h11's pure-Python parsing and framing was about a
tenth of the server's CPU per small request (a task counts call).
"""

from __future__ import annotations

import asyncio
import json
import resource
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kiln.wire.times import format_time, now

#: Seconds a request's headers (and, in api.deadlines.BodyDeadline, its body) may take to arrive.
READ_TIMEOUT = 30.0
#: The most connections served at once unless the descriptor limit leaves room for fewer.
MAX_CONNECTIONS = 4096
#: Descriptors kept for everything else the server opens (the store, the nodes' comms and launchers, files).
RESERVED_FDS = 256


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    #: seconds a request's headers may take to arrive (from the connection, or the previous response)
    read_timeout: float
    #: connections open at once; the next is answered 503 ServerBusy and closed
    max_connections: int


def raise_nofile() -> int:
    """Raise the soft descriptor limit to the hard one (the default soft limit, 1,024, is soon reached by
    connections); the soft limit it leaves."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def connection_cap(nofile: int, wanted: int = MAX_CONNECTIONS) -> int:
    """wanted, but no more than the descriptors left beside RESERVED_FDS (at least a few)."""
    return min(wanted, max(16, nofile - RESERVED_FDS))


def busy_response() -> bytes:
    """A whole HTTP response: 503 with Batch's ServerBusy body; nothing of the request has been read."""
    message = f"The server is busy: too many connections.\nRequestId:{uuid.uuid4()}\nTime:{format_time(now())}"
    body = json.dumps({"code": "ServerBusy", "message": {"lang": "en-US", "value": message}}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json;odata=minimalmetadata\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that closes a connection whose request headers do not arrive in time, and
    refuses a connection beyond the cap."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits(READ_TIMEOUT, MAX_CONNECTIONS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(cls, limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
        """The class uvicorn makes each connection's protocol from (it takes a class, not arguments)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(busy_response())
            transport.close()
            return
        self._await_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._stop_timer()
        self._header_timer = self.loop.call_later(self.limits.read_timeout, self._headers_late)

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        """No request has started since the timer was set (the last cycle, if any, is answered): close."""
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
