"""One store suite on SQLite and PostgreSQL, each test on its own database copied from a migrated template.

PostgreSQL: the admin URL comes from KILN_TEST_PG_URL if set. Otherwise the local cluster's socket
(/var/run/postgresql) is tried as the `postgres` role, then as the OS user. The Debian cluster only allows
peer authentication on the socket, so when running as root the fixture creates a `root` superuser role once,
as the postgres OS user:

    su postgres -c "createuser --superuser root"

A reachable server is required (CI: `pg_ctlcluster 15 main start`); without one the PostgreSQL cases skip,
unless KILN_TEST_REQUIRE_PG=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from kiln.store.database import Database

SOCKET_DIR = "/var/run/postgresql"
BACKENDS = ["sqlite", "postgresql"]


def _try_connect(url: str) -> str | None:
    """None if `url` accepts a connection, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


def _make_root_role() -> str | None:
    """As root with peer authentication: give root a superuser role (idempotent). None on success."""
    if os.geteuid() != 0 or shutil.which("su") is None:
        return "not root: cannot create a role for the current user"
    check = subprocess.run(
        ["su", "postgres", "-c", "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname = 'root'\""],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check.returncode == 0 and check.stdout.strip() == "1":
        return None
    made = subprocess.run(
        ["su", "postgres", "-c", "createuser --superuser root"], capture_output=True, text=True, timeout=30
    )
    return None if made.returncode == 0 else f"createuser failed: {made.stderr.strip()}"


def _find_admin_url() -> tuple[str | None, str]:
    """(url, '') when a superuser connection works, else (None, reason)."""
    if configured := os.environ.get("KILN_TEST_PG_URL"):
        error = _try_connect(configured)
        return (configured, "") if error is None else (None, f"KILN_TEST_PG_URL not reachable: {error}")
    as_postgres = f"postgresql://postgres@/postgres?host={SOCKET_DIR}"
    as_me = f"postgresql:///postgres?host={SOCKET_DIR}"
    errors = []
    for url in (as_postgres, as_me):
        error = _try_connect(url)
        if error is None:
            return url, ""
        errors.append(error)
    if any("authentication failed" in e for e in errors):  # server is up, our role is missing
        problem = _make_root_role()
        if problem is None and (error := _try_connect(as_me)) is None:
            return as_me, ""
        errors.append(problem or error)
    return None, (
        "PostgreSQL not reachable on " + SOCKET_DIR + " (start it: pg_ctlcluster 15 main start): " + " | ".join(errors)
    )


def _with_database(admin_url: str, name: str) -> str:
    """The admin URL pointed at database `name` (same user and socket)."""
    base, _, query = admin_url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


class PostgresServer:
    """Creates and drops throwaway databases through a superuser connection."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.run_id = uuid.uuid4().hex[:8]

    def _execute(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def create(self, template: str | None = None) -> tuple[str, str]:
        name = f"kiln_test_{self.run_id}_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        self._execute(statement)
        return name, _with_database(self.admin_url, name)

    def drop(self, name: str) -> None:
        self._execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    url, reason = _find_admin_url()
    if url is None:
        if os.environ.get("KILN_TEST_REQUIRE_PG") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    yield PostgresServer(url)


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> Iterator[str]:
    """A database migrated to head, copied for every test (CREATE DATABASE ... TEMPLATE)."""
    name, url = pg_server.create()
    database = Database(url)
    try:
        database.migrate()
    finally:
        database.close()  # a template must have no open connections when it is copied
    yield name
    pg_server.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "kiln.db"
    database = Database(f"sqlite:///{path}")
    try:
        database.migrate()
    finally:
        database.close()  # the last connection closing checkpoints the WAL into the file
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own with no tables (for migration tests)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name, url = server.create()
    yield url
    server.drop(name)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own, already at Alembic head."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "kiln.db"
        shutil.copyfile(template, path)
        for suffix in ("-wal", "-shm"):  # normally gone after close; copy them if not
            if Path(f"{template}{suffix}").exists():
                shutil.copyfile(f"{template}{suffix}", f"{path}{suffix}")
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name, url = server.create(template=request.getfixturevalue("pg_template"))
    yield url
    server.drop(name)


@pytest.fixture
def db(store_url: str) -> Iterator[Database]:
    database = Database(store_url)
    yield database
    database.close()
