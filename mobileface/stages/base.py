"""The small interface every per-face stage shares, and the one loop that runs stages.

A stage reads the frame and the columns earlier stages filled, and fills its
own columns for all faces of the frame in one batched call. Which stage runs
before which follows from what each ``requires`` and ``provides``
(:func:`order_stages`), never from a second table.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Iterable, Sequence

import numpy as np

from mobileface.errors import MobileFaceError, StageError
from mobileface.types import Faces

#: columns the detector fills; every stage may require them
DETECTOR_COLUMNS = ("boxes", "scores", "kps5")


class Stage(ABC):
    #: short name used in logs and timings ("landmarks", "embed", ...)
    name: str = ""
    #: columns of Faces this stage needs filled before it runs
    requires: tuple[str, ...] = ()
    #: columns of Faces this stage fills
    provides: tuple[str, ...] = ()
    #: on video, run once per track when the track needs it (recognition work), not on
    #: every frame (see :class:`mobileface.pipeline.video.FacePipeline`)
    per_track: bool = False

    def __call__(self, image: np.ndarray, faces: Faces) -> Faces:
        missing = [c for c in self.requires if faces.column(c) is None]
        if missing:
            raise ValueError(f"stage {self.name!r} needs column(s) {missing} filled first")
        start = time.perf_counter()
        try:
            if len(faces):
                self.process(image, faces)
            else:
                self.fill_empty(faces)
        except (MobileFaceError, ValueError):
            raise                 # our own messages, and misuse (a column missing, ...)
        except Exception as exc:  # a model crash: say which stage, in one line
            raise StageError(f"stage {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        faces.timings[self.name] = faces.timings.get(self.name, 0.0) + \
            time.perf_counter() - start
        return faces

    @abstractmethod
    def process(self, image: np.ndarray, faces: Faces) -> None:
        """Fill ``self.provides`` for every face (len(faces) > 0)."""

    def fill_empty(self, faces: Faces) -> None:
        """Give empty columns their shape when a frame has no face."""
        for column in self.provides:
            faces.set_column(column, np.zeros((0,), np.float32))


def order_stages(stages: Iterable[Stage], available: Sequence[str] = DETECTOR_COLUMNS) -> list[Stage]:
    """The stages in an order where each runs after the stages that provide what it requires.

    Stages keep their given order where nothing forces another. A required
    column that neither the detector nor any stage provides is a ValueError.
    """
    pending = list(stages)
    have = set(available)
    ordered: list[Stage] = []
    while pending:
        ready = next((s for s in pending if set(s.requires) <= have), None)
        if ready is None:
            needs = {c for s in pending for c in s.requires} - have
            provided = {c for s in pending for c in s.provides}
            absent = sorted(needs - provided)
            if absent:
                raise ValueError(f"no stage provides {', '.join(absent)} (needed by "
                                 f"{', '.join(s.name for s in pending if set(s.requires) & set(absent))})")
            raise ValueError("the stages need each other's columns in a circle: "
                             + ", ".join(s.name for s in pending))
        pending.remove(ready)
        ordered.append(ready)
        have.update(ready.provides)
    return ordered


def run_stages(stages: Iterable[Stage], image: np.ndarray, faces: Faces) -> Faces:
    """Run ``stages`` in order on all ``faces`` of ``image``; each records its own time."""
    for stage in stages:
        stage(image, faces)
    return faces
