"""The embedding stage for any ONNX face embedder described by an explicit spec.

The spec (:mod:`mobileface.stages.embed.spec`) says how to cut and normalise the chip;
nothing is inferred from the model's tensors. The model's input is only
*checked* against the spec (channels, size) so that a mismatch is a clear
error at start-up rather than a wrong embedding later.
"""
from __future__ import annotations

import logging

import numpy as np

from mobileface.models import registry
from mobileface.stages.align import warp_chips
from mobileface.stages.embed.spec import EmbedderSpec
from mobileface.errors import ModelError
from mobileface.models.runtime import RuntimeConfig, create_session, finite_output
from mobileface.stages.base import Stage
from mobileface.types import Faces
from mobileface.vectors import normalise

log = logging.getLogger(__name__)


class OnnxEmbedder(Stage):
    """Fills ``embedding`` (N, D) float32 with the spec's ONNX model, all faces in one run.

    ``model_id`` is ``"<name>:<model sha256, 16 hex>:<preprocessing sha256, 8 hex>"``:
    two embedders share it only when they run the same model file on chips
    made the same way, so embeddings with different ids must never be compared.
    """

    name = "embed"
    provides = ("embedding",)
    per_track = True
    #: compared by cosine similarity only (see ``threshold``), never by euclidean distance
    distance_threshold = None

    def __init__(self, spec: EmbedderSpec, runtime: RuntimeConfig | None = None):
        if not isinstance(spec, EmbedderSpec):
            raise ValueError(f"expected an EmbedderSpec, got {type(spec).__name__}")
        self.spec = spec
        self.requires = spec.align.requires
        if not spec.model.is_file():
            raise ModelError(f"embedder {spec.name!r}: model file {spec.model} does not exist")
        digest = registry.sha256_file(spec.model)
        if spec.sha256 and digest != spec.sha256:
            raise ModelError(f"embedder {spec.name!r}: {spec.model} has sha256 {digest[:16]}..., "
                             f"the spec expects {spec.sha256[:16]}...; refusing to load it")
        self.model_sha256 = digest
        self.model_id = f"{spec.name}:{digest[:16]}:{spec.preprocessing_digest()[:8]}"
        self.session = create_session(str(spec.model), runtime or RuntimeConfig(),
                                      f"embed {spec.name}")
        self.input_name, self.output_name, self.batch_one = self._check_model()
        # One run on a chip: proves the model accepts the spec's input and gives a
        # usable embedding (not empty, finite), and tells its size (for empty frames).
        out = self._run(spec.blob(_probe_chip(spec.input_size)))
        self.embedding_size = out.shape[1]
        log.info("embedder %s: %s, %dx%d %s chips, %d-d embeddings", spec.name, spec.model.name,
                 spec.input_size, spec.input_size, spec.color, self.embedding_size)

    @property
    def threshold(self) -> float | None:
        """The cosine similarity from which two faces are the same person (the spec's
        ``cosine_threshold``; None when the spec gives none)."""
        return self.spec.cosine_threshold

    def _check_model(self) -> tuple[str, str, bool]:
        spec = self.spec
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        by_name = {i.name: i for i in inputs}
        if spec.input_name is not None and spec.input_name not in by_name:
            raise ModelError(f"embedder {spec.name!r}: the model has no input "
                             f"{spec.input_name!r} (inputs: {', '.join(by_name)})")
        if spec.input_name is None and len(inputs) != 1:
            raise ModelError(f"embedder {spec.name!r}: the model has {len(inputs)} inputs; "
                             "name the image input with input_name")
        inp = by_name[spec.input_name] if spec.input_name else inputs[0]
        out_names = [o.name for o in outputs]
        if spec.output_name is not None and spec.output_name not in out_names:
            raise ModelError(f"embedder {spec.name!r}: the model has no output "
                             f"{spec.output_name!r} (outputs: {', '.join(out_names)})")
        out = next(o for o in outputs if o.name == (spec.output_name or out_names[0]))
        if any(isinstance(d, int) and d == 0 for d in out.shape):
            raise ModelError(f"embedder {spec.name!r}: the model output {out.name} has shape "
                             f"{list(out.shape)}: an empty embedding")
        shape = list(inp.shape)
        expected = [spec.channels, spec.input_size, spec.input_size]
        if len(shape) != 4 or any(isinstance(d, int) and d != e
                                  for d, e in zip(shape[1:], expected)):
            raise ModelError(f"embedder {spec.name!r}: the model input {inp.name} has shape "
                             f"{shape}, the spec gives N x {' x '.join(map(str, expected))} "
                             f"({spec.color}, {spec.input_size} px)")
        if inp.type != "tensor(float)":
            raise ModelError(f"embedder {spec.name!r}: the model input is {inp.type}; only "
                             "float32 inputs are supported")
        batch_one = shape[0] == 1
        if batch_one:
            log.info("embedder %s: the model has a fixed batch of 1; faces run one by one",
                     spec.name)
        return inp.name, spec.output_name or out_names[0], batch_one

    def _run(self, blob: np.ndarray) -> np.ndarray:
        if self.batch_one and len(blob) > 1:
            return np.concatenate([self._run(blob[i:i + 1]) for i in range(len(blob))])
        out = self.session.run([self.output_name], {self.input_name: blob})[0]
        out = finite_output(out, f"embedder {self.spec.name!r}")
        if len(out) != len(blob) or out.ndim < 2:
            raise ModelError(f"embedder {self.spec.name!r}: the model gave shape "
                             f"{list(out.shape)} for {len(blob)} chip(s); expected one "
                             "embedding per chip")
        out = np.asarray(out, np.float32).reshape(len(blob), -1)
        if self.spec.normalize == "l2":
            out = normalise(out)
        return out

    def chips(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """The aligned (N, S, S, 3) BGR chips the model sees (before colour and scaling)."""
        size = self.spec.input_size
        return warp_chips(image, self.spec.align.transforms(faces, size), size)

    def process(self, image: np.ndarray, faces: Faces) -> None:
        faces.embedding = np.ascontiguousarray(self._run(self.spec.blob(self.chips(image, faces))))

    def fill_empty(self, faces: Faces) -> None:
        faces.embedding = np.zeros((0, self.embedding_size), np.float32)


def _probe_chip(size: int) -> np.ndarray:
    """(1, S, S, 3) uint8: a smooth grey-to-colour gradient, not a flat chip, so that a
    model normalising its input or features sees some variance (a flat chip could
    give 0/0 there and make a sound model look damaged)."""
    ramp = np.linspace(64, 192, size, dtype=np.float32)
    chip = np.stack([ramp[None, :] + 0 * ramp[:, None], ramp[:, None] + 0 * ramp[None, :],
                     (ramp[None, :] + ramp[:, None]) / 2], axis=-1)
    return chip.astype(np.uint8)[None]
