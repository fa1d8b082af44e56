"""The viewer's remembered choices: a small JSON file of plain values, each checked on read.

Not QSettings: PyQt's QSettings unpickles every ``@Variant(... PyQt_PyObject ...)``
entry as soon as it parses its file (``value()``, ``allKeys()``, even the merge of
``sync()``), so a crafted settings file, or a default one someone else could
write, ran code when the viewer started. JSON cannot hold code: this file has
only str, int, float, bool, lists of str, and bytes as base64 text. A value of
the wrong type or out of range falls back to its default with one warning line,
never a traceback.

No Qt here (the window turns its geometry into bytes), so the command line and
the tests can use it without loading Qt.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)

#: a settings file larger than this is not read (it holds a few short values)
MAX_BYTES = 1 << 20
#: the longest repr of a bad value a warning quotes
QUOTE_CHARS = 60


def default_path() -> Path:
    """$XDG_CONFIG_HOME/mobileface/viewer.json, else ~/.config/mobileface/viewer.json.

    The old QSettings file (~/.config/MobileFace/viewer.conf) is deliberately never
    read, not even to carry the old choices over: parsing it with QSettings is the
    very code execution this module replaces, and a second parser of Qt's @Variant
    format is not worth a few preferences a user sets again in a minute.
    """
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # the XDG spec: a relative value is invalid and is ignored
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "mobileface" / "viewer.json"


def _plain(value) -> bool:
    """What may be stored: str, bool, int, a finite float, a list of str."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (str, int)):        # bool is an int
        return True
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class ViewerSettings:
    """The viewer's settings file: read once when made, written whole by :meth:`save`.

    The getters check what the file holds and give the default for a value that is
    missing (silently) or wrong (with one warning line). Only values that passed a
    getter or were :meth:`set` are written back: a bad or unknown entry of the file
    goes at the next save. :meth:`save` writes a temporary file beside the real one
    and renames it over it, so that a crash or a full disk never leaves half a file.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_path()
        self._file: dict = self._read()      # as read: not trusted
        self._values: dict = {}              # checked or set: what save() writes
        self._save_failed = False

    # -- reading ------------------------------------------------------------------------

    def _warn(self, problem: str) -> None:
        log.warning("viewer settings %s: %s", self.path, problem)

    def _read(self) -> dict:
        """The file's object, or {} (with a warning unless the file is simply not there)."""
        try:
            with open(self.path, "rb") as file:
                raw = file.read(MAX_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):     # not there yet: the save says more
            return {}
        except OSError as exc:
            self._warn(f"cannot be read ({exc.strerror or exc}): using the defaults")
            return {}
        if len(raw) > MAX_BYTES:
            self._warn(f"larger than {MAX_BYTES} bytes: using the defaults; "
                       "it is replaced at the next save")
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._warn(f"not a JSON settings file ({reason}): using the defaults; "
                       "it is replaced at the next save")
            return {}
        if not isinstance(data, dict):
            self._warn(f"holds a JSON {type(data).__name__}, not an object: using the "
                       "defaults; it is replaced at the next save")
            return {}
        return data

    def _get(self, key: str, default, check: Callable, what: str):
        """The checked value of ``key``: ``check(value)`` gives it, or None when bad."""
        if key in self._values:              # set by this process: no warning
            checked = check(self._values[key])
            return default if checked is None else checked
        if key not in self._file:
            return default
        value = self._file.pop(key)          # warned at most once
        checked = check(value)
        if checked is None:
            quoted = repr(value)
            if len(quoted) > QUOTE_CHARS:
                quoted = quoted[:QUOTE_CHARS] + "…"
            self._warn(f"{key} = {quoted} is not {what}: using {default!r}")
            return default
        self._values[key] = value
        return checked

    def text(self, key: str, default: str, choices: Sequence[str] | None = None) -> str:
        what = f"one of {', '.join(choices)}" if choices else "a string"
        return self._get(key, default, lambda v: v if isinstance(v, str) and (
            choices is None or v in choices) else None, what)

    def integer(self, key: str, default: int, choices: Sequence[int]) -> int:
        return self._get(key, default, lambda v: v if type(v) is int and v in choices
                         else None, f"one of {', '.join(map(str, choices))}")

    def number(self, key: str, default: float, low: float, high: float) -> float:
        def check(v):
            ok = type(v) in (int, float) and math.isfinite(v) and low <= v <= high
            return float(v) if ok else None
        return self._get(key, default, check, f"a number in [{low}, {high}]")

    def flag(self, key: str, default: bool) -> bool:
        return self._get(key, default, lambda v: v if type(v) is bool else None,
                         "true or false")

    def texts(self, key: str, limit: int) -> list[str]:
        """A list of strings (empty ones dropped), at most ``limit`` of them."""
        def check(v):
            if isinstance(v, list) and all(isinstance(s, str) for s in v):
                return [s for s in v if s][:limit]
            return None
        return self._get(key, [], check, "a list of strings")

    def data(self, key: str) -> bytes | None:
        """Bytes stored as base64 text by :meth:`set_data`, or None."""
        def check(v):
            if not isinstance(v, str):
                return None
            try:
                return base64.b64decode(v.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error):
                return None
        return self._get(key, None, check, "base64 text")

    # -- writing ------------------------------------------------------------------------

    def set(self, key: str, value) -> None:
        """Remember a plain value; anything else is a programming error, never stored."""
        if not _plain(value):
            raise TypeError(f"viewer settings hold str, int, float, bool and lists of str, "
                            f"not {type(value).__name__} ({key})")
        self._values[key] = value

    def set_data(self, key: str, data: bytes) -> None:
        self._values[key] = base64.b64encode(bytes(data)).decode("ascii")

    def save(self) -> bool:
        """Write the settings, atomically. A failure is one warning, the first time: the
        viewer goes on without remembering."""
        text = json.dumps(self._values, indent=2, sort_keys=True, allow_nan=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.path, text)
        except OSError as exc:
            if not self._save_failed:
                where = f"{exc.filename}: " if exc.filename else ""
                self._warn(f"cannot be saved ({where}{exc.strerror or exc}): the choices "
                           "are not remembered")
            self._save_failed = True
            return False
        self._save_failed = False
        return True


def _write_atomic(path: Path, text: str) -> None:
    """The whole file or nothing: an interrupted save never leaves half a settings file."""
    from mobileface.models.registry import write_atomically

    write_atomically(text.encode("utf-8"), path)
