"""Every name in a facebank folder: people's names, photo file names, the store's own files.

A person's name becomes a folder name and is shown to people, and a photo's
file name comes from whatever the user's file system allowed: the rules that
make both safe (NFC, no paths, no hidden or invisible characters, none of the
names the store keeps for itself) are pure string checks, kept apart from the
database and the folder so that a GUI or CLI can check a name before opening
anything.
"""
from __future__ import annotations

import os
import unicodedata

from mobileface.identity.errors import FacebankError, shown

DB_NAME = "facebank.sqlite"
TRASH = ".trash"
#: the files SQLite keeps beside the database: the write-ahead log, its index, a rollback journal
DB_COMPANIONS = tuple(DB_NAME + suffix for suffix in ("-wal", "-shm", "-journal"))
#: every name the store itself uses in the folder (compared case-insensitively, for
#: file systems that ignore case): none of them can be a person's folder
RESERVED_NAMES = frozenset(n.casefold() for n in (DB_NAME, *DB_COMPANIONS, TRASH))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: the longest photo stem kept in a file name (the rest of a long name is cut)
MAX_STEM = 80

#: characters a name may not hold, by Unicode category: they are invisible or change how
#: the text around them shows (a BOM, bidirectional overrides, zero-width spaces), so that
#: "\ufeffObama" would show as "Obama" and be another person
_REFUSED_CATEGORIES = {"Cc": "control characters", "Cf": "invisible formatting characters",
                       "Co": "private-use characters", "Zl": "line separators",
                       "Zp": "paragraph separators",
                       "Cs": "bytes that are not UTF-8 (undecodable)"}


def _odd_characters(text: str) -> str | None:
    """What kind of invisible, control or undecodable character ``text`` holds (None: none)."""
    for char in text:
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(char))
        if kind:
            return kind
    return None


def check_name(name: str) -> str:
    """A person's name as the facebank stores it (NFC), or FacebankError.

    It becomes a folder name, so no paths, no hidden folders and none of the
    store's own files; it is shown to people, so no character that is invisible
    or changes how the rest shows. NFC, so that the same name typed on two
    keyboards is one person and one folder.
    """
    if not isinstance(name, str) or not name.strip():
        raise FacebankError("a name must not be empty")
    name = name.strip()
    odd = _odd_characters(name)
    if odd:
        raise FacebankError(f"name {name!r} must not contain {odd}")
    name = unicodedata.normalize("NFC", name)
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise FacebankError(f"name {name!r} must not contain a path separator")
    if ".." in name:
        raise FacebankError(f"name {name!r} must not contain '..'")
    if name.startswith("."):
        raise FacebankError(f"name {name!r} must not start with '.'")
    if name.casefold() in RESERVED_NAMES:
        raise FacebankError(f"name {name!r} is the name of one of the facebank's own files")
    if len(name.encode()) > 200:
        raise FacebankError("a name must be at most 200 bytes long")
    return name


def safe_stem(stem: str) -> str:
    """A photo's stem fit for a file name in the facebank: UTF-8, visible, not hidden, short.

    The stem comes from the user's file name, which may hold anything a file
    system allows: undecodable bytes could not be stored in the database, and a
    stem starting with '.' would make a photo that imports skip.
    """
    text = "".join("_" if _odd_characters(c) or c in "/\\" else c for c in str(stem))
    text = unicodedata.normalize("NFC", text).lstrip(". ")
    while len(text.encode()) > MAX_STEM:
        text = text[:-1]
    return text or "photo"


def check_suffix(suffix: str, label: str = "a picture") -> str:
    """A picture's suffix (lower case) if an import reads it (:data:`IMAGE_SUFFIXES`),
    else FacebankError: a picture stored under another suffix would be dropped by the
    next import, as a photo that is no longer there."""
    if str(suffix).lower() not in IMAGE_SUFFIXES:
        what = repr(shown(suffix)) if suffix else "files without a suffix"
        raise FacebankError(f"{shown(label)}: a facebank keeps {', '.join(IMAGE_SUFFIXES)} "
                            f"pictures, not {what}")
    return str(suffix).lower()
