"""The gallery a running pipeline matches against: fixed, or following a facebank.

A facebank changed by another process or machine (an enrolment, a rename)
reaches a running pipeline within ``poll_seconds``: the follower asks the
facebank whether it changed (SQLite's ``data_version``, PostgreSQL's NOTIFY),
and reloads the gallery of the pipeline's embedding model when it did, reusing
the rows that did not change (a large gallery's index is updated, not rebuilt).

A facebank that cannot be read just now (its database server went away) does
not stop the pipeline: recognition goes on with the last gallery, and the
reload is tried again at each poll until it succeeds.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from mobileface.identity.gallery import UNKNOWN, Gallery

log = logging.getLogger(__name__)


class GalleryFollower:
    """The current gallery, from a fixed :class:`Gallery` or a facebank followed for changes."""

    def __init__(self, model_id: str | None, poll_seconds: float = 0.25):
        self.model_id = model_id
        self.poll_seconds = float(poll_seconds)
        self.facebank = None
        self.gallery = Gallery.empty()
        self._next_poll = 0.0
        self._stale = False           # a reload failed: try again at the next poll

    def follow(self, source) -> None:
        """Match against ``source`` from now on: a Facebank (followed), a Gallery, or None."""
        if source is None or isinstance(source, Gallery):
            self.facebank = None
            self.gallery = source if source is not None else Gallery.empty()
            return
        self.facebank = source
        self.reload()

    def reload(self) -> None:
        """Read the facebank again now (after a change made through this process)."""
        if self.facebank is not None:
            self.gallery = self.facebank.gallery(self.model_id, previous=self.gallery)
            self._next_poll = time.monotonic() + self.poll_seconds
            self._stale = False

    def poll(self) -> bool:
        """Reload when the facebank changed (at most every ``poll_seconds``); True if it did.

        A reload that fails (the facebank's server is away) keeps the last gallery,
        says so once, and is tried again at the next poll."""
        from mobileface.identity.errors import FacebankError

        if self.facebank is None or time.monotonic() < self._next_poll:
            return False
        self._next_poll = time.monotonic() + self.poll_seconds
        try:
            if not (self.facebank.changed() or self._stale):
                return False
            if not self._stale:
                log.info("the facebank changed: reloading it")
            self.reload()
        except FacebankError as exc:
            if not self._stale:
                log.warning("%s; recognising with the last gallery (%d people) until it "
                            "can be read", exc, len(self.gallery))
            self._stale = True
            return False
        log.info("facebank reloaded: %d people", len(self.gallery))
        return True

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
