"""A hostile task: try every socket Kiln's processes hold, and run code through any that answers.

Run by tests/security/test_sockets.py as a non-admin task, with a Python that has Dask on its path (as a task
that brings its own Dask would). Usage: socket_probe.py SITE TARGETS_JSON MARKER ROOT...

TARGETS_JSON lists the TCP ports Kiln's processes listen on (the test knows them; other servers on the
machine are not ours to attack); this script first checks it can find each of them itself in /proc/net/tcp.
The payload appends the uid it runs as to MARKER: anything in MARKER is code run by Kiln for us.
Unix sockets are tried under each ROOT. Prints one JSON report.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request

SITE, TARGETS, MARKER, *ROOTS = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], *sys.argv[4:]
sys.path.insert(0, SITE)

from distributed import Client, rpc  # noqa: E402
from distributed.protocol.pickle import dumps  # noqa: E402
from distributed.security import Security  # noqa: E402

TIMEOUT = 3.0
LISTEN = "0A"
#: What Dask's HTTP servers (scheduler and workers) serve by default.
HTTP_PATHS = ("/health", "/metrics", "/json/identity.json", "/info/main/workers.html")


def payload() -> int:
    """Runs wherever Kiln lets us in: leaves the uid it ran as."""
    import os

    with open(MARKER, "a") as marker:
        marker.write(f"{os.getuid()}\n")
    return os.getuid()


def listening_ports() -> set[int]:
    """TCP ports anything listens on, as any local user can read them."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1:4:2]
                if state == LISTEN:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def unverified_tls(own_cert: bool) -> ssl.SSLContext:
    """A client context that trusts any server: with no certificate, or with a certificate of our own CA."""
    if own_cert:
        context = Security.temporary().get_connection_args("client")["ssl_context"]
    else:
        context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def raw(port: int) -> str:
    """Connect and send bytes: any TCP listener accepts, so this is reported, not a failure in itself."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x00" * 64)
        try:
            return repr(sock.recv(64))
        except TimeoutError:
            return "connected, no answer"


def http_get(port: int, path: str) -> int:
    """The HTTP status a GET answers (connection errors raise)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def dask_rpc(address: str, connection_args: dict | None) -> list[str]:
    """A Dask handshake, then every way a Dask server runs a function it is sent."""
    done = []
    async with rpc(address, timeout=TIMEOUT, connection_args=connection_args) as server:
        await asyncio.wait_for(server.identity(), TIMEOUT)
        done.append("identity")
        for op in ("run", "run_function"):  # workers and nannies; the scheduler
            try:
                uid = await asyncio.wait_for(getattr(server, op)(function=dumps(payload)), TIMEOUT)
                done.append(f"{op}: {uid}")
            except Exception as exc:
                done.append(f"{op} failed: {exc!r}")
    return done


async def dask_client(address: str) -> list[str]:
    """The way the Dask docs say: a Client, then code on the scheduler and on every worker."""
    async with Client(address, asynchronous=True, timeout=TIMEOUT) as client:
        return [f"run_on_scheduler: {await client.run_on_scheduler(payload)}", f"run: {await client.run(payload)}"]


async def attempt(report: dict, what: str, call, success: str = "succeeded") -> None:
    try:
        outcome = await asyncio.wait_for(call, 4 * TIMEOUT)
    except Exception as exc:
        report["failed"][what] = repr(exc)[:200]
    else:
        report[success][what] = outcome


def unix_sockets() -> list[tuple[str, int]]:
    """Named Unix sockets under the roots, with their socket type, from /proc/net/unix."""
    found = []
    with open("/proc/net/unix") as lines:
        for line in list(lines)[1:]:
            fields = line.split()
            if len(fields) >= 8 and any(fields[7].startswith(root.rstrip("/") + "/") for root in ROOTS):
                found.append((fields[7], int(fields[4], 16)))
    return found


def connect_unix(path: str, kind: int) -> str:
    with socket.socket(socket.AF_UNIX, kind) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall(b"\x00\x00\x00\x02{}")
        return "connected"


def inherited_sockets() -> list[str]:
    """Sockets this task was started with besides its stdio: a channel to whoever holds the other end."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the directory listing's own descriptor
            continue
        if int(fd) > 2 and target.startswith("socket:"):
            found.append(f"{fd}: {target}")
    return found


async def main(report: dict) -> None:
    listening = listening_ports()
    report["found"] = sorted(set(TARGETS) & listening)
    tls = {"no-cert": unverified_tls(False), "own-cert": unverified_tls(True)}
    attempts = []
    for port in report["found"]:
        attempts.append(attempt(report, f"raw {port}", asyncio.to_thread(raw, port), "raw"))
        for path in HTTP_PATHS:
            attempts.append(attempt(report, f"http {port}{path}", asyncio.to_thread(http_get, port, path), "http"))
        attempts.append(attempt(report, f"rpc tcp://{port}", dask_rpc(f"tcp://127.0.0.1:{port}", None)))
        attempts.append(attempt(report, f"client tcp://{port}", dask_client(f"tcp://127.0.0.1:{port}")))
        for name, context in tls.items():
            args = {"ssl_context": context, "require_encryption": True}
            attempts.append(attempt(report, f"rpc tls://{port} {name}", dask_rpc(f"tls://127.0.0.1:{port}", args)))
    for path, kind in unix_sockets():
        attempts.append(attempt(report, f"unix {path}", asyncio.to_thread(connect_unix, path, kind)))
    await asyncio.gather(*attempts)
    print(json.dumps(report, indent=1, sort_keys=True))


# Before asyncio makes sockets of its own.
asyncio.run(
    main({"uid": os.getuid(), "inherited": inherited_sockets(), "succeeded": {}, "raw": {}, "http": {}, "failed": {}})
)
