"""dlib's ResNet embedder at int8: the spec "dlib-int8", and what tools/optimize_model.py uses.

The int8 model is made, checked and kept in the model cache by the one
quantiser of every model, :mod:`mobileface.eval.quantize` (``python -m
mobileface models quantize``, or ``tools/optimize_model.py`` for the embedder
with a speed report), and read back through :mod:`mobileface.models.precision`.
``create_embedder("dlib-int8")`` is the float embedder "dlib" at
``precision="int8"``: it loads the int8 file only when its report says the
gates passed (10-fold accuracy within :data:`DEFAULT_MAX_LOSS` of the float
model's, embeddings within cosine 0.99 of the float ones), the file is the
one the report checked and it was made from the current float model; else a
one-line ModelError names the command that makes it. Its embeddings share the
float model's ``model_id``: the gate proved them equivalent, so a facebank
enrolled at one precision recognises at the other.

The CPU matters: int8 kernels differ with and without VNNI, so run the command
on the machine that will use the model (a warning says when they differ).
"""
from __future__ import annotations

import logging
from pathlib import Path

from mobileface.convert.dlib_resnet import MODEL_NAME
from mobileface.errors import ModelError
from mobileface.models import precision
from mobileface.models.precision import Bounds

log = logging.getLogger(__name__)

#: the most 10-fold accuracy (a fraction: 0.005 = 0.5 points) the int8 model may lose
DEFAULT_MAX_LOSS = Bounds().max_loss
METHODS = ("static", "dynamic")
#: how static quantisation sets activation ranges (onnxruntime's CalibrationMethod)
CALIBRATIONS = ("minmax", "percentile", "entropy")


def int8_paths() -> tuple[Path, Path]:
    """The int8 embedder and its gate report in the model cache."""
    return precision.int8_path(MODEL_NAME), precision.report_path("embed")


def is_usable(accuracy_float: float, accuracy_int8: float, max_loss: float) -> bool:
    """True when the int8 model loses at most ``max_loss`` of 10-fold accuracy."""
    return accuracy_float - accuracy_int8 <= max_loss + 1e-12


def int8_embedder(runtime=None):
    """The "dlib-int8" embedder stage: dlib's ResNet at int8, if its gates passed."""
    from mobileface.models.registry import get_spec
    from mobileface.stages.embed.dlib_resnet import DlibEmbedder

    files, why, _ = precision.usable_int8("embed")
    if files is None:
        raise ModelError(f"embedder dlib-int8: {why}")
    if not precision.int8_flags():
        log.warning("dlib-int8 on a CPU without VNNI or AMX: int8 is not faster there")
    embedder = DlibEmbedder(runtime, model_path=files[MODEL_NAME],
                            model_id=f"{MODEL_NAME}:{get_spec(MODEL_NAME).sha256[:16]}")
    return embedder
