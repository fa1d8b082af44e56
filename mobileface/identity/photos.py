"""The photo side of the facebank: the folder of person folders, as it is on disk.

Here: making and checking the facebank folder (and telling when it cannot be
written), scanning the person folders for their pictures (skipping, with a
warning naming it, whatever cannot be a person or be stored), writing a
picture into a person's folder whole, and finding a free place in the trash.
These are file-system operations on the folder alone; keeping the database in
agreement with them is :class:`~mobileface.identity.facebank.Facebank`'s work.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from mobileface.identity.errors import FacebankError, os_error, shown
from mobileface.identity.names import DB_NAME, IMAGE_SUFFIXES, TRASH, check_name, safe_stem

log = logging.getLogger(__name__)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def picture_name(data: bytes, suffix: str, stem: str) -> str:
    """The file name an enrolled picture is kept under: its stem made safe and the
    start of its hash, so that the same picture enrolled twice is one picture."""
    return f"{safe_stem(stem)}-{sha256_bytes(data)[:10]}{suffix.lower()}"


def prepare_folder(folder: Path, create: bool) -> None:
    """Check that the facebank ``folder`` is a folder; make it when missing and ``create``."""
    if folder.exists() and not folder.is_dir():
        raise FacebankError(f"facebank {shown(folder)} is a file, not a folder")
    if folder.is_dir():
        return
    if not create:
        raise FacebankError(f"no facebank folder {shown(folder)}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FacebankError(f"cannot create the facebank folder {shown(folder)} "
                            f"({exc.strerror})") from None


def why_read_only(folder: Path) -> str | None:
    """Why the facebank cannot be written (None: it can). os.access also answers for
    a read-only mount, where even root cannot write."""
    if not os.access(folder, os.W_OK):
        return "its folder cannot be written"
    db_path = folder / DB_NAME
    if db_path.exists() and not os.access(db_path, os.W_OK):
        return f"its {DB_NAME} cannot be written"
    return None


def copy_into_folder(folder: Path, name: str, data: bytes, suffix: str, stem: str,
                     created: list[Path]) -> str:
    """Write a picture into the person's folder (no overwrite); returns its relative path.

    What it creates (the person's folder, the picture) is appended to
    ``created``, for the caller to take back when the change fails. The
    picture is written to a hidden temporary file of its own (two writers may
    add the same picture at once) and moved into place whole.
    """
    person_dir = folder / name
    if not person_dir.is_dir():
        if person_dir.exists():
            raise FacebankError(f"{shown(person_dir)} is a file, not a person's folder")
        with suppress(FileExistsError):       # another writer made it meanwhile
            person_dir.mkdir()
            created.append(person_dir)
    target = person_dir / picture_name(data, suffix, stem)
    if not target.exists():
        tmp = person_dir / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except BaseException:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        created.append(target)
    return target.relative_to(folder).as_posix()


def trash_path(folder: Path, name: str) -> Path:
    """A free place in ``.trash`` for a removed person's folder (the trash is made)."""
    trash = folder / TRASH
    trash.mkdir(exist_ok=True)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    moved_to, suffix = trash / f"{name}-{stamp}", 1
    while moved_to.exists():
        suffix += 1
        moved_to = trash / f"{name}-{stamp}-{suffix}"
    return moved_to


@dataclass
class Scan:
    """The person folders as a scan found them."""
    folder: Path
    people: dict[str, list[Path]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)   # people whose folder cannot be listed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or folder, reason)

    def skip(self, path: Path, reason: str) -> None:
        """Leave out a folder or picture, with a warning naming it (readably)."""
        self.skipped.append((shown(path.relative_to(self.folder)), reason))
        log.warning("skipping %s: %s", shown(path), reason)


def scan(folder: Path) -> Scan:
    """Every person folder and its pictures; a folder or picture whose name cannot be a
    person's or be stored (not UTF-8, hidden characters) is skipped with a warning
    naming it, and so is a folder that cannot be listed (kept in ``unreadable``)."""
    found = Scan(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise os_error(exc, "list the facebank folder") from None
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        name = _person_of_folder(entry, found)
        if name is None:
            continue
        try:
            files = sorted(p for p in entry.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.name.startswith(".") and p.is_file())
        except OSError as exc:
            log.warning("cannot list folder %s (%s): the pictures of %s stay as they are",
                        shown(entry), exc.strerror, name)
            found.unreadable.add(name)
            continue
        found.people[name] = [p for p in files if _storable(p, found)]
    return found


def _person_of_folder(entry: Path, found: Scan) -> str | None:
    """The person a folder holds, or None (skipped, with a warning naming it)."""
    try:
        name = check_name(entry.name)
    except FacebankError as exc:
        found.skip(entry, str(exc))
        return None
    if name != entry.name:
        found.skip(entry, f"the facebank writes this name as {name!r} (Unicode NFC, no "
                          "spaces around it): rename the folder to that")
        return None
    return name


def _storable(path: Path, found: Scan) -> bool:
    """Whether a picture's name can be stored in the database (UTF-8); skipped if not."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        found.skip(path, "its name is not valid UTF-8: rename it")
        return False
    return True
