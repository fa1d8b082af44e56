"""The facebank on a PostgreSQL server with pgvector, shared by every machine of a site.

``--facebank postgresql://user@host:port/db`` opens it. It answers the calls of
the folder facebank (:class:`~mobileface.identity.facebank.Facebank`) with the
same rules (:mod:`~mobileface.identity.store`), and differs where a server has
to:

* **Everything is in the database**, in the schema ``mobileface``: people, one
  row per enrolment picture (its file name, sha256, model id, embedding as a
  pgvector ``vector``, quality, outlier flag), the picture's own bytes and its
  aligned face. A second machine can re-embed with another model
  (``facebank import --reembed --facebank URL``) without the first one's folder.
* **Import takes the photo folder as an argument** (``facebank import DIR
  --facebank URL``) and adds or updates what it holds; it removes nobody (a
  shared facebank is fed from many folders): ``facebank remove`` does.
* **Schema versions.** A new database gets schema 1 and every migration after it,
  the path an older database takes, in one transaction under an advisory lock
  (two machines starting at once create it once). A newer schema is refused.
* **Live changes.** Every write ends with ``NOTIFY mobileface_facebank``; a
  background thread LISTENs and :meth:`PostgresFacebank.changed` says so, without
  ever blocking the caller. After a lost connection it reconnects with backoff and
  reports a change (what it missed is read again).
* **Faults.** A server that cannot be reached, a wrong URL or wrong credentials
  are one line naming the server. A connection lost in a run is retried with
  backoff; until it is back, reads fail with a FacebankError (a running pipeline
  keeps its last gallery) and writes change nothing (each is one transaction).
* **Server-side search.** :meth:`PostgresFacebank.nearest` asks pgvector's HNSW
  index (one per model, made on first use) for the nearest pictures, for a
  gallery too large to hold in memory.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mobileface.errors import MobileFaceError
from mobileface.identity import photos
from mobileface.identity.database import KEEP_CHANGES, SCHEMA_VERSION, check_version
from mobileface.identity.errors import FacebankError, shown
from mobileface.identity.names import check_name, check_suffix
from mobileface.identity.photos import sha256_bytes
from mobileface.identity.store import (Enrolment, FacebankRules, ImportReport, Person,
                                       describe_url, embedded, enrolments, outlier_mask)

log = logging.getLogger(__name__)

#: the channel every write notifies
CHANNEL = "mobileface_facebank"
#: how long a connection attempt may take, seconds
CONNECT_TIMEOUT = 5
#: reconnection backoff: first and longest wait, seconds
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 8.0
#: a key of pg_advisory_xact_lock for creating and upgrading the schema
_SCHEMA_LOCK = 0x4D464231
#: the key every write takes: one writer at a time, so that the change log's numbers
#: follow the order of the commits
_WRITE_LOCK = 0x4D464232

#: schema 1, which every database starts from
_SCHEMA_1 = (
    "CREATE SCHEMA IF NOT EXISTS mobileface",
    "CREATE TABLE mobileface.meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE mobileface.people (
        id      bigserial PRIMARY KEY,
        name    text NOT NULL UNIQUE,
        created double precision NOT NULL)""",
    """CREATE TABLE mobileface.images (
        id        bigserial PRIMARY KEY,
        person_id bigint NOT NULL REFERENCES mobileface.people(id) ON DELETE CASCADE,
        file      text NOT NULL,
        sha256    text NOT NULL,
        model     text NOT NULL,
        embedding vector NOT NULL,
        quality   double precision NOT NULL,
        outlier   boolean NOT NULL DEFAULT false,
        added     double precision NOT NULL,
        photo     bytea NOT NULL,
        UNIQUE (person_id, file))""",
    "CREATE INDEX images_model ON mobileface.images (model)",
    "INSERT INTO mobileface.meta VALUES ('schema', '1')",
)
#: the change log (schema 3), as SQLite's :data:`~mobileface.identity.database.CHANGE_LOG`:
#: numbered in commit order, because every write takes :data:`_WRITE_LOCK` first
CHANGE_LOG = (
    "CREATE TABLE mobileface.changes (seq bigserial PRIMARY KEY, image_id bigint, "
    "person_id bigint)",
    """CREATE FUNCTION mobileface.log_image_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO mobileface.changes (image_id, person_id) VALUES (OLD.id, OLD.person_id);
            RETURN OLD;
        END IF;
        INSERT INTO mobileface.changes (image_id, person_id) VALUES (NEW.id, NEW.person_id);
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER images_changed AFTER INSERT OR UPDATE OR DELETE ON mobileface.images "
    "FOR EACH ROW EXECUTE FUNCTION mobileface.log_image_change()",
    """CREATE FUNCTION mobileface.log_person_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO mobileface.changes (image_id, person_id) VALUES (NULL, NEW.id);
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER people_renamed AFTER UPDATE OF name ON mobileface.people "
    "FOR EACH ROW EXECUTE FUNCTION mobileface.log_person_renamed()",
)
#: how each schema version becomes the next (the same steps as SQLite's
#: :data:`~mobileface.identity.database.MIGRATIONS`)
MIGRATIONS = {1: ("ALTER TABLE mobileface.images ADD COLUMN chip bytea",), 2: CHANGE_LOG}

_UPSERT = """
INSERT INTO mobileface.images (person_id, file, sha256, model, embedding, quality, outlier,
                               added, photo, chip)
VALUES (%s, %s, %s, %s, %s, %s, false, %s, %s, %s)
ON CONFLICT (person_id, file) DO UPDATE SET sha256 = excluded.sha256, model = excluded.model,
    embedding = excluded.embedding, quality = excluded.quality, outlier = false,
    added = excluded.added, photo = excluded.photo, chip = excluded.chip
"""


def _vector(value) -> np.ndarray:
    """A pgvector value as read (a numpy array or pgvector's Vector) as float32."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, np.float32)


def _connection_error(exc: Exception, where: str) -> FacebankError:
    """A failure to connect, as one line naming the server and the reason."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "invalid" in lowered and ("value" in lowered or "option" in lowered):
        detail = text.split("connection is bad: ", 1)[-1]
        return FacebankError(f"bad PostgreSQL URL {where}: {detail}")
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        reason = "the server refused the user name or password"
    elif "connection refused" in lowered:
        reason = "connection refused (is the server running, on that port?)"
    elif "does not exist" in lowered and "database" in lowered:
        reason = "no such database on the server"
    elif "timeout" in lowered or "timed out" in lowered:
        reason = f"no answer within {CONNECT_TIMEOUT} s"
    elif "could not translate host name" in lowered or "name or service not known" in lowered:
        reason = "unknown host name"
    else:
        reason = text.split(": ", 1)[-1] if "failed: " in text else text
    return FacebankError(f"cannot connect to the facebank database {where}: {reason}")


class PostgresFacebank(FacebankRules):
    """The facebank in the PostgreSQL database at ``url`` (schema made when missing).

    The arguments mean what they mean for the folder facebank; read_only True
    only reads (a database without the schema is an empty facebank). One object
    may be shared between threads (calls are serialised).
    """

    def __init__(self, url: str, outlier_threshold: float | None = None,
                 read_only: bool | None = None, embedder: str | None = None):
        if not url.lower().startswith(("postgresql://", "postgres://")):
            raise FacebankError(f"not a PostgreSQL URL: {url!r} (postgresql://user@host:port/db)")
        self.url = url
        self.location = describe_url(url)
        self.outlier_threshold = outlier_threshold
        self.embedder = embedder
        self.read_only = bool(read_only)
        self._lock = threading.RLock()
        self._conn = None
        self._next_connect = 0.0
        self._backoff = BACKOFF_FIRST
        self._exists = False
        self._connect(first=True)
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="facebank-listen",
                                          daemon=True)
        self._listener.start()

    # -- connections -----------------------------------------------------------

    def _open(self):
        import psycopg

        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name="mobileface")
        except psycopg.ProgrammingError as exc:   # a URL psycopg cannot parse
            raise FacebankError(f"bad PostgreSQL URL {self.location}: "
                                f"{' '.join(str(exc).split())}") from None
        except psycopg.Error as exc:
            raise _connection_error(exc, self.location) from None
        return conn

    def _connect(self, first: bool = False) -> None:
        """(Re)open the connection; after a failure, the next try waits for the backoff."""
        import psycopg

        now = time.monotonic()
        if not first and now < self._next_connect:
            raise FacebankError(f"lost the connection to the facebank database {self.location}; "
                                f"retrying in {self._next_connect - now:.1f} s")
        try:
            conn = self._open()
            try:
                self._prepare(conn)
            except psycopg.Error as exc:
                conn.close()
                raise self._error(exc) from None
            except BaseException:
                conn.close()
                raise
        except FacebankError:
            self._next_connect = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            raise
        if not first:
            log.warning("facebank database %s: connected again", self.location)
        self._conn, self._backoff = conn, BACKOFF_FIRST

    def _prepare(self, conn) -> None:
        """pgvector, the schema (created, or upgraded, when this may write), the types."""
        from pgvector.psycopg import register_vector

        if self.read_only and not conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            self._exists = False                  # nothing was ever stored here
            return
        if not self.read_only:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'"
                                    ).fetchone():
                    try:
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    except Exception as exc:
                        raise FacebankError(f"the facebank database {self.location} has no "
                                            "pgvector extension and it cannot be created "
                                            f"({' '.join(str(exc).split())})") from None
                self._upgrade(conn)
        register_vector(conn)
        self._exists = self._version(conn) is not None
        if self._exists:
            check_version(self._version(conn), self.location)

    @staticmethod
    def _version(conn) -> str | None:
        if conn.execute("SELECT to_regclass('mobileface.meta')").fetchone()[0] is None:
            return None
        row = conn.execute("SELECT value FROM mobileface.meta WHERE key = 'schema'").fetchone()
        if row is None:
            raise FacebankError("the facebank schema has no version: it is damaged")
        return row[0]

    def _upgrade(self, conn) -> None:
        """Create schema 1 when there is none, then apply each migration up to this one."""
        version = self._version(conn)
        if version is None:
            for statement in _SCHEMA_1:
                conn.execute(statement)
            version = "1"
        current = check_version(version, self.location)
        for step in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
        if current != SCHEMA_VERSION:
            conn.execute("UPDATE mobileface.meta SET value = %s WHERE key = 'schema'",
                         (str(SCHEMA_VERSION),))
            if version != "1" or current != 1:
                log.info("facebank %s: schema upgraded from version %d to %d", self.location,
                         current, SCHEMA_VERSION)

    def _error(self, exc) -> FacebankError:
        import psycopg

        text = " ".join(str(exc).split())
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return FacebankError(f"facebank database {self.location}: permission denied "
                                 f"({text}); nothing was changed")
        if isinstance(exc, psycopg.OperationalError):
            return FacebankError(f"lost the connection to the facebank database "
                                 f"{self.location} ({text}); nothing was changed")
        return FacebankError(f"facebank database {self.location}: {text}")

    @contextmanager
    def _session(self, write: bool = False) -> Iterator:
        """The connection, reconnected when it was lost; a transaction when ``write``.
        psycopg's errors leave as one-line FacebankErrors, the connection dropped
        when it broke."""
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._connect()
            conn = self._conn
            try:
                if write:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                        yield conn
                        self._prune_changes(conn)
                        conn.execute(f"NOTIFY {CHANNEL}")
                else:
                    yield conn
            except psycopg.Error as exc:
                if conn.broken or isinstance(exc, psycopg.OperationalError):
                    conn.close()
                    self._next_connect = time.monotonic() + self._backoff
                raise self._error(exc) from None

    def _query(self, sql: str, args=()) -> list[tuple]:
        if not self._exists:
            return []
        with self._session() as conn:
            return conn.execute(sql, args).fetchall()

    def _listen(self) -> None:
        """LISTEN for changes until :meth:`close`; reconnect with backoff when lost."""
        import psycopg

        delay, lost = BACKOFF_FIRST, False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                     application_name="mobileface-listen") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if lost:                   # changes made meanwhile were not heard
                        self._changed.set()
                    delay, lost = BACKOFF_FIRST, False
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.2, stop_after=1):
                            self._changed.set()
            except psycopg.Error as exc:
                if not lost:
                    log.warning("facebank database %s: not listening for changes (%s); "
                                "retrying", self.location, " ".join(str(exc).split()))
                lost = True
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    # -- plumbing --------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._listener.join(timeout=2)
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def __enter__(self) -> "PostgresFacebank":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def spec(self) -> str:
        """What ``--facebank`` names (without the password)."""
        return self.location

    def where_is(self, file: str) -> str:
        return f"{self.location} ({file})"

    def changed(self) -> bool:
        """True once after any machine committed a change (or the listener reconnected)."""
        if self._changed.is_set():
            self._changed.clear()
            self._exists = self._exists or self._refresh_exists()
            return True
        return False

    def _refresh_exists(self) -> bool:
        try:
            with self._session() as conn:
                return self._version(conn) is not None
        except FacebankError:
            return False

    def _check_writable(self, doing: str) -> None:
        if self.read_only:
            raise FacebankError(f"facebank {self.location} is opened for reading: cannot {doing}")

    def _person_id(self, conn, name: str) -> int | None:
        row = conn.execute("SELECT id FROM mobileface.people WHERE name = %s", (name,)).fetchone()
        return int(row[0]) if row else None

    def _ensure_person(self, conn, name: str) -> int:
        conn.execute("INSERT INTO mobileface.people (name, created) VALUES (%s, %s) "
                     "ON CONFLICT (name) DO NOTHING", (name, time.time()))
        return self._person_id(conn, name)

    # -- reading ---------------------------------------------------------------

    def people(self) -> list[Person]:
        rows = self._query(
            "SELECT p.id, p.name, count(i.id), "
            "coalesce(array_agg(i.file ORDER BY i.file COLLATE \"C\") FILTER (WHERE i.outlier), "
            "'{}'), coalesce(array_agg(DISTINCT i.model) FILTER (WHERE i.id IS NOT NULL), '{}'), "
            "coalesce(max(i.quality), 0) FROM mobileface.people p "
            "LEFT JOIN mobileface.images i ON i.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name COLLATE \"C\"")
        return [Person(id=int(pid), name=name, images=int(count), outliers=list(outliers),
                       models=sorted(models), best_quality=float(best))
                for pid, name, count, outliers, models, best in rows]

    def names(self) -> list[str]:
        return [n for (n,) in self._query(
            "SELECT name FROM mobileface.people ORDER BY name COLLATE \"C\"")]

    def models(self) -> list[str]:
        return [m for (m,) in self._query(
            "SELECT DISTINCT model FROM mobileface.images ORDER BY 1")]

    def _has_change_log(self, conn) -> bool:
        return conn.execute("SELECT to_regclass('mobileface.changes')").fetchone()[0] is not None

    def _prune_changes(self, conn) -> None:
        """Keep the last KEEP_CHANGES entries of the change log (see SQLite's)."""
        if not self._has_change_log(conn):
            return
        last = conn.execute("SELECT max(seq) FROM mobileface.changes").fetchone()[0]
        if last is not None and last > KEEP_CHANGES:
            gone = last - KEEP_CHANGES
            if conn.execute("DELETE FROM mobileface.changes WHERE seq <= %s", (gone,)).rowcount:
                conn.execute("INSERT INTO mobileface.meta VALUES ('changes_pruned', %s) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (str(gone),))

    def _change_seq(self) -> int | None:
        if not self._exists:
            return None
        with self._session() as conn:
            if not self._has_change_log(conn):
                return None
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM mobileface.changes"
                                    ).fetchone()[0])

    def _changes_since(self, seq: int, most: int):
        if not self._exists:
            return None
        with self._session() as conn:
            if not self._has_change_log(conn):
                return None
            pruned = conn.execute("SELECT value FROM mobileface.meta "
                                  "WHERE key = 'changes_pruned'").fetchone()
            if pruned and int(pruned[0]) > seq:
                return None
            rows = conn.execute("SELECT seq, image_id, person_id FROM mobileface.changes "
                                "WHERE seq > %s ORDER BY seq LIMIT %s", (seq, most + 1)).fetchall()
        if len(rows) > most:
            return None
        return (rows[-1][0] if rows else seq, [i for _, i, _ in rows if i is not None],
                [p for _, i, p in rows if i is None])

    def _image_rows(self, image_ids) -> list[tuple]:
        return self._query("SELECT i.id, i.added, p.id, p.name, i.model, i.outlier "
                           "FROM mobileface.images i JOIN mobileface.people p "
                           "ON p.id = i.person_id WHERE i.id = ANY(%s)",
                           ([int(i) for i in image_ids],))

    def _person_names(self, person_ids) -> list[tuple]:
        return self._query("SELECT id, name FROM mobileface.people WHERE id = ANY(%s)",
                           ([int(i) for i in person_ids],))

    def _gallery_rows(self, model_id: str, include_outliers: bool) -> list[tuple]:
        where = "" if include_outliers else " AND NOT i.outlier"
        return self._query("SELECT i.id, i.added, p.id, p.name FROM mobileface.images i "
                           "JOIN mobileface.people p ON p.id = i.person_id "
                           f"WHERE i.model = %s{where} ORDER BY p.name COLLATE \"C\", "
                           "i.file COLLATE \"C\"", (model_id,))

    def _embeddings(self, image_ids: np.ndarray) -> np.ndarray:
        ids = [int(i) for i in image_ids]
        if not ids:
            return np.zeros((0, 0), np.float32)
        found = dict(self._query("SELECT id, embedding FROM mobileface.images "
                                 "WHERE id = ANY(%s)", (ids,)))
        if len(found) != len(ids):
            raise FacebankError(f"facebank {self.location} changed while it was read; "
                                "reading it again")
        vectors = [_vector(found[i]) for i in ids]
        if len({len(v) for v in vectors}) > 1:
            raise FacebankError(f"facebank {self.location} mixes embedding sizes; re-import it")
        return np.stack(vectors)

    def faces(self) -> dict[str, tuple[str, Callable[[], np.ndarray]]]:
        """Per person, a picture to show (the aligned face of their best one): its key
        (its hash) and how to read it as BGR."""
        from mobileface.io.image import decode_image

        rows = self._query("SELECT DISTINCT ON (p.name) p.name, i.sha256, i.file, "
                           "coalesce(i.chip, i.photo) FROM mobileface.people p "
                           "JOIN mobileface.images i ON i.person_id = p.id "
                           "ORDER BY p.name, i.quality DESC")
        return {name: (sha, lambda data=bytes(data), file=file: decode_image(data, file))
                for name, sha, file, data in rows}

    def photo(self, file: str) -> tuple[bytes, bytes | None]:
        """The picture kept for an enrolment row (by its file name), and its aligned face."""
        rows = self._query("SELECT photo, chip FROM mobileface.images WHERE file = %s "
                           "ORDER BY id LIMIT 1", (file,))
        if not rows:
            raise FacebankError(f"no picture {file!r} in the facebank {self.location}")
        photo, chip = rows[0]
        return bytes(photo), (bytes(chip) if chip is not None else None)

    def nearest(self, queries: np.ndarray, model_id: str, k: int = 16,
                exact: bool = False) -> list[list[tuple[int, int, float]]]:
        """For each query, the ``k`` most similar pictures as (image id, person id,
        similarity), found by pgvector on the server (its HNSW index; ``exact`` scans
        every row instead): nothing of the gallery needs to be in this process."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        dim = queries.shape[1]
        out = []
        with self._session() as conn:
            self.ensure_search_index(model_id, dim, conn)
            with conn.transaction():
                conn.execute("SET LOCAL hnsw.ef_search = 100")
                if exact:
                    conn.execute("SET LOCAL enable_indexscan = off")
                for query in queries:
                    rows = conn.execute(
                        f"SELECT id, person_id, 1 - (embedding::vector({dim}) <=> %s::vector({dim})) "
                        f"FROM mobileface.images WHERE model = %s "
                        f"ORDER BY embedding::vector({dim}) <=> %s::vector({dim}) LIMIT %s",
                        (query, model_id, query, k)).fetchall()
                    out.append([(int(a), int(b), float(c)) for a, b, c in rows])
        return out

    def ensure_search_index(self, model_id: str, dim: int, conn=None) -> None:
        """pgvector's HNSW index over one model's embeddings (cosine), made when missing."""
        from psycopg import sql

        name = "images_hnsw_" + hashlib.sha256(f"{model_id}/{dim}".encode()).hexdigest()[:12]
        statement = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON mobileface.images USING hnsw "
                            "((embedding::vector({})) vector_cosine_ops) WHERE model = {}").format(
            sql.Identifier(name), sql.Literal(int(dim)), sql.Literal(model_id))
        if conn is not None:
            if not conn.execute("SELECT to_regclass(%s)", (f"mobileface.{name}",)).fetchone()[0]:
                conn.execute(statement)
            return
        with self._session(write=True) as conn:
            conn.execute(statement)

    # -- changing --------------------------------------------------------------

    def _insert(self, conn, pid: int, file: str, photo: bytes, model_id: str,
                embedding: np.ndarray, quality: float, chip: bytes | None) -> None:
        conn.execute(_UPSERT, (pid, file, sha256_bytes(photo), model_id,
                               np.asarray(embedding, np.float32), float(quality), time.time(),
                               photo, chip))

    def add(self, name: str, pictures: list[Enrolment], model_id: str) -> list[str]:
        """Enrol pictures of ``name`` (created if new), in one transaction; returns the
        file names they are kept under (``NAME/stem-hash.jpg``, as in a folder)."""
        name = check_name(name)
        self._check_writable(f"add pictures of {name!r}")
        pictures = enrolments(pictures)
        for picture in pictures:
            check_suffix(picture.suffix, picture.stem)
        self._check_model(model_id)
        files = [f"{name}/{photos.picture_name(p.data, p.suffix, p.stem)}" for p in pictures]
        with self._session(write=True) as conn:
            pid = self._ensure_person(conn, name)
            for file, p in zip(files, pictures):
                self._insert(conn, pid, file, p.data, model_id, p.embedding, p.quality, p.chip)
            self._flag_outliers(conn, [pid])
        self._exists = True
        return files

    def rename(self, old: str, new: str) -> None:
        old, new = check_name(old), check_name(new)
        if old == new:
            return
        self._check_writable(f"rename {old!r}")
        with self._session(write=True) as conn:
            pid = self._person_id(conn, old)
            if pid is None:
                raise FacebankError(f"no person named {old!r} in the facebank")
            if self._person_id(conn, new) is not None:
                raise FacebankError(f"{new!r} already exists in the facebank")
            conn.execute("UPDATE mobileface.people SET name = %s WHERE id = %s", (new, pid))
            conn.execute("UPDATE mobileface.images SET file = %s || substr(file, %s) "
                         "WHERE person_id = %s AND starts_with(file, %s)",
                         (new + "/", len(old) + 2, pid, old + "/"))

    def remove(self, name: str) -> None:
        """Remove a person with their pictures (nothing is kept in a database's trash)."""
        name = check_name(name)
        self._check_writable(f"remove {name!r}")
        with self._session(write=True) as conn:
            if self._person_id(conn, name) is None:
                raise FacebankError(f"no person named {name!r} in the facebank")
            conn.execute("DELETE FROM mobileface.people WHERE name = %s", (name,))
        return None

    def import_folder(self, embed: Callable[[Path], tuple], model_id: str,
                      reembed: bool = False, progress: Callable[[str], None] | None = None,
                      folder: str | Path | None = None) -> ImportReport:
        """Add the pictures of ``folder`` (one sub-folder per person) that are new or
        changed, and with ``reembed`` embed again, from the pictures the database keeps,
        every row made by another model. Embedding happens first; the writes are then one
        transaction. Nothing is removed for a picture the folder lacks (see the module)."""
        self._check_writable("import pictures")
        if folder is None and not reembed:
            raise FacebankError("give the photo folder to import: facebank import DIR "
                                f"--facebank {self.location}")
        if not reembed:
            self._check_model(model_id)
        existing = {(n, f): (sha, m) for n, f, sha, m in self._query(
            "SELECT p.name, i.file, i.sha256, i.model FROM mobileface.images i "
            "JOIN mobileface.people p ON p.id = i.person_id")}
        report = ImportReport()
        fresh: list[tuple[str, str, bytes, np.ndarray, float, bytes | None]] = []

        def embed_one(name: str, file: str, data: bytes, path: Path) -> None:
            if progress:
                progress(file)
            try:
                embedding, quality, chip = embedded(embed(path))
            except MobileFaceError as exc:
                report.skipped.append((file, str(exc)))
                log.warning("skipping %s: %s", file, exc)
                return
            fresh.append((name, file, data, embedding, quality, chip))
            report.added.append(file)

        if folder is not None:
            folder = Path(folder)
            photos.prepare_folder(folder, create=False)
            scan = photos.scan(folder)
            report.skipped += scan.skipped
            for name, paths in scan.people.items():
                for path in paths:
                    file = path.relative_to(folder).as_posix()
                    try:
                        data = path.read_bytes()
                    except OSError as exc:
                        report.skipped.append((file, f"cannot read ({exc.strerror})"))
                        continue
                    if existing.get((name, file)) == (sha256_bytes(data), model_id):
                        report.kept += 1
                        continue
                    embed_one(name, file, data, path)
        stale: list[tuple[str, str]] = []
        if reembed:
            seen = {(n, f) for n, f, *_ in fresh}
            others = [(n, f) for (n, f), (_, m) in existing.items()
                      if m != model_id and (n, f) not in seen]
            with tempfile.TemporaryDirectory(prefix="mobileface-reembed-") as tmp:
                for name, file in others:
                    data, _ = self.photo(file)
                    path = Path(tmp) / Path(file).name
                    path.write_bytes(data)
                    before = len(fresh)
                    embed_one(name, file, data, path)
                    if len(fresh) == before:
                        stale.append((name, file))
        with self._session(write=True) as conn:
            touched = set()
            for name, file, data, embedding, quality, chip in fresh:
                pid = self._ensure_person(conn, name)
                self._insert(conn, pid, file, data, model_id, embedding, quality, chip)
                touched.add(pid)
            for name, file in stale:               # cannot be made by this model: dropped
                conn.execute("DELETE FROM mobileface.images i USING mobileface.people p "
                             "WHERE p.id = i.person_id AND p.name = %s AND i.file = %s",
                             (name, file))
                report.removed.append(file)
                log.warning("%s could not be embedded again: its row is removed", file)
            report.outliers = self._flag_outliers(conn, sorted(touched))
        self._exists = True
        for file in report.outliers:
            log.warning("%s is far from the other pictures of its person: "
                        "likely a mistake (flagged)", file)
        return report

    def _flag_outliers(self, conn, person_ids: list[int]) -> list[str]:
        """As the folder facebank does (:func:`~mobileface.identity.store.outlier_mask`)."""
        flagged: list[str] = []
        if self.outlier_threshold is None:
            return flagged
        for pid in person_ids:
            rows = conn.execute("SELECT id, file, embedding FROM mobileface.images "
                                "WHERE person_id = %s ORDER BY file", (pid,)).fetchall()
            if not rows:
                continue
            mask = outlier_mask(np.stack([_vector(e) for *_, e in rows]),
                                self.outlier_threshold)
            for (image_id, file, _), outlier in zip(rows, mask):
                conn.execute("UPDATE mobileface.images SET outlier = %s WHERE id = %s",
                             (bool(outlier), image_id))
                if outlier:
                    flagged.append(file)
        return flagged

    def __repr__(self) -> str:
        return f"PostgresFacebank({shown(self.location)})"
