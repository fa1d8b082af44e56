"""The small interface every per-face stage shares.

A stage reads the frame and the columns earlier stages filled, and fills its
own columns for all faces of the frame in one batched call.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from mobileface.types import Faces


class Stage(ABC):
    #: short name used in logs and benchmarks ("landmarks", "embed", ...)
    name: str = ""
    #: columns of Faces this stage needs filled before it runs
    requires: tuple[str, ...] = ()
    #: columns of Faces this stage fills
    provides: tuple[str, ...] = ()

    def __call__(self, image: np.ndarray, faces: Faces) -> Faces:
        missing = [c for c in self.requires if getattr(faces, c) is None]
        if missing:
            raise ValueError(f"stage {self.name!r} needs column(s) {missing} filled first")
        if len(faces):
            self.process(image, faces)
        else:
            self.fill_empty(faces)
        return faces

    @abstractmethod
    def process(self, image: np.ndarray, faces: Faces) -> None:
        """Fill ``self.provides`` for every face (len(faces) > 0)."""

    def fill_empty(self, faces: Faces) -> None:
        """Give empty columns their shape when a frame has no face."""
        for column in self.provides:
            faces.set_column(column, np.zeros((0,), np.float32))
