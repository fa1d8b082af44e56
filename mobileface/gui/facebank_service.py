"""The facebank, worked on in its own thread: enrolment embeds faces and writes SQLite.

The window asks with :meth:`FacebankService.call` (a queued signal) and hears
back through signals; nothing here runs in the UI thread. The service has its
own :class:`mobileface.identity.facebank.Facebank` object (its own SQLite connection)
and its own enroller (a detector, landmarks, quality and the embedder, loaded
at the first enrolment). A running pipeline follows the changes at once when
the window passes on :attr:`FacebankService.changed`, and in any case within
a second through SQLite's ``data_version`` (as it does for changes made by
another process, which this service also notices and shows).

Every face is checked before it is enrolled (:meth:`mobileface.identity.enrol.EnrolFace.problem`):
a blurred, dark, small or strongly turned face is refused, and the message says why.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PyQt6.QtCore import QObject, QThread, QTimer, pyqtSignal, pyqtSlot
from PyQt6.QtGui import QImage

from mobileface.errors import MobileFaceError
from mobileface.gui.worker import to_qimage

log = logging.getLogger(__name__)

THUMBNAIL = 72
#: how often changes made by other processes are looked for, milliseconds
POLL_MS = 2000


@dataclass
class PersonEntry:
    name: str
    images: int
    outliers: int
    thumbnail: QImage | None


def thumbnail(image: np.ndarray, size: int = THUMBNAIL) -> QImage:
    """A square thumbnail (the image's centre, scaled) as a QImage."""
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    square = cv2.resize(image[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    return to_qimage(square)


class FacebankService(QObject):
    """Facebank work in a thread of its own."""

    requested = pyqtSignal(str, tuple)   # internal: (operation, arguments), queued
    people = pyqtSignal(object)          # [PersonEntry], after every change
    message = pyqtSignal(str, bool)      # text, is an error
    changed = pyqtSignal()               # this service changed the facebank
    enrolledShots = pyqtSignal(object)   # keys of the unknown faces just enrolled
    busy = pyqtSignal(bool)

    def __init__(self, folder: str | Path):
        from mobileface.identity.store import is_database_url

        super().__init__()
        #: the facebank: a folder, or a postgresql:// URL
        self.folder = folder if is_database_url(folder) else Path(folder)
        self.bank = None
        self._enroller = None
        self._thumbs: dict[str, QImage] = {}
        self._timer: QTimer | None = None
        self._thread = QThread()
        self._thread.setObjectName("mobileface-facebank")
        self.moveToThread(self._thread)
        self.requested.connect(self._dispatch)

    # -- from the window ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.call("open")

    def call(self, operation: str, *args) -> None:
        """Run ``operation`` in the service's thread (in the order asked)."""
        self.requested.emit(operation, args)

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """Close the facebank after the work asked so far, and end the thread."""
        self.call("close")
        if not self._thread.wait(timeout_ms):
            log.error("the facebank thread did not finish in time")
            self._thread.quit()
            self._thread.wait(2000)

    # -- in the service thread ----------------------------------------------------------------

    @pyqtSlot(str, tuple)
    def _dispatch(self, operation: str, args: tuple) -> None:
        self.busy.emit(True)
        try:
            getattr(self, "_" + operation)(*args)
        except (MobileFaceError, ValueError) as exc:
            self.message.emit(str(exc), True)
        except Exception as exc:  # a bug must not end the thread silently
            log.debug("facebank %s failed", operation, exc_info=True)
            self.message.emit(f"facebank {operation} failed: {type(exc).__name__}: {exc}", True)
        finally:
            self.busy.emit(False)

    def _open(self) -> None:
        from mobileface.identity.store import open_facebank

        self.bank = open_facebank(self.folder)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()
        self._publish()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self.bank is not None:
            self.bank.close()
            self.bank = None
        QThread.currentThread().quit()      # the last request: the thread ends here

    def _poll(self) -> None:
        try:
            if self.bank is not None and self.bank.changed():
                self._publish()
        except Exception as exc:
            log.debug("facebank poll failed", exc_info=True)
            self.message.emit(f"reading the facebank failed: {exc}", True)

    def _need_bank(self):
        if self.bank is None:
            raise MobileFaceError(f"the facebank {self.folder} is not open")
        return self.bank

    @property
    def enroller(self):
        if self._enroller is None:
            from mobileface.identity.enrol import FaceEnroller

            self.message.emit("loading the enrolment models…", False)
            self._enroller = FaceEnroller()
        return self._enroller

    def _publish(self) -> None:
        bank = self._need_bank()
        faces = bank.faces()
        entries = []
        for person in bank.people():
            face = faces.get(person.name)
            thumb = self._thumbnail(*face) if face else None
            entries.append(PersonEntry(person.name, person.images, len(person.outliers), thumb))
        self.people.emit(entries)

    def _thumbnail(self, key: str, read) -> QImage | None:
        """The thumbnail of a picture (``read()`` gives it as BGR), cached by its key."""
        if key not in self._thumbs:
            try:   # the same limits as every image read (a huge or special file is refused)
                image = read()
            except (MobileFaceError, OSError):
                return None
            self._thumbs[key] = thumbnail(image)
        return self._thumbs[key]

    def _store(self, name: str, faces: list, stem: str) -> list[str]:
        """Enrol checked faces under ``name`` in one transaction."""
        from mobileface.identity.enrol import store

        files = store(self._need_bank(), name, [face.enrolment(stem) for face in faces],
                      self.enroller.model_id, warn=lambda text: self.message.emit(text, True))
        self.changed.emit()
        self._publish()
        return files

    def _enrol_face(self, name: str, image: np.ndarray, faces, label: str) -> None:
        """One face of an analysed frame (``faces`` holds just that face)."""
        from mobileface.identity.facebank import check_name

        name = check_name(name)
        face = self.enroller.embed_row(image, faces, 0)
        problem = face.problem()
        if problem:
            self.message.emit(f"{label} not enrolled: {problem}", True)
            return
        self._store(name, [face], "viewer-" + time.strftime("%Y%m%d-%H%M%S"))
        self.message.emit(f"{label} enrolled as {name} (quality {face.quality:.2f})", False)

    def _add_files(self, name: str, paths: list[str]) -> None:
        """Photos: one face each. An empty name: each photo is a person named after its file."""
        from mobileface.identity.facebank import check_name

        by_name: dict[str, list] = {}
        refused = []
        for path in paths:
            person = check_name(name or Path(path).stem.replace("_", " "))
            face = self._enrollable(lambda: self.enroller.embed_file(path), str(path), refused)
            if face is not None:
                by_name.setdefault(person, []).append(face)
        for person, faces in by_name.items():
            self._store(person, faces, "photo-" + time.strftime("%Y%m%d-%H%M%S"))
        added = sum(len(f) for f in by_name.values())
        text = f"{added} of {len(paths)} photo(s) enrolled"
        if by_name:
            text += f" ({', '.join(sorted(by_name))})"
        if refused:
            text += "; refused: " + "; ".join(refused)
        self.message.emit(text, bool(refused))

    @staticmethod
    def _enrollable(embed, label: str, refused: list[str]):
        """The face ``embed()`` gives when it is good enough to enrol; else None, with the
        reason appended to ``refused``."""
        try:
            face = embed()
        except MobileFaceError as exc:
            refused.append(str(exc))
            return None
        problem = face.problem()
        if problem:
            refused.append(f"{label}: {problem}")
            return None
        return face

    def _enrol_shots(self, name: str, shots: list[tuple[tuple[int, int], np.ndarray]]) -> None:
        """The best shots of a group of unknown tracks, under one name."""
        from mobileface.identity.facebank import check_name

        name = check_name(name)
        accepted, keys, refused = [], [], []
        for key, image in shots:
            label = f"track #{key[1]}"
            face = self._enrollable(lambda: self.enroller.embed_image(image, label, several="best"),
                                    label, refused)
            if face is not None:
                accepted.append(face)
                keys.append(key)
        if accepted:
            self._store(name, accepted, "unknown-" + time.strftime("%Y%m%d-%H%M%S"))
            self.enrolledShots.emit(keys)
        text = f"{len(accepted)} of {len(shots)} best shot(s) enrolled as {name}"
        if refused:
            text += "; refused: " + "; ".join(refused)
        self.message.emit(text, not accepted)

    def _rename(self, old: str, new: str) -> None:
        bank = self._need_bank()
        bank.rename(old, new)
        self.changed.emit()
        self._publish()
        self.message.emit(f"{old} renamed to {new.strip()}", False)

    def _remove(self, name: str) -> None:
        bank = self._need_bank()
        moved = bank.remove(name)
        self.changed.emit()
        self._publish()
        where = f" (photos moved to {moved})" if moved else ""
        self.message.emit(f"{name} removed{where}", False)

    def _refresh(self) -> None:
        self._publish()
