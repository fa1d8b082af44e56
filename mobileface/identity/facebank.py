"""The facebank: enrolled people in a folder of photos and an SQLite file beside them.

Layout (the InsightFace_Pytorch convention)::

    facebank/
        facebank.sqlite        <- embeddings, qualities, hashes
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

Writers take turns: each change is a ``BEGIN IMMEDIATE`` transaction that waits
(up to :data:`BUSY_TIMEOUT` seconds) for another writer to commit, and reads the
rows again once it holds the lock, so two imports of the same folder at once
both succeed and store each photo once. A change that copies photos (``add``)
removes the photos it copied when its transaction fails, and one that moves a
folder (``rename``, ``remove``) moves it last and back when the commit fails:
the folder and the database never disagree.

A facebank that cannot be written (a read-only mount, a folder of another
user) is opened read-only: it can still be used to recognise.

Every failure reaches the caller as a one-line :class:`FacebankError`.

This module is the :class:`Facebank` that callers use, keeping the folder and
the database in agreement; the parts it is made of live beside it:
:mod:`~mobileface.identity.names` (what a person or a photo may be named),
:mod:`~mobileface.identity.database` (the SQLite file: opening, schema,
transactions), :mod:`~mobileface.identity.photos` (the photos on disk) and
:mod:`~mobileface.identity.errors` (:class:`FacebankError`). The names other
modules import from here (``check_name``, ``DB_NAME``, ``IMAGE_SUFFIXES``...)
stay importable from here.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mobileface.errors import MobileFaceError
from mobileface.identity import photos
from mobileface.identity.database import (APPLICATION_ID, BUSY_TIMEOUT, SCHEMA_VERSION,
                                          UPSERT_IMAGE, Database, decode_embedding,
                                          encode_embedding)
from mobileface.identity.errors import FacebankError, os_error, shown
from mobileface.identity.photos import sha256_bytes
from mobileface.identity.store import (Enrolment, FacebankRules, ImportReport, Person, embedded,
                                       enrolments, outlier_mask, reembed_command)
from mobileface.identity.names import (DB_COMPANIONS, DB_NAME, IMAGE_SUFFIXES, MAX_STEM,
                                       RESERVED_NAMES, TRASH, check_name, check_suffix)

__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT", "DB_COMPANIONS", "DB_NAME", "IMAGE_SUFFIXES",
           "MAX_STEM", "RESERVED_NAMES", "SCHEMA_VERSION", "TRASH", "Enrolment", "Facebank",
           "FacebankError", "ImportReport", "Person", "check_name", "check_suffix", "reembed_command",
           "sha256_bytes", "shown"]

log = logging.getLogger(__name__)

#: the most rows whose embeddings one query reads
FETCH_CHUNK = 50_000


@dataclass
class _Row:
    name: str
    file: str
    sha256: str
    embedding: np.ndarray
    quality: float
    chip: bytes | None = None


class Facebank(FacebankRules):
    """A facebank folder and its database (created when missing).

    outlier_threshold: an enrolment image whose similarity to every other image
    of the person is below this is flagged as a likely mistake: it would not
    be recognised as that person. Give the recognition threshold of
    the embedder in use (its ``threshold``); None checks nothing.

    read_only: True opens the database for reading only (nothing is created or
    changed; a folder without a database is an empty facebank); False needs
    write access; None (the default) opens read-only when the folder or its
    database cannot be written, so that a read-only facebank still recognises.
    Changes to a read-only facebank are refused with a FacebankError.

    embedder: the embedder spec the user gave (their --embedder), named in the
    re-embed command that messages print, so that the command works as printed.

    One object may be shared between threads (calls are serialised); another
    process or another Facebank object on the same folder sees each change once
    it is committed (see :meth:`changed`).
    """

    def __init__(self, folder: str | os.PathLike, outlier_threshold: float | None = None,
                 read_only: bool | None = None, embedder: str | None = None):
        self.folder = Path(folder)
        self.outlier_threshold = outlier_threshold
        self.embedder = embedder
        self.db_path = self.folder / DB_NAME
        photos.prepare_folder(self.folder, create=read_only is not True)
        why = photos.why_read_only(self.folder) if read_only is None else None
        self.read_only = bool(read_only) or why is not None
        self._read_only_reason = why or "opened for reading"
        if why:
            log.debug("facebank %s opened read-only: %s", shown(self.folder), why)
        self._db = Database(self.db_path, read_only=self.read_only)
        self._data_version = self._db.data_version()

    # -- plumbing ------------------------------------------------------------

    @property
    def location(self) -> str:
        """The facebank as messages name it: its folder."""
        return shown(self.folder)

    @property
    def spec(self) -> Path:
        """What ``--facebank`` names: the folder."""
        return self.folder

    def where_is(self, file: str) -> str:
        """Where an enrolled picture (a file of :meth:`add`) is kept."""
        return shown(self.folder / file)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Facebank":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_writable(self, doing: str) -> None:
        if self.read_only:
            raise FacebankError(f"facebank {shown(self.folder)} is read-only "
                                f"({self._read_only_reason}): cannot {doing}")

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A change: the database's ``BEGIN IMMEDIATE`` transaction
        (:meth:`~mobileface.identity.database.Database.transaction`), refused first
        when the facebank is read-only."""
        self._check_writable("change it")
        return self._db.transaction()

    @property
    def _conn(self) -> sqlite3.Connection:
        """The SQLite connection, for tests that reach under the facebank."""
        return self._db.conn

    def changed(self) -> bool:
        """True once after another connection (process) committed a change."""
        version = self._db.data_version()
        if version != self._data_version:
            self._data_version = version
            return True
        return False

    def _person_id(self, name: str) -> int | None:
        rows = self._db.query("SELECT id FROM people WHERE name = ?", (name,))
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
        for pid, name in self._db.query("SELECT id, name FROM people ORDER BY name"):
            rows = self._db.query("SELECT file, outlier, model, quality FROM images "
                                  "WHERE person_id = ? ORDER BY file", (pid,))
            out.append(Person(id=pid, name=name, images=len(rows),
                              outliers=[f for f, o, _, _ in rows if o],
                              models=sorted({m for _, _, m, _ in rows}),
                              best_quality=max((q for *_, q in rows), default=0.0)))
        return out

    def names(self) -> list[str]:
        return [name for (name,) in self._db.query("SELECT name FROM people ORDER BY name")]

    def models(self) -> list[str]:
        return [m for (m,) in self._db.query("SELECT DISTINCT model FROM images ORDER BY 1")]

    def _change_seq(self) -> int | None:
        return self._db.change_seq()

    def _changes_since(self, seq: int, most: int):
        return self._db.changes_since(seq, most)

    def _image_rows(self, image_ids) -> list[tuple]:
        return self._db.query("SELECT i.id, i.added, p.id, p.name, i.model, i.outlier "
                              "FROM images i JOIN people p ON p.id = i.person_id WHERE i.id IN "
                              "(SELECT value FROM json_each(?))",
                              (json.dumps([int(i) for i in image_ids]),))

    def _person_names(self, person_ids) -> list[tuple]:
        return self._db.query("SELECT id, name FROM people WHERE id IN "
                              "(SELECT value FROM json_each(?))",
                              (json.dumps([int(i) for i in person_ids]),))

    def _gallery_rows(self, model_id: str, include_outliers: bool) -> list[tuple]:
        where = "" if include_outliers else " AND i.outlier = 0"
        return self._db.query("SELECT i.id, i.added, p.id, p.name FROM images i JOIN people p "
                              f"ON p.id = i.person_id WHERE i.model = ?{where} "
                              "ORDER BY p.name, i.file", (model_id,))

    def _embeddings(self, image_ids: np.ndarray) -> np.ndarray:
        """The embeddings of these rows, in their order: a query per :data:`FETCH_CHUNK`
        rows (the ids as a JSON array, no limit on bound values), so that a million rows
        take seconds, not tens of them, and no single call holds the GIL for long beside
        a running pipeline."""
        ids = np.asarray(image_ids, np.int64).reshape(-1)
        order = np.argsort(ids)
        out, seen, sizes = None, 0, set()
        for start in range(0, len(ids), FETCH_CHUNK):
            rows = self._db.query("SELECT id, embedding FROM images WHERE id IN (SELECT value "
                                  "FROM json_each(?))",
                                  (json.dumps(ids[start:start + FETCH_CHUNK].tolist()),))
            sizes |= {len(blob) for _, blob in rows}
            if len(sizes) > 1:
                raise FacebankError(f"facebank {shown(self.folder)} mixes embedding sizes; "
                                    "re-import it")
            if not rows:
                continue
            found = np.fromiter((image_id for image_id, _ in rows), np.int64, len(rows))
            vectors = np.frombuffer(b"".join(blob for _, blob in rows), "<f4")
            if out is None:
                out = np.zeros((len(ids), len(vectors) // len(rows)), np.float32)
            out[order[np.searchsorted(ids[order], found)]] = vectors.reshape(len(rows), -1)
            seen += len(rows)
        if seen != len(np.unique(ids)):
            raise FacebankError(f"facebank {shown(self.folder)} changed while it was read; "
                                "reading it again")
        return out if out is not None else np.zeros((0, 0), np.float32)

    # -- changing ---------------------------------------------------------------

    def _discard(self, created: list[Path]) -> None:
        """Take back the files and folders a failed change created, newest first."""
        for path in reversed(created):
            with suppress(OSError):
                if path.is_dir():
                    path.rmdir()                 # only when empty: nothing else is lost
                elif not self._has_row(path):
                    path.unlink()

    def _has_row(self, path: Path) -> bool:
        """Whether a committed row names this picture: another writer added the same
        picture meanwhile, and it stays theirs. False when the database cannot tell."""
        try:
            return bool(self._db.query("SELECT 1 FROM images WHERE file = ? LIMIT 1",
                                       (path.relative_to(self.folder).as_posix(),)))
        except FacebankError:
            return False

    def add(self, name: str, pictures: list[Enrolment], model_id: str) -> list[str]:
        """Enrol pictures of ``name`` (created if new), in one transaction.

        pictures: an :class:`~mobileface.identity.store.Enrolment` (or its plain
        tuple) per picture; each picture is written into the person's folder, its
        aligned face into the database. Returns the files.
        When anything fails (a full disk, a folder that cannot be written, the
        database), the pictures it wrote are removed again: no row, no photo.
        """
        name = check_name(name)
        self._check_writable(f"add pictures of {name!r}")
        pictures = enrolments(pictures)
        for picture in pictures:
            check_suffix(picture.suffix, picture.stem)
        self._check_model(model_id)
        created: list[Path] = []
        try:
            written = [photos.copy_into_folder(self.folder, name, p.data, p.suffix, p.stem,
                                               created) for p in pictures]
            with self._transaction() as conn:
                pid = self._ensure_person(conn, name)
                for file, p in zip(written, pictures):
                    self._insert(conn, pid, _Row(name, file, sha256_bytes(p.data), p.embedding,
                                                 float(p.quality), p.chip), model_id)
                self._flag_outliers(conn, [pid])
        except OSError as exc:
            self._discard(created)
            raise os_error(exc, f"write the pictures of {name!r} into "
                                 f"{shown(self.folder / name)}") from None
        except BaseException:
            self._discard(created)
            raise
        return written

    def rename(self, old: str, new: str) -> None:
        """Rename a person: the row, their pictures' paths, and (last) their folder."""
        old, new = check_name(old), check_name(new)
        if old == new:
            return
        self._check_writable(f"rename {old!r}")
        source, target = self.folder / old, self.folder / new
        moved = False
        try:
            with self._transaction() as conn:
                pid = self._person_id(old)
                if pid is None:
                    raise FacebankError(f"no person named {old!r} in the facebank")
                if self._person_id(new) is not None or target.exists():
                    raise FacebankError(f"{new!r} already exists in the facebank")
                conn.execute("UPDATE people SET name = ? WHERE id = ?", (new, pid))
                for image_id, file in conn.execute(
                        "SELECT id, file FROM images WHERE person_id = ?", (pid,)).fetchall():
                    path = Path(file)
                    if path.parts and path.parts[0] == old:
                        path = Path(new, *path.parts[1:])
                    conn.execute("UPDATE images SET file = ? WHERE id = ?",
                                 (path.as_posix(), image_id))
                if source.exists():
                    os.rename(source, target)   # last: a failure rolls the rows back
                    moved = True
        except OSError as exc:
            raise os_error(exc, f"rename the folder of {old!r}") from None
        except BaseException:
            if moved:                           # the commit failed: the folder goes back
                with suppress(OSError):
                    os.rename(target, source)
            raise

    def remove(self, name: str) -> Path | None:
        """Remove a person; their folder moves to ``.trash`` (returned), nothing is deleted."""
        name = check_name(name)
        self._check_writable(f"remove {name!r}")
        source, moved_to = self.folder / name, None
        try:
            with self._transaction() as conn:
                if self._person_id(name) is None:
                    raise FacebankError(f"no person named {name!r} in the facebank")
                conn.execute("DELETE FROM people WHERE name = ?", (name,))
                if source.exists():
                    target = photos.trash_path(self.folder, name)
                    os.rename(source, target)   # last; a rename, never a copy
                    moved_to = target
        except OSError as exc:
            raise os_error(exc, f"move the folder of {name!r} into {TRASH}") from None
        except BaseException:
            if moved_to is not None:            # the commit failed: the folder goes back
                with suppress(OSError):
                    os.rename(moved_to, source)
            raise
        return moved_to

    def faces(self) -> dict[str, tuple[str, Callable[[], np.ndarray]]]:
        """Per person, a picture to show (their first photo): its key (path and time)
        and how to read it as BGR."""
        from mobileface.io.image import read_image

        out = {}
        for name, paths in self.scan_folder().items():
            with suppress(OSError):
                if paths:
                    key = f"{paths[0]}:{paths[0].stat().st_mtime}"
                    out[name] = (key, lambda path=paths[0]: read_image(path))
        return out

    def scan_folder(self) -> dict[str, list[Path]]:
        """The people folders and their pictures, as the folder holds them now."""
        return photos.scan(self.folder).people

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

        The embedding is done outside the transaction; the transaction then
        reads the rows again, so that another writer's changes since (another
        import, an ``add``) are neither duplicated nor undone.
        """
        self._check_writable("import the folder")
        if not reembed:
            self._check_model(model_id)
        started = time.time()
        existing = {(name, file): (sha, model) for name, file, sha, model in self._db.query(
            "SELECT p.name, i.file, i.sha256, i.model FROM images i "
            "JOIN people p ON p.id = i.person_id")}
        scan = photos.scan(self.folder)
        report = ImportReport(skipped=list(scan.skipped))
        fresh: list[_Row] = []
        keep: set[tuple[str, str]] = set()
        for name, paths in scan.people.items():
            for path in paths:
                file = path.relative_to(self.folder).as_posix()
                try:
                    digest = sha256_bytes(path.read_bytes())
                except OSError as exc:
                    report.skipped.append((file, f"cannot read ({exc.strerror})"))
                    log.warning("skipping %s: cannot read (%s)", shown(path), exc.strerror)
                    keep.add((name, file))       # its enrolment, if any, stays as it is
                    continue
                if existing.get((name, file)) == (digest, model_id):
                    keep.add((name, file))
                    report.kept += 1
                    continue
                if progress:
                    progress(file)
                try:
                    embedding, quality, chip = embedded(embed(path))
                except MobileFaceError as exc:
                    report.skipped.append((file, str(exc)))
                    log.warning("skipping %s: %s", shown(path), exc)
                    continue
                fresh.append(_Row(name, file, digest, embedding, quality, chip))
                report.added.append(file)
        # Everything is computed: now one short write transaction.
        with self._transaction() as conn:
            self._drop_gone(conn, report, keep | {(r.name, r.file) for r in fresh},
                            {(r.name, r.file) for r in fresh}, scan.unreadable, started)
            for row in fresh:
                if not (self.folder / row.file).is_file():
                    continue      # removed or renamed meanwhile by another writer
                pid = self._ensure_person(conn, row.name)
                self._insert(conn, pid, row, model_id)
            for pid, name in conn.execute(
                    "SELECT id, name FROM people WHERE id NOT IN "
                    "(SELECT person_id FROM images) ORDER BY name").fetchall():
                conn.execute("DELETE FROM people WHERE id = ?", (pid,))
                report.people_removed.append(name)
            ids = [pid for (pid,) in conn.execute("SELECT id FROM people")]
            report.outliers = self._flag_outliers(conn, ids)
        for file in report.outliers:
            log.warning("%s is far from the other pictures of its person: "
                        "likely a mistake (flagged)", file)
        return report

    @staticmethod
    def _drop_gone(conn, report: ImportReport, present: set[tuple[str, str]],
                   fresh: set[tuple[str, str]], unreadable: set[str], started: float) -> None:
        """Delete the rows of pictures the scan did not find (or found changed).

        The rows are read under the write lock: a row another writer committed
        after this import started is theirs to keep, and so are the rows of a
        person whose folder could not be listed.
        """
        for image_id, name, file, added in conn.execute(
                "SELECT i.id, p.name, i.file, i.added FROM images i JOIN people p "
                "ON p.id = i.person_id ORDER BY p.name, i.file").fetchall():
            if (name, file) in present and (name, file) not in fresh:
                continue
            if (name, file) not in present and (name in unreadable or added >= started):
                continue
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
            if (name, file) not in fresh:
                report.removed.append(file)

    def _insert(self, conn, pid: int, row: _Row, model_id: str) -> None:
        conn.execute(UPSERT_IMAGE, (pid, row.file, row.sha256, model_id,
                                    encode_embedding(row.embedding), row.quality, time.time(),
                                    row.chip))

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
            if not rows:
                continue
            mask = outlier_mask(np.stack([decode_embedding(blob) for _, _, blob in rows]),
                                self.outlier_threshold)
            for (image_id, file, _), outlier in zip(rows, mask):
                conn.execute("UPDATE images SET outlier = ? WHERE id = ?", (int(outlier), image_id))
                if outlier:
                    flagged.append(file)
        return flagged
