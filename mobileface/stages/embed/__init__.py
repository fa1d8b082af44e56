"""Embedders: the stages that turn an aligned face into a vector, chosen by spec.

``dlib_resnet`` is the default (dlib's ResNet as ONNX), ``int8`` its quantised
copy (usable only once its accuracy check passed), ``onnx`` any ONNX model
described by an explicit ``spec`` (``presets`` for MobileFace's networks).
"""
from __future__ import annotations

from pathlib import Path

from mobileface.models.runtime import RuntimeConfig
from mobileface.stages.base import Stage

#: the spec name of the default embedder
DEFAULT_EMBEDDER = "dlib"
#: dlib's ResNet at int8 (``precision="int8"`` for the embedder alone); loads only when the
#: gates of ``python -m mobileface models quantize`` passed (mobileface/stages/embed/int8.py)
INT8_EMBEDDER = "dlib-int8"


def create_embedder(spec=None, runtime: RuntimeConfig | None = None) -> Stage:
    """The embedding stage for ``spec``.

    spec: None or "dlib" for dlib's ResNet (the default); an
    :class:`~mobileface.stages.embed.spec.EmbedderSpec`; a dict with the spec's fields
    (relative paths from the current folder); or the path of a spec JSON file
    (see :mod:`mobileface.stages.embed.spec` for the fields).

    Every embedder is a :class:`Stage` named "embed" that fills ``embedding``
    for all faces of a frame in one call, and has a ``model_id`` string naming
    the model that made its embeddings (stored with each facebank row, so that
    embeddings of different models are never compared) and a ``threshold``: the
    cosine similarity from which two of its embeddings are taken for the same
    person (None when unknown), and a ``distance_threshold``: the euclidean
    distance below which they are, or None for models compared by cosine only
    (``mobileface verify`` picks its measure from these two, never from a spec).
    A bad spec raises ValueError; a missing or unloadable model file raises
    ModelError, and so does a model whose output is empty, NaN or infinite (a
    damaged file), at load time or on the frame that shows it.
    """
    if spec is None or spec == DEFAULT_EMBEDDER:
        from mobileface.stages.embed.dlib_resnet import DlibEmbedder
        return DlibEmbedder(runtime)
    if spec == INT8_EMBEDDER:
        from mobileface.stages.embed.int8 import int8_embedder
        return int8_embedder(runtime)
    from mobileface.stages.embed.onnx import OnnxEmbedder
    from mobileface.stages.embed.spec import EmbedderSpec, load_spec

    if isinstance(spec, EmbedderSpec):
        return OnnxEmbedder(spec, runtime)
    if isinstance(spec, dict):
        return OnnxEmbedder(EmbedderSpec.from_dict(spec), runtime)
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.suffix.lower() == ".json" or path.is_file():
            return OnnxEmbedder(load_spec(path), runtime)
    raise ValueError(f"unknown embedder {spec!r}: use {DEFAULT_EMBEDDER!r}, {INT8_EMBEDDER!r}, "
                     "an EmbedderSpec, a spec dict or the path of a spec .json file")
