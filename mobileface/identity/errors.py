"""How the facebank's failures read: :class:`FacebankError` and its one-line messages.

Every module of the facebank (the name rules, the database, the photo folder,
the :class:`~mobileface.identity.facebank.Facebank` itself) raises this error
and names files in it, so it sits below all of them: kept apart, none of them
has to import another only for its error.
"""
from __future__ import annotations

import errno
import os

from mobileface.errors import MobileFaceError


class FacebankError(MobileFaceError):
    """The facebank cannot do what was asked (bad name, unknown person, wrong model...)."""


def shown(path) -> str:
    """A file name as a user can read it on one line: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def os_error(exc: OSError, doing: str) -> FacebankError:
    """A file-system failure while ``doing`` something, as one line."""
    where = f" ({shown(exc.filename)})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return FacebankError(f"no space left on the device: cannot {doing}{where}; "
                             "nothing was changed")
    return FacebankError(f"cannot {doing}{where}: {exc.strerror or exc}; nothing was changed")
