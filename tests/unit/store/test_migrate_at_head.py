"""Database.migrate on a store already at the newest schema: one query, no Alembic (a restart's start-up time),
and a store behind it still upgraded by Alembic. SQLite and PostgreSQL (conftest.py)."""

from __future__ import annotations

import subprocess
import sys

from alembic import command
from alembic.script import ScriptDirectory

from kiln.store.database import Database, alembic_config, head_revision, stored_revisions

#: migrates the store at argv[1] in a fresh interpreter and prints whether Alembic was imported to do it
MIGRATE_AND_REPORT = """
import sys
from kiln.store.database import Database
database = Database(sys.argv[1])
database.migrate()
database.close()
print("alembic" in sys.modules)
"""


def test_head_read_from_the_scripts_is_alembics_head(db: Database) -> None:
    with db.engine.connect() as connection:
        assert head_revision() == ScriptDirectory.from_config(alembic_config(connection)).get_current_head()


def test_a_store_at_head_is_opened_without_alembic(db: Database) -> None:
    db.migrate()
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE_AND_REPORT, db.url], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"
    with db.engine.connect() as connection:
        assert stored_revisions(connection) == {head_revision()}


def test_a_store_behind_head_is_upgraded(db: Database) -> None:
    with db.engine.begin() as connection:
        script = ScriptDirectory.from_config(alembic_config(connection))
        previous = script.get_revision(head_revision()).down_revision
        command.downgrade(alembic_config(connection), str(previous))
    with db.engine.connect() as connection:
        assert stored_revisions(connection) == {previous}
    db.migrate()
    with db.engine.connect() as connection:
        assert stored_revisions(connection) == {head_revision()}


def test_a_new_store_is_created(empty_url: str) -> None:
    database = Database(empty_url)
    try:
        with database.engine.connect() as connection:
            assert stored_revisions(connection) == set()
        database.migrate()
        with database.engine.connect() as connection:
            assert stored_revisions(connection) == {head_revision()}
    finally:
        database.close()
