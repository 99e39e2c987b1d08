"""The store: one SQLAlchemy engine, migrations on open, and a way to run work off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError

from kiln import metrics, story, undo
from kiln.errors import ServerBusy
from kiln.store.stories import record_transitions

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")
MIGRATIONS = Path(__file__).with_name("migrations")
#: `revision = "..."` and `down_revision = "..."` (or None) in a migration script
_REVISION_LINE = re.compile(r'^(down_revision|revision)(?:\s*:[^=]*)?\s*=\s*(?:"([^"]*)"|None)\s*$', re.MULTILINE)
#: How often the checkpointer folds SQLite's write-ahead log back into the database file (seconds).
CHECKPOINT_INTERVAL = 0.25
#: Threads (each with its own connection) that run reads beside the writer: a long list holds one of them,
#: not the writer nor the other clients' reads.
READERS = 4

logger = logging.getLogger(__name__)


def alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration's revision, read from the scripts' `revision` and `down_revision` lines: the one
    revision no script names as its down revision (None unless exactly one, e.g. a branch: Alembic decides)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(script.read_text()):
            (revisions if name == "revision" else downs).add(value)
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def stored_revisions(connection: Connection) -> set[str]:
    """The revisions Alembic recorded in the store (none in a new store)."""
    if not inspect(connection).has_table("alembic_version"):
        return set()
    return {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}


def keep_private(database: Path) -> None:
    """The SQLite file (and its WAL and shm, which SQLite makes with the file's mode) readable by the
    service alone: the data dir is traversable by task accounts, the store must not be readable."""
    os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        if path.exists():
            os.chmod(path, 0o600)


def sqlite_file(url: str) -> Path | None:
    """The database file a SQLite URL names; None for an in-memory database or another dialect."""
    if not url.startswith("sqlite"):
        return None
    file = url.removeprefix("sqlite:///")
    if not file or file.startswith(":memory:") or "mode=memory" in file:
        return None
    return Path(file.split("?", 1)[0])


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if (file := sqlite_file(url)) is not None:
            keep_private(file)
        engine = create_engine(url, connect_args={"check_same_thread": False}, json_deserializer=load_json)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # WAL: readers never block the writer
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's thread does it
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # the writer, READERS readers, and a few connections for migrations and the odd direct use
    return create_engine(url, pool_size=READERS + 1, max_overflow=4, json_deserializer=load_json)


def load_json(text: str | bytes) -> Any:
    """A stored document (a row's spec): orjson reads it several times faster than json, which a page of
    tasks felt; what orjson refuses (NaN, integers past 64 bits) json still reads."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class Checkpointer:
    """Folds SQLite's write-ahead log into the database file, on a thread of its own. Left to SQLite, the
    commit that crosses 1,000 pages of log does it, and its fsyncs (10-40 ms on these machines' ext4)
    would stall the event loop, where writes run. A PASSIVE checkpoint takes no lock that writers or
    readers wait for; the sqlite3 module lets go of the GIL while it runs."""

    def __init__(self, engine: Engine, interval: float = CHECKPOINT_INTERVAL) -> None:
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiln-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = self._engine.raw_connection()
        try:
            while not self._stop.wait(self._interval):
                try:
                    connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception:  # the next round tries again; the log only grows meanwhile
                    logger.exception("WAL checkpoint failed")
        finally:
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Database:
    """Owns the engine; one writer at a time, so SQLite never sees two.

    SQLite writes run on the event loop itself: a transaction there is CPU work under the GIL, which a
    thread would not run in parallel anyway, and the hop to a thread and back cost the scheduler's
    hot path more than the work (measured ~1.5-3 ms per transaction on 2 cores). The loop runs one at a
    time, so they never overlap. PostgreSQL waits on the network: its writes go to the store thread.
    Reads run on READERS threads of their own, each transaction on its own connection (SQLite in WAL
    mode: a snapshot that neither waits for the writer nor holds it up; PostgreSQL: a pooled
    connection), so a long listing delays neither writes nor other clients' reads.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-store")
        self._readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="kiln-read")
        self._inline_writes = self.engine.dialect.name == "sqlite"
        #: the loop's own connection for inline writes, kept between them: checking one out of the pool
        #: and back for each transaction cost more than a short transaction's SQL (~60 us of ~25)
        self._loop_connection: Connection | None = None
        self._checkpointer = Checkpointer(self.engine) if sqlite_file(url) is not None else None
        #: called inside every write transaction on the loop (SQLite) just before it commits; raising rolls it
        #: back. Tests check the scheduler's invariants here (kiln.scheduler.control); a write on the store's
        #: thread (PostgreSQL) is not checked, as memory may be changing on the loop meanwhile.
        self.before_commit: Callable[[], None] | None = None

    def migrate(self) -> None:
        """Bring the store to the newest schema. A store already there (every restart but the first after an
        upgrade) is told by one query, without Alembic, whose import alone is a good part of a start."""
        with self.engine.begin() as connection:
            if stored_revisions(connection) == {head_revision()}:
                return
            from alembic import command

            command.upgrade(alembic_config(connection), "head")

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction: on the loop (SQLite) or on the store thread (PostgreSQL). If the store
        fails it (a full disk, an I/O error), nothing of it is stored and memory is as it was (kiln.undo):
        ServerBusy, Batch's 503."""
        try:
            if self._inline_writes:
                return self._transact_inline(work)
            context = contextvars.copy_context()  # the stimulus goes with the work to the store's thread
            return await asyncio.get_running_loop().run_in_executor(self._writer, context.run, self._transact, work)
        except OperationalError as exc:
            logger.error("the store failed a write: %s", exc.orig)
            raise ServerBusy(f"The server could not store the change ({exc.orig}); nothing was stored.") from exc

    async def read(self, work: Callable[[Connection], T]) -> T:
        """On a reader thread, in a transaction of its own: it waits for no write and no other read."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._transact, work, metrics.READ)

    def _transact(self, work: Callable[[Connection], T], kind: str = metrics.WRITE) -> T:
        started = time.perf_counter()
        with story.collecting() as notes:
            with undo.recording(), self.engine.begin() as connection:
                result = _with_story(connection, work, notes, None)
            metrics.committed(notes, time.perf_counter() - started, kind)
        return result

    def _transact_inline(self, work: Callable[[Connection], T]) -> T:
        """One transaction on the loop's kept connection; a connection an error invalidated is replaced."""
        started = time.perf_counter()
        connection = self._loop_connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self._loop_connection = self.engine.connect()
        committing = False
        with story.collecting() as notes:
            try:
                with undo.recording(), connection.begin():
                    result = _with_story(connection, work, notes, self.before_commit)
                    committing = True
            except BaseException:
                if committing:  # a COMMIT that failed (SQLITE_FULL) leaves SQLite's transaction open: drop it
                    connection.invalidate()
                raise
            metrics.committed(notes, time.perf_counter() - started, metrics.WRITE)
        return result

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._loop_connection is not None:
            self._loop_connection.close()
            self._loop_connection = None
        self.engine.dispose()


def _with_story(
    connection: Connection,
    work: Callable[[Connection], T],
    notes: list[story.Note],
    before_commit: Callable[[], None] | None,
) -> T:
    """`work`, and the transitions it made (collected in notes) recorded in the same transaction."""
    result = work(connection)
    if notes:
        record_transitions(connection, notes)
    if before_commit is not None:
        before_commit()
    return result


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{os.path.abspath(data_dir / 'kiln.db')}"
