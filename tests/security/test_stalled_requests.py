"""Clients that connect and stall do not take the server down (issue 20.6): more connections than the default
descriptor limit allows, each stalled in its headers or its body, while a normal request still succeeds; then
each stalled one is cut off (a body that does not come: 408 OperationTimedOut), and connections past the cap are
answered 503 ServerBusy at once."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiln.api.client_auth import SharedKeyAuth
from kiln.cli.embedded import EmbeddedServer
from kiln.testing import wait_for
from kiln.testing_fixtures import open_dir

#: More than a default soft descriptor limit (1,024): what used to exhaust the server's.
STALLED = 1100
MAX_CONNECTIONS = 1500
DEFAULT_SOFT_LIMIT = 1024


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def stall_server(open_base: Path) -> Iterator[EmbeddedServer]:
    """Started under a system's default soft limit, with a short read timeout."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * MAX_CONNECTIONS:
        pytest.skip(f"the hard descriptor limit ({hard}) leaves no room for {MAX_CONNECTIONS} connections")
    env = {"KILN_READ_TIMEOUT": "3", "KILN_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    server = EmbeddedServer(open_dir(open_base) / "kiln", env=env)
    with soft_nofile(DEFAULT_SOFT_LIMIT):
        server.start()
    yield server
    server.stop()


@pytest.fixture
def many_fds() -> Iterator[None]:
    """This process holds the client side of every connection."""
    with soft_nofile(resource.getrlimit(resource.RLIMIT_NOFILE)[1]):
        yield


def list_pools(server: EmbeddedServer) -> httpx.Response:
    return httpx.get(
        f"{server.endpoint}/pools",
        params={"api-version": "2025-06-01"},
        auth=SharedKeyAuth(server.account_name, server.account_key),
        timeout=30,
    )


def connect(server: EmbeddedServer, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(first_bytes)
    return sock


HEAD = b"POST /pools?api-version=2025-06-01 HTTP/1.1\r\nHost: kiln\r\n"
HEADERS_STALLED = HEAD  # the blank line that ends the headers never comes
BODY_STALLED = HEAD + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"


def answers(sockets: list[socket.socket]) -> dict[socket.socket, bytes] | None:
    """What each socket got before the server closed it; None (nothing read) while any has nothing to read."""
    poller = select.poll()  # select() takes no descriptor past 1,023
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    if len(poller.poll(0)) < len(sockets):
        return None
    return {sock: read_to_end(sock) for sock in sockets}


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_stalled_connections_leave_room_for_others_and_are_cut_off(
    stall_server: EmbeddedServer, many_fds: None
) -> None:
    pid = stall_server.process.pid if stall_server.process else 0
    soft, hard = (int(n) for n in Path(f"/proc/{pid}/limits").read_text().split("Max open files")[1].split()[:2])
    assert soft == hard > DEFAULT_SOFT_LIMIT  # raised at start
    headers = [connect(stall_server, HEADERS_STALLED) for _ in range(STALLED // 2)]
    bodies = [connect(stall_server, BODY_STALLED) for _ in range(STALLED - STALLED // 2)]
    try:
        assert list_pools(stall_server).status_code == 200
        got = wait_for(lambda: answers(headers + bodies), 60, "the stalled connections to be cut off")
        assert {got[sock] for sock in headers} == {b""}  # closed: there is no request to answer
        for sock in bodies:
            assert got[sock].startswith(b"HTTP/1.1 408 ") and b'"code":"OperationTimedOut"' in got[sock]
    finally:
        for sock in headers + bodies:
            sock.close()
    assert list_pools(stall_server).status_code == 200


def test_connections_past_the_cap_are_told_the_server_is_busy(stall_server: EmbeddedServer, many_fds: None) -> None:
    held = [connect(stall_server, b"") for _ in range(MAX_CONNECTIONS + 20)]
    try:
        refused = wait_for(lambda: answers(held[MAX_CONNECTIONS:]), 60, "the connections past the cap")
        for answer in refused.values():
            assert answer.startswith(b"HTTP/1.1 503 ") and b'"code": "ServerBusy"' in answer
    finally:
        for sock in held:
            sock.close()
    assert wait_for(lambda: list_pools(stall_server).status_code == 200, 30, "a request to be served again")
