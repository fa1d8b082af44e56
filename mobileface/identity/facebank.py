"""The facebank: enrolled people in a folder of photos and an SQLite file beside them.

Layout (the InsightFace_Pytorch convention)::

    facebank/
        facebank.sqlite        <- embeddings, qualities, hashes (this module)
        Barack Obama/          <- one folder per person: the photos are the truth
            obama.jpg
            take_pic-3f2a1c.jpg

The database has one table of people and one row per enrolment image: the
image's file (relative to the folder), its sha256, the id of the model that
made its embedding, the embedding as a float32 BLOB, its quality, and whether
it looks like a mistake (far from the person's other images). No pickle
anywhere. Every change is one transaction: a crash in the middle leaves the
previous facebank as it was. The database runs in WAL mode, so a running
pipeline keeps reading while another process adds, renames or removes people,
and notices their commits through ``PRAGMA data_version``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mobileface.errors import MobileFaceError
from mobileface.identity.gallery import Gallery, normalise

log = logging.getLogger(__name__)

DB_NAME = "facebank.sqlite"
TRASH = ".trash"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SCHEMA_VERSION = 1

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
    UNIQUE (person_id, file)
);
CREATE INDEX IF NOT EXISTS images_person ON images(person_id);
"""


class FacebankError(MobileFaceError):
    """The facebank cannot do what was asked (bad name, unknown person, wrong model...)."""


def check_name(name: str) -> str:
    """A person's name, or FacebankError: it becomes a folder name, so no paths."""
    if not isinstance(name, str) or not name.strip():
        raise FacebankError("a name must not be empty")
    name = name.strip()
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise FacebankError(f"name {name!r} must not contain a path separator")
    if ".." in name:
        raise FacebankError(f"name {name!r} must not contain '..'")
    if name.startswith("."):
        raise FacebankError(f"name {name!r} must not start with '.'")
    if any(ord(c) < 32 for c in name) or "\x7f" in name:
        raise FacebankError(f"name {name!r} must not contain control characters")
    if len(name.encode()) > 200:
        raise FacebankError("a name must be at most 200 bytes long")
    return name


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


@dataclass
class Person:
    id: int
    name: str
    images: int
    outliers: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    best_quality: float = 0.0


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)     # files newly embedded
    kept: int = 0                                      # files already up to date
    removed: list[str] = field(default_factory=list)   # rows whose file is gone
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    outliers: list[str] = field(default_factory=list)  # files flagged as likely mistakes
    people_removed: list[str] = field(default_factory=list)


@dataclass
class _Row:
    name: str
    file: str
    sha256: str
    embedding: np.ndarray
    quality: float


class Facebank:
    """A facebank folder and its database (created when missing).

    outlier_threshold: an enrolment image whose similarity to every other image
    of the person is below this is flagged as a likely mistake: it would not
    be recognised as that person. Give the recognition threshold of
    the embedder in use (its ``threshold``); None checks nothing.

    One object may be shared between threads (calls are serialised); another
    process or another Facebank object on the same folder sees each change once
    it is committed (see :meth:`changed`).
    """

    def __init__(self, folder: str | os.PathLike, outlier_threshold: float | None = None):
        self.folder = Path(folder)
        self.outlier_threshold = outlier_threshold
        if self.folder.exists() and not self.folder.is_dir():
            raise FacebankError(f"facebank {self.folder} is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FacebankError(f"cannot create the facebank folder {self.folder} "
                                f"({exc.strerror})") from None
        self.db_path = self.folder / DB_NAME
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(_SCHEMA)
            version = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version is None:
                self._conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) != SCHEMA_VERSION:
                raise FacebankError(f"{self.db_path} has schema {version[0]}, "
                                    f"this version reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise FacebankError(f"{self.db_path} is not a usable facebank database ({exc})") \
                from None
        self._data_version = self._version()

    # -- plumbing ------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Facebank":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _version(self) -> int:
        return int(self._query("PRAGMA data_version")[0][0])

    def changed(self) -> bool:
        """True once after another connection (process) committed a change."""
        version = self._version()
        if version != self._data_version:
            self._data_version = version
            return True
        return False

    def _person_id(self, name: str) -> int | None:
        rows = self._query("SELECT id FROM people WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def _ensure_person(self, conn, name: str) -> int:
        pid = self._person_id(name)
        if pid is None:
            pid = conn.execute("INSERT INTO people (name, created) VALUES (?, ?)",
                               (name, time.time())).lastrowid
        return int(pid)

    # -- reading ---------------------------------------------------------------

    def people(self) -> list[Person]:
        out = []
        for pid, name in self._query("SELECT id, name FROM people ORDER BY name"):
            rows = self._query("SELECT file, outlier, model, quality FROM images "
                               "WHERE person_id = ? ORDER BY file", (pid,))
            out.append(Person(id=pid, name=name, images=len(rows),
                              outliers=[f for f, o, _, _ in rows if o],
                              models=sorted({m for _, _, m, _ in rows}),
                              best_quality=max((q for *_, q in rows), default=0.0)))
        return out

    def names(self) -> list[str]:
        return [name for (name,) in self._query("SELECT name FROM people ORDER BY name")]

    def models(self) -> list[str]:
        return [m for (m,) in self._query("SELECT DISTINCT model FROM images ORDER BY 1")]

    def gallery(self, model_id: str, include_outliers: bool = True) -> Gallery:
        """Every enrolled embedding made by ``model_id``, ready to match.

        A facebank whose embeddings were made by another model cannot be
        compared with this one's: that is refused, naming how to re-embed.
        """
        others = [m for m in self.models() if m != model_id]
        if others:
            raise FacebankError(
                f"facebank {self.folder} holds embeddings of {', '.join(others)}, not of "
                f"{model_id}; re-embed it from its photos with: "
                f"python -m mobileface facebank import --reembed --facebank {self.folder}")
        query = ("SELECT p.id, p.name, i.embedding FROM images i JOIN people p "
                 "ON p.id = i.person_id WHERE i.model = ?")
        if not include_outliers:
            query += " AND i.outlier = 0"
        rows = self._query(query + " ORDER BY p.name, i.file", (model_id,))
        ids, names, owners, vectors = [], [], [], []
        for pid, name, blob in rows:
            if not ids or ids[-1] != pid:
                ids.append(pid)
                names.append(name)
            owners.append(len(ids) - 1)
            vectors.append(_vector(blob))
        if vectors and len({len(v) for v in vectors}) != 1:
            raise FacebankError(f"facebank {self.folder} mixes embedding sizes; re-import it")
        embeddings = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        return Gallery(ids, names, embeddings, owners, model_id)

    def pairs(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Genuine (same person) and impostor (different people) similarities."""
        gallery = self.gallery(model_id, include_outliers=False)
        if len(gallery.embeddings) < 2:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        sims = gallery.embeddings @ gallery.embeddings.T
        upper = np.triu_indices(len(sims), 1)
        same = (gallery.owners[:, None] == gallery.owners[None, :])[upper]
        return sims[upper][same], sims[upper][~same]

    # -- changing ---------------------------------------------------------------

    def _copy_into_folder(self, name: str, data: bytes, suffix: str, stem: str) -> str:
        """Write a picture into the person's folder (no overwrite); returns its relative path."""
        person_dir = self.folder / name
        person_dir.mkdir(exist_ok=True)
        digest = sha256_bytes(data)[:10]
        target = person_dir / f"{stem}-{digest}{suffix}"
        if not target.exists():
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return target.relative_to(self.folder).as_posix()

    def add(self, name: str, enrolments: list[tuple[bytes, str, str, np.ndarray, float]],
            model_id: str) -> list[str]:
        """Enrol pictures of ``name`` (created if new), in one transaction.

        enrolments: (file bytes, suffix, stem, embedding, quality) per picture;
        each picture is written into the person's folder. Returns the files.
        """
        name = check_name(name)
        self._check_model(model_id)
        written = [self._copy_into_folder(name, data, suffix, stem)
                   for data, suffix, stem, _, _ in enrolments]
        with self._transaction() as conn:
            pid = self._ensure_person(conn, name)
            for file, (data, _, _, embedding, quality) in zip(written, enrolments):
                conn.execute("INSERT OR REPLACE INTO images (person_id, file, sha256, model, "
                             "embedding, quality, outlier, added) VALUES (?,?,?,?,?,?,0,?)",
                             (pid, file, sha256_bytes(data), model_id, _blob(embedding),
                              float(quality), time.time()))
            self._flag_outliers(conn, [pid])
        return written

    def _check_model(self, model_id: str) -> None:
        others = [m for m in self.models() if m != model_id]
        if others:
            raise FacebankError(f"facebank {self.folder} holds embeddings of "
                                f"{', '.join(others)}; re-embed it first with "
                                f"python -m mobileface facebank import --reembed")

    def rename(self, old: str, new: str) -> None:
        old, new = check_name(old), check_name(new)
        if old == new:
            return
        if self._person_id(old) is None:
            raise FacebankError(f"no person named {old!r} in the facebank")
        if self._person_id(new) is not None or (self.folder / new).exists():
            raise FacebankError(f"{new!r} already exists in the facebank")
        with self._transaction() as conn:
            pid = self._person_id(old)
            conn.execute("UPDATE people SET name = ? WHERE id = ?", (new, pid))
            for image_id, file in conn.execute("SELECT id, file FROM images WHERE person_id = ?",
                                               (pid,)).fetchall():
                moved = Path(file)
                if moved.parts and moved.parts[0] == old:
                    moved = Path(new, *moved.parts[1:])
                conn.execute("UPDATE images SET file = ? WHERE id = ?",
                             (moved.as_posix(), image_id))
            if (self.folder / old).exists():
                os.rename(self.folder / old, self.folder / new)  # last: a failure rolls back

    def remove(self, name: str) -> Path | None:
        """Remove a person; their folder moves to ``.trash`` (returned), nothing is deleted."""
        name = check_name(name)
        if self._person_id(name) is None:
            raise FacebankError(f"no person named {name!r} in the facebank")
        moved_to = None
        with self._transaction() as conn:
            conn.execute("DELETE FROM people WHERE name = ?", (name,))
            source = self.folder / name
            if source.exists():
                trash = self.folder / TRASH
                trash.mkdir(exist_ok=True)
                moved_to = trash / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
                suffix = 1
                while moved_to.exists():
                    suffix += 1
                    moved_to = trash / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
                shutil.move(str(source), str(moved_to))
        return moved_to

    def scan_folder(self) -> dict[str, list[Path]]:
        """The people folders and their pictures, as the folder holds them now."""
        people: dict[str, list[Path]] = {}
        for entry in sorted(self.folder.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                name = check_name(entry.name)
            except FacebankError as exc:
                log.warning("skipping folder %s: %s", entry, exc)
                continue
            people[name] = sorted(p for p in entry.iterdir()
                                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                                  and not p.name.startswith("."))
        return people

    def import_folder(self, embed: Callable[[Path], tuple[np.ndarray, float]], model_id: str,
                      reembed: bool = False, progress: Callable[[str], None] | None = None
                      ) -> ImportReport:
        """Make the database mirror the folder, in one transaction.

        Every picture of every person folder is kept: new or changed pictures
        are embedded with ``embed(path) -> (embedding, quality)`` (which raises
        MobileFaceError for a picture it cannot use: no face, several faces,
        unreadable; such a picture is skipped with a warning naming it), rows
        whose picture is gone are dropped, people whose folder is gone or
        empty are removed. Pictures already embedded by ``model_id`` are not
        embedded again. Rows made by another model are re-embedded from their
        pictures with ``reembed``; without it such a facebank is refused.
        """
        if not reembed:
            self._check_model(model_id)
        report = ImportReport()
        existing = {(name, file): (sha, model) for name, file, sha, model in self._query(
            "SELECT p.name, i.file, i.sha256, i.model FROM images i "
            "JOIN people p ON p.id = i.person_id")}
        folder = self.scan_folder()
        fresh: list[_Row] = []
        keep: set[tuple[str, str]] = set()
        for name, paths in folder.items():
            for path in paths:
                file = path.relative_to(self.folder).as_posix()
                try:
                    digest = sha256_bytes(path.read_bytes())
                except OSError as exc:
                    report.skipped.append((file, f"cannot read ({exc.strerror})"))
                    log.warning("skipping %s: cannot read (%s)", path, exc.strerror)
                    continue
                if existing.get((name, file)) == (digest, model_id):
                    keep.add((name, file))
                    report.kept += 1
                    continue
                if progress:
                    progress(file)
                try:
                    embedding, quality = embed(path)
                except MobileFaceError as exc:
                    report.skipped.append((file, str(exc)))
                    log.warning("skipping %s: %s", path, exc)
                    continue
                fresh.append(_Row(name, file, digest, np.asarray(embedding, np.float32),
                                  float(quality)))
                report.added.append(file)
        # Everything is computed: now one short write transaction.
        with self._transaction() as conn:
            people = {name: pid for pid, name in conn.execute("SELECT id, name FROM people")}
            for (name, file) in existing:
                if (name, file) not in keep:
                    conn.execute("DELETE FROM images WHERE file = ? AND person_id = ?",
                                 (file, people[name]))
                    if not any(r.name == name and r.file == file for r in fresh):
                        report.removed.append(file)
            for row in fresh:
                pid = self._ensure_person(conn, row.name)
                self._insert(conn, pid, row, model_id)
            for name, pid in people.items():
                if not conn.execute("SELECT 1 FROM images WHERE person_id = ? LIMIT 1",
                                    (pid,)).fetchone():
                    conn.execute("DELETE FROM people WHERE id = ?", (pid,))
                    report.people_removed.append(name)
            ids = [pid for (pid,) in conn.execute("SELECT id FROM people")]
            report.outliers = self._flag_outliers(conn, ids)
        for file in report.outliers:
            log.warning("%s is far from the other pictures of its person: "
                        "likely a mistake (flagged)", file)
        return report

    def _insert(self, conn, pid: int, row: _Row, model_id: str) -> None:
        conn.execute("INSERT INTO images (person_id, file, sha256, model, embedding, quality, "
                     "outlier, added) VALUES (?,?,?,?,?,?,0,?)",
                     (pid, row.file, row.sha256, model_id, _blob(row.embedding), row.quality,
                      time.time()))

    def _flag_outliers(self, conn, person_ids: list[int]) -> list[str]:
        """Flag pictures not close to any other picture of their person; returns them.

        A picture is a likely mistake when even the most similar of the
        person's other pictures stays below ``outlier_threshold`` (with two
        pictures that disagree, both are flagged: which one is wrong cannot be
        told). The best match rather than the mean, so that one wrong picture
        does not drag the right ones down with it.
        """
        flagged = []
        if self.outlier_threshold is None:
            return flagged
        for pid in person_ids:
            rows = conn.execute("SELECT id, file, embedding FROM images WHERE person_id = ?",
                                (pid,)).fetchall()
            if len(rows) < 2:
                conn.execute("UPDATE images SET outlier = 0 WHERE person_id = ?", (pid,))
                continue
            vectors = normalise(np.stack([_vector(blob) for _, _, blob in rows]))
            sims = vectors @ vectors.T
            np.fill_diagonal(sims, -np.inf)
            for (image_id, file, _), best in zip(rows, sims.max(1)):
                outlier = float(best) < self.outlier_threshold
                conn.execute("UPDATE images SET outlier = ? WHERE id = ?", (int(outlier), image_id))
                if outlier:
                    flagged.append(file)
        return flagged
