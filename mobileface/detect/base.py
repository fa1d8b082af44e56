"""The detector interface: a BGR frame in, Faces with boxes, scores and kps5 out."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from mobileface.types import Faces


class Detector(ABC):
    #: registry name used by create_detector()
    name: str = ""

    @abstractmethod
    def detect(self, image: np.ndarray) -> Faces:
        """Faces in a BGR uint8 (H, W, 3) image, sorted by score (highest first).

        Fills boxes (N,4 pixel xyxy), scores (N,) and kps5 (N,5,2 pixel x,y in the
        order right eye, left eye, nose, right mouth corner, left mouth corner as
        seen in the image, i.e. image-left eye first).
        """
