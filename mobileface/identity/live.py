"""The gallery a running pipeline matches against: fixed, or following a facebank.

A facebank changed by another process or machine (an enrolment, a rename)
reaches a running pipeline within ``poll_seconds`` plus the time the reload
takes: the follower asks the facebank whether it changed (SQLite's
``data_version``, PostgreSQL's NOTIFY), and reloads the gallery of the
pipeline's embedding model when it did, reusing the rows that did not change.

The reload runs beside the pipeline, in a thread of its own: a large gallery
takes seconds to read (a million photos in SQLite: about 5 s), and the frames
go on being matched against the last gallery meanwhile. A reload that is done
within :data:`WAIT_SECONDS` (a small gallery's) is taken at once.

A facebank that cannot be read just now (its database server went away) does
not stop the pipeline either: recognition goes on with the last gallery, and
the reload is tried again at each poll until it succeeds.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from mobileface.identity.gallery import UNKNOWN, Gallery

log = logging.getLogger(__name__)

#: how long a poll waits for the reload it started before leaving it to run
WAIT_SECONDS = 0.02


class GalleryFollower:
    """The current gallery, from a fixed :class:`Gallery` or a facebank followed for changes."""

    def __init__(self, model_id: str | None, poll_seconds: float = 0.25):
        self.model_id = model_id
        self.poll_seconds = float(poll_seconds)
        self.facebank = None
        self.gallery = Gallery.empty()
        self._next_poll = 0.0
        self._stale = False           # a reload failed: try again at the next poll
        self._loading: threading.Thread | None = None
        self._loaded: tuple | None = None    # (facebank, gallery or None, error or None)

    def follow(self, source) -> None:
        """Match against ``source`` from now on: a Facebank (followed), a Gallery, or None."""
        self._settle()
        if source is None or isinstance(source, Gallery):
            self.facebank = None
            self.gallery = source if source is not None else Gallery.empty()
            return
        self.facebank = source
        self.reload()

    def reload(self) -> None:
        """Read the facebank again now, and wait for it (after a change made through
        this process)."""
        self._settle()
        if self.facebank is not None:
            self.gallery = self.facebank.gallery(self.model_id, previous=self.gallery)
            self._next_poll = time.monotonic() + self.poll_seconds
            self._stale = False

    def poll(self) -> bool:
        """True when a new gallery was taken in. Starts a reload in the background when
        the facebank changed (asked at most every ``poll_seconds``), and takes its
        gallery in once it is read.

        A reload that fails (the facebank's server is away) keeps the last gallery,
        says so once, and is tried again at the next poll."""
        from mobileface.identity.errors import FacebankError

        if self.facebank is None:
            return False
        if self._loading is None:
            if time.monotonic() < self._next_poll:
                return False
            self._next_poll = time.monotonic() + self.poll_seconds
            try:
                if not (self.facebank.changed() or self._stale):
                    return False
            except FacebankError as exc:
                return self._failed(exc)
            if not self._stale:
                log.info("the facebank changed: reloading it")
            self._start()
        self._loading.join(WAIT_SECONDS)
        if self._loading.is_alive():
            return False
        self._loading = None
        facebank, gallery, error = self._loaded
        self._loaded = None
        if facebank is not self.facebank:                 # followed something else since
            return False
        if isinstance(error, FacebankError):
            return self._failed(error)
        if error is not None:
            raise error
        self.gallery, self._stale = gallery, False
        log.info("facebank reloaded: %d people", len(self.gallery))
        return True

    def _start(self) -> None:
        facebank, previous = self.facebank, self.gallery

        def load() -> None:
            try:
                self._loaded = (facebank, facebank.gallery(self.model_id, previous=previous),
                                None)
            except Exception as exc:      # noqa: BLE001 - poll() raises what is not a FacebankError
                self._loaded = (facebank, None, exc)

        self._loading = threading.Thread(target=load, name="facebank-reload", daemon=True)
        self._loading.start()

    def _settle(self) -> None:
        """Wait for a reload under way, and forget it: its gallery is of before."""
        if self._loading is not None:
            self._loading.join()
            self._loading, self._loaded = None, None

    def _failed(self, exc) -> bool:
        if not self._stale:
            log.warning("%s; recognising with the last gallery (%d people) until it "
                        "can be read", exc, len(self.gallery))
        self._stale = True
        return False

    def decide(self, embeddings: np.ndarray, threshold: float, margin: float,
               mode: str) -> list[tuple[int | None, float]]:
        """(person id or None, similarity) for each normalised embedding."""
        if len(self.gallery) == 0:
            return [(None, float("nan"))] * len(embeddings)
        matches = self.gallery.match(embeddings, mode)
        chosen = matches.decide(threshold, margin)
        return [(int(self.gallery.person_ids[c]) if c >= 0 else None, float(s))
                for c, s in zip(chosen, matches.best)]

    def name_of(self, person_id: int | None) -> str:
        if person_id is None:
            return UNKNOWN
        return self.gallery.name_of(person_id) or UNKNOWN
