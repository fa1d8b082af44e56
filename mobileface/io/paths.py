"""Output paths that must never be an input or each other (a run would destroy a file)."""
from __future__ import annotations

import os
from pathlib import Path

from mobileface.errors import MobileFaceError


class PathClash(MobileFaceError, ValueError):
    """An output path names an input or another output."""


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():          # symlinks and ../ resolved
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)   # hard links too
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_distinct(inputs: dict[str, str | os.PathLike | None],
                   outputs: dict[str, str | os.PathLike | None],
                   folders: dict[str, str | os.PathLike | None] | None = None) -> None:
    """Refuse, before anything is opened for writing, any output that is an input or
    another output, or lies inside one of ``folders`` (a facebank: its database, and
    photos that the next import would enrol). Keys name the option for the message
    (``{"-s/--save": "out.mp4"}``); None values, and inputs that are not local files
    (camera index, URL), are skipped."""
    given_in = {k: Path(v) for k, v in inputs.items() if v is not None and Path(v).is_file()}
    given_out = [(k, Path(v)) for k, v in outputs.items() if v is not None]
    for name, path in given_out:
        for folder_name, folder in (folders or {}).items():
            if folder is not None and _inside(path, Path(folder)):
                raise PathClash(f"{name} {path} is inside the {folder_name} folder {folder}: "
                                "it would damage it or be enrolled from it; write elsewhere")
    for i, (name, path) in enumerate(given_out):
        for source, source_path in given_in.items():
            if _same(path, source_path):
                raise PathClash(f"{name} {path} is the input {source} {source_path}: "
                                "it would be overwritten; choose another output path")
        for other, other_path in given_out[:i]:
            if _same(path, other_path):
                raise PathClash(f"{name} {path} and {other} {other_path} are the same file: "
                                "choose two different paths")
