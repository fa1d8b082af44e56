"""The gallery a running pipeline matches against: fixed, or following a facebank.

A :class:`~mobileface.identity.facebank.Facebank` changed by another process
(an enrolment, a rename) reaches a running pipeline within ``poll_seconds``:
the follower asks the facebank whether it changed, and reloads the gallery of
the pipeline's embedding model when it did.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from mobileface.identity.gallery import UNKNOWN, Gallery

log = logging.getLogger(__name__)


class GalleryFollower:
    """The current gallery, from a fixed :class:`Gallery` or a facebank followed for changes."""

    def __init__(self, model_id: str | None, poll_seconds: float = 1.0):
        self.model_id = model_id
        self.poll_seconds = float(poll_seconds)
        self.facebank = None
        self.gallery = Gallery.empty()
        self._next_poll = 0.0

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
            self.gallery = self.facebank.gallery(self.model_id)
            self._next_poll = time.monotonic() + self.poll_seconds

    def poll(self) -> bool:
        """Reload when the facebank changed (at most every ``poll_seconds``); True if it did."""
        if self.facebank is None or time.monotonic() < self._next_poll:
            return False
        self._next_poll = time.monotonic() + self.poll_seconds
        if not self.facebank.changed():
            return False
        log.info("the facebank changed: reloading it")
        self.reload()
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
