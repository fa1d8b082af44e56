"""The SQLite side of the facebank: the file ``facebank.sqlite`` and nothing else.

Here: opening the database (read-write, read-only, or as an immutable file when
a read-only folder lacks the WAL index), the schema and its markers (the
application id and schema version), refusing damaged and foreign databases,
the ``BEGIN IMMEDIATE`` transaction with its busy timeout, the translation of
SQLite's errors into one-line FacebankErrors, and how an embedding is stored
as a BLOB. What the rows mean (people, their pictures, outliers) is
:mod:`mobileface.identity.facebank`'s business; this module only keeps the
file sound, so that the rules of SQLite are read in one place.

The schema is created only in a new database; an existing file must carry the
facebank's marker (its application id, or the ``meta`` table of the first
schema), so that another application's SQLite file is refused untouched.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import numpy as np

from mobileface.identity.errors import FacebankError, shown
from mobileface.identity.names import DB_COMPANIONS, DB_NAME

log = logging.getLogger(__name__)

#: the schema this version writes; an older one (1: no aligned crops, 2: no change log) is
#: upgraded on first write
SCHEMA_VERSION = 3
#: the change log keeps this many entries: a reader further behind reads the whole gallery
KEEP_CHANGES = 100_000
#: written into the SQLite header of every facebank this module creates ("MFB1"):
#: how a facebank is told from another application's SQLite file
APPLICATION_ID = 0x4D464231
#: how long a change waits for another process's change to commit, seconds
BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id        INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    file      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    model     TEXT NOT NULL,
    embedding BLOB NOT NULL,
    quality   REAL NOT NULL,
    outlier   INTEGER NOT NULL DEFAULT 0,
    added     REAL NOT NULL,
    chip      BLOB,
    UNIQUE (person_id, file)
);
CREATE INDEX IF NOT EXISTS images_person ON images(person_id);
"""
#: the change log (schema 3): a row per image row added, changed or removed and per person
#: renamed, numbered in commit order (writers take the write lock first), so that a
#: running pipeline reads only what changed since its last read (see store.gallery)
CHANGE_LOG = (
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "image_id INTEGER, person_id INTEGER)",
    "CREATE TRIGGER IF NOT EXISTS images_added AFTER INSERT ON images BEGIN "
    "INSERT INTO changes (image_id, person_id) VALUES (new.id, new.person_id); END",
    "CREATE TRIGGER IF NOT EXISTS images_changed AFTER UPDATE ON images BEGIN "
    "INSERT INTO changes (image_id, person_id) VALUES (new.id, new.person_id); END",
    "CREATE TRIGGER IF NOT EXISTS images_removed AFTER DELETE ON images BEGIN "
    "INSERT INTO changes (image_id, person_id) VALUES (old.id, old.person_id); END",
    "CREATE TRIGGER IF NOT EXISTS people_renamed AFTER UPDATE OF name ON people BEGIN "
    "INSERT INTO changes (image_id, person_id) VALUES (NULL, new.id); END",
)
#: how a facebank of each older schema version becomes the next one (tested in
#: tests/test_facebank_backends.py); version 2 keeps each row's aligned crop, version 3
#: logs changes
MIGRATIONS = {1: ("ALTER TABLE images ADD COLUMN chip BLOB",), 2: CHANGE_LOG}
#: the columns every table must have: a facebank missing one is damaged
_COLUMNS = {"meta": {"key", "value"}, "people": {"id", "name", "created"},
            "images": {"id", "person_id", "file", "sha256", "model", "embedding", "quality",
                       "outlier", "added"}}

#: one row per (person, picture): storing the same picture twice (two imports at once, a
#: picture added again) updates the row instead of failing
UPSERT_IMAGE = """
INSERT INTO images (person_id, file, sha256, model, embedding, quality, outlier, added, chip)
VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)
ON CONFLICT (person_id, file) DO UPDATE SET sha256 = excluded.sha256, model = excluded.model,
    embedding = excluded.embedding, quality = excluded.quality, outlier = 0,
    added = excluded.added, chip = excluded.chip
"""

_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26


def check_version(value, where: str) -> int:
    """The schema version a facebank's meta table holds, refusing one this version
    cannot read (a newer one, or nonsense)."""
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise FacebankError(f"{where} has an unreadable schema version {value!r}") from None
    if version > SCHEMA_VERSION:
        raise FacebankError(f"{where} has schema version {version}, made by a newer MobileFace; "
                            f"this one reads up to version {SCHEMA_VERSION}: upgrade MobileFace")
    if version < 1:
        raise FacebankError(f"{where} has an unknown schema version {version}")
    return version


def encode_embedding(vector: np.ndarray) -> bytes:
    """An embedding as the BLOB the database keeps: little-endian float32."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_embedding(blob: bytes) -> np.ndarray:
    """The embedding a BLOB of :func:`encode_embedding` holds, as float32."""
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _sqlite_code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of an error (0 when sqlite3 did not give one)."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


class Database:
    """A facebank's SQLite file at ``path``, opened and checked.

    read_only False opens it for writing, creating the schema in a new file;
    True opens it for reading only (an empty in-memory database when there is
    no file yet). A file that is not a facebank, is damaged or is of another
    schema version is refused with a FacebankError. Calls are serialised by a
    lock, so that one object may be shared between threads.
    """

    def __init__(self, path: Path, read_only: bool):
        self.path = path
        self._lock = threading.RLock()
        self.conn = self._open_read_only() if read_only else self._open_read_write()

    # -- opening ---------------------------------------------------------------

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            return sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False, uri=uri)
        except sqlite3.Error as exc:
            raise self.error(exc) from None

    def _open_read_write(self) -> sqlite3.Connection:
        self.conn = self._connect(str(self.path))
        try:
            with self.translated():
                self.conn.execute("PRAGMA foreign_keys = ON")
                if self._kind() == "new":
                    self._create_schema()
                self._verify_schema()
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.upgrade()
        except BaseException:
            self.conn.close()
            raise
        return self.conn

    def _open_read_only(self) -> sqlite3.Connection:
        """The database opened read-only; an empty in-memory one when there is none yet.

        A WAL database needs its index file (-shm): SQLite reads it, or creates
        it, beside the database. In a folder that cannot be written and that has
        none (no writer has it open), SQLite cannot open the database read-only:
        then it is read as an immutable file, which is what it is until a writer
        comes.
        """
        if not self.path.exists():
            self.conn = self._connect(":memory:")
            with self.translated():
                self._create_schema()
            return self.conn
        uri = self.path.absolute().as_uri()
        self.conn = self._connect(f"{uri}?mode=ro", uri=True)
        try:
            with self.translated():
                try:
                    self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                except sqlite3.OperationalError as exc:
                    if _sqlite_code(exc) != _SQLITE_CANTOPEN:
                        raise
                    self.conn.close()
                    self.conn = self._connect(f"{uri}?mode=ro&immutable=1", uri=True)
                    self._warn_unread_log()
                self._verify_schema()
        except BaseException:
            self.conn.close()
            raise
        return self.conn

    def _warn_unread_log(self) -> None:
        wal = self.path.parent / DB_COMPANIONS[0]
        with suppress(OSError):
            if wal.stat().st_size:
                log.warning("facebank %s: the last changes, in %s, cannot be read from a "
                            "folder that cannot be written", shown(self.path.parent), wal.name)

    # -- the schema ------------------------------------------------------------

    def _kind(self) -> str:
        """"facebank" (ours, by its marker), "new" (nothing in it yet) or "foreign"."""
        conn = self.conn
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if application_id == APPLICATION_ID:
            return "facebank"
        objects = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        if not objects and application_id == 0 and \
                conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            return "new"
        if application_id == 0 and ("table", "meta") in objects:
            try:   # the first facebanks had no application id: their meta table is the mark
                if conn.execute("SELECT 1 FROM meta WHERE key = 'schema'").fetchone():
                    return "facebank"
            except sqlite3.DatabaseError:
                pass
        return "foreign"

    def _not_a_facebank(self) -> FacebankError:
        return FacebankError(f"{shown(self.path)} is not a facebank database (another "
                             "application's SQLite file?); it was left untouched: give "
                             "--facebank another folder")

    def _create_schema(self) -> None:
        """The schema, in one transaction that checks again that the database is new:
        two processes opening a new facebank at once create it once."""
        with self.transaction() as conn:
            kind = self._kind()
            if kind == "foreign":
                raise self._not_a_facebank()
            if kind == "new":
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                for statement in CHANGE_LOG:
                    conn.execute(statement)
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _verify_schema(self) -> None:
        """Refuse a facebank whose tables or columns are gone, or of another schema version."""
        if self._kind() != "facebank":
            raise self._not_a_facebank()
        for table, columns in _COLUMNS.items():
            have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            if not have:
                raise self._damaged(f"its table {table} is missing")
            if columns - have:
                raise self._damaged(f"its table {table} has no column "
                                    f"{', '.join(sorted(columns - have))}")
        version = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None:
            raise self._damaged("it has no schema version")
        self.version = check_version(version[0], shown(self.path))

    def upgrade(self) -> None:
        """Bring a facebank of an older schema to this one, one step per version, in
        one transaction (a failure leaves the old schema as it was)."""
        if self.version == SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            version = check_version(conn.execute(
                "SELECT value FROM meta WHERE key = 'schema'").fetchone()[0], shown(self.path))
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
        log.info("facebank %s: schema upgraded from version %d to %d", shown(self.path),
                 self.version, SCHEMA_VERSION)
        self.version = SCHEMA_VERSION

    def _damaged(self, what: str) -> FacebankError:
        return FacebankError(f"{shown(self.path)} is damaged ({what}); the photos are "
                             f"intact: move {DB_NAME} away and import the folder again")

    # -- errors ----------------------------------------------------------------

    def error(self, exc: sqlite3.Error) -> FacebankError:
        """An SQLite failure as one line saying what it means for the user."""
        code, db = _sqlite_code(exc), shown(self.path)
        if code == _SQLITE_FULL:
            return FacebankError(f"no space left on the device for {db}; nothing was changed")
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return FacebankError(f"{db} is busy: another process kept it locked for "
                                 f"{BUSY_TIMEOUT:.0f} s; nothing was changed, try again")
        if code == _SQLITE_READONLY:
            return FacebankError(f"{db} cannot be written (read-only); nothing was changed")
        if code == _SQLITE_CANTOPEN:
            return FacebankError(f"cannot open {db} ({exc})")
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return FacebankError(f"{db} is not a usable facebank database ({exc}); the photos "
                                 f"are intact: move {DB_NAME} away and import the folder again")
        if "no such table" in str(exc) or "no such column" in str(exc):
            return self._damaged(str(exc))
        return FacebankError(f"facebank database {db}: {exc}")

    @contextmanager
    def translated(self) -> Iterator[None]:
        """sqlite3's errors, raised inside, as one-line FacebankErrors."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.error(exc) from None

    # -- using it --------------------------------------------------------------

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

        IMMEDIATE takes the write lock first, waiting for another writer to
        commit (the busy timeout), so what the body reads is what it changes.
        """
        with self._lock, self.translated():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                if getattr(self, "version", 0) >= 3:
                    self._prune_changes()
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _prune_changes(self) -> None:
        """Keep the last :data:`KEEP_CHANGES` entries of the change log; the meta
        table's ``changes_pruned`` says up to where entries are gone."""
        last = self.conn.execute("SELECT max(seq) FROM changes").fetchone()[0]
        if last is not None and last > KEEP_CHANGES:
            gone = last - KEEP_CHANGES
            if self.conn.execute("DELETE FROM changes WHERE seq <= ?", (gone,)).rowcount:
                self.conn.execute("INSERT INTO meta VALUES ('changes_pruned', ?) ON CONFLICT "
                                  "(key) DO UPDATE SET value = excluded.value", (str(gone),))

    def changes_since(self, seq: int, most: int) -> tuple[int, list, list] | None:
        """(the newest entry's number, image ids, person ids) logged after entry ``seq``;
        None when the log cannot say (no log in this schema, entries pruned, or more
        than ``most`` of them)."""
        if getattr(self, "version", 0) < 3:
            return None
        pruned = self.query("SELECT value FROM meta WHERE key = 'changes_pruned'")
        if pruned and int(pruned[0][0]) > seq:
            return None
        rows = self.query("SELECT seq, image_id, person_id FROM changes WHERE seq > ? "
                          "ORDER BY seq LIMIT ?", (seq, most + 1))
        if len(rows) > most:
            return None
        return (rows[-1][0] if rows else seq, [i for _, i, _ in rows if i is not None],
                [p for _, i, p in rows if i is None])

    def change_seq(self) -> int | None:
        """The newest change log entry's number (0: none yet; None: no log)."""
        if getattr(self, "version", 0) < 3:
            return None
        return int(self.query("SELECT coalesce(max(seq), 0) FROM changes")[0][0])

    def _rollback(self) -> None:
        """Roll back whatever is still open (a failed COMMIT may have ended it already)."""
        with suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock, self.translated():
            return self.conn.execute(sql, args).fetchall()

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: it changes when another connection commits."""
        return int(self.query("PRAGMA data_version")[0][0])
