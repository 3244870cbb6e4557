"""Migration 0006 on SQLite: the change log's ids become rowids without AUTOINCREMENT, keeping
every record and never letting the numbering go back (readers hold positions in it): the newest
record cannot be deleted, so emptying the table by hand cannot restart it."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from harness.processes import ROOT, django_env, manage_command

pytestmark = pytest.mark.embedded_only

TABLE = "reactive_changelog"


def migrate(db_path: Path, *target: str) -> None:
    env = django_env("tests.settings", SQLITE_PATH=str(db_path), DATABASE_URL=None, REDIS_URL=None)
    subprocess.run(manage_command("migrate", *target, "--noinput", "-v0"), cwd=ROOT, env=env, check=True)


def table_sql(db: sqlite3.Connection) -> str:
    return db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()[0]


def append(db: sqlite3.Connection, changes: str) -> int:
    cursor = db.execute(f"INSERT INTO {TABLE} (created, changes) VALUES (CURRENT_TIMESTAMP, ?)", (changes,))
    db.commit()
    return cursor.lastrowid


@pytest.mark.parametrize("newest_deleted", [False, True])
def test_the_log_keeps_its_records_and_its_numbering(tmp_path: Path, newest_deleted: bool) -> None:
    db_path = tmp_path / "db.sqlite3"
    migrate(db_path, "reactive", "0005")
    db = sqlite3.connect(db_path)
    assert "AUTOINCREMENT" in table_sql(db).upper()  # as 0003 made it
    versions = [append(db, f'{{"rows":[],"opaque":["t{n}"]}}') for n in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    if newest_deleted:  # by hand: the sequence stays at 5, past the newest record left
        db.execute(f"DELETE FROM {TABLE} WHERE id > 3")
        db.commit()
    db.close()

    migrate(db_path, "reactive", "0006")  # nothing else commits before it
    db = sqlite3.connect(db_path)
    try:
        assert "AUTOINCREMENT" not in table_sql(db).upper()
        rows = db.execute(f"SELECT id, changes FROM {TABLE} WHERE id <= 5 ORDER BY id").fetchall()
        kept = 3 if newest_deleted else 5
        assert rows[:kept] == [(n + 1, f'{{"rows":[],"opaque":["t{n}"]}}') for n in range(kept)]
        if newest_deleted:  # an empty record holds the sequence's number
            assert rows[kept:] == [(5, '{"rows":[],"opaque":[]}')]
        else:
            assert len(rows) == kept
        # The migrate run's own commits (other apps' tables) and the next record go on from there.
        (newest,) = db.execute(f"SELECT max(id) FROM {TABLE}").fetchone()
        assert append(db, '{"rows":[],"opaque":["later"]}') == newest + 1 > 5
        indexes = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (TABLE,))
        assert [name for (name,) in indexes] == ["reactive_changelog_xid"]
        assert_newest_kept(db)
    finally:
        db.close()


def assert_newest_kept(db: sqlite3.Connection) -> None:
    """Deleting every record fails, with a message that says why, and deletes nothing; deleting
    all but the newest (what pruning does) works."""
    (count,) = db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    with pytest.raises(sqlite3.IntegrityError, match="newest record of reactive_changelog is never deleted"):
        db.execute(f"DELETE FROM {TABLE}")
    db.rollback()
    assert db.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (count,)
    (newest,) = db.execute(f"SELECT max(id) FROM {TABLE}").fetchone()
    db.execute(f"DELETE FROM {TABLE} WHERE id < ?", (newest,))
    db.commit()
    assert db.execute(f"SELECT id FROM {TABLE}").fetchall() == [(newest,)]
    assert append(db, '{"rows":[],"opaque":["after"]}') == newest + 1


def test_a_fresh_database_keeps_its_newest_record_too(tmp_path: Path) -> None:
    db_path = tmp_path / "db.sqlite3"
    migrate(db_path)
    db = sqlite3.connect(db_path)
    try:
        assert "AUTOINCREMENT" not in table_sql(db).upper()
        append(db, '{"rows":[],"opaque":["t"]}')
        assert_newest_kept(db)
    finally:
        db.close()
