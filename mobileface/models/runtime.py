"""onnxruntime sessions with configurable providers and thread counts."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mobileface.errors import ModelError

log = logging.getLogger(__name__)


#: the most intra-op threads a model may have: each model owns its pool, so 200 threads for
#: the 8 models of a pipeline already exhausted a 4 GB address space (measured)
MAX_THREADS = 64


@dataclass(frozen=True)
class RuntimeConfig:
    """How every ONNX model of an analyzer runs.

    providers: onnxruntime execution providers in order of preference, e.g.
        ("CUDAExecutionProvider", "CPUExecutionProvider"). Short names such as
        "cuda" or "cpu" are accepted.
    intra_op_threads: threads per operator (0 lets onnxruntime decide).
    precision: "fp32" (default here), "int8" or "auto", see :mod:`mobileface.models.precision`.
    active: where each model's session really runs (a provider can fall back).
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0
    #: "fp32", "int8" or "auto" (see mobileface.models.precision): what the models that have
    #: int8 versions (detect, attributes, embed) load
    precision: str = "fp32"
    #: model group -> the precision it was built at (filled by the models that have int8)
    chosen: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)
    #: model label -> the provider its latest session runs on (filled by create_session)
    active: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.intra_op_threads <= MAX_THREADS:
            raise ValueError(f"threads per model must be 0 (onnxruntime decides) to "
                             f"{MAX_THREADS}, got {self.intra_op_threads}")
        from mobileface.models.precision import check_precision

        check_precision(self.precision)
        object.__setattr__(self, "providers", tuple(normalise_provider(p) for p in self.providers))
        if not self.providers:
            raise ValueError("at least one provider is needed")


_SHORT = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


def normalise_provider(name: str) -> str:
    return _SHORT.get(name.lower(), name)


#: what has been warned about in this process: a missing provider set, or a session that
#: did not get an available provider (label, requested, active)
_warned: set[tuple[str, ...]] = set()


def create_session(model, config: RuntimeConfig, label: str):
    """An InferenceSession for ``model`` (path or bytes); warns when a provider falls back.

    Warnings: ONE per set of requested providers that this onnxruntime lacks, for
    the whole process (every model of the run falls back the same way, so a line
    per model would repeat it), and one per model whose session does not run on
    a provider that *is* available (the provider refused that model). The
    provider each session really runs on is logged at debug level and kept in
    ``config.active``.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = [p for p in config.providers if p in available]
    missing = [p for p in config.providers if p not in available]
    _warn_missing(missing, available)
    if not wanted:
        wanted = ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(model, sess_options=_options(ort, config),
                                       providers=wanted)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot load {label}: {str(exc).splitlines()[0]}") from None
    active = session.get_providers()[0]
    _note_fallback(label, wanted[0], active)
    log.debug("%s: running on %s", label, active)
    config.active[label] = active
    return session


def model_files(group: str, config: RuntimeConfig) -> dict:
    """The int8 files of ``group``'s models when ``config.precision`` picks int8 for it, else
    an empty dict (the fp32 models); notes the choice in ``config.chosen``."""
    from mobileface.models.precision import model_files as choose

    chosen, files = choose(group, config.precision)
    config.chosen[group] = chosen
    return files


def _options(ort, config: RuntimeConfig):
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    # Each session owns a thread pool whose idle threads spin by default. The
    # pipeline runs several models back to back, so one model's spinning
    # threads would steal the cores from the next (age then gender took 4.0
    # ms per face with spinning and 2.2 ms without, on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _warn_missing(missing: list[str], available: list[str]) -> None:
    """One warning per process for each set of requested providers this onnxruntime lacks."""
    if missing and tuple(missing) not in _warned:
        _warned.add(tuple(missing))
        log.warning("onnxruntime provider(s) %s not available here (available: %s); "
                    "falling back to the next provider requested (else the CPU) for every model",
                    ", ".join(missing), ", ".join(available))


def _note_fallback(label: str, requested: str, active: str) -> None:
    """Warn once per model whose session did not take the first *available* provider asked
    for. (A provider missing altogether was warned about once, in _warn_missing.)"""
    key = (label, requested, active)
    if active != requested and key not in _warned:
        _warned.add(key)
        log.warning("%s: %s is available but did not take this model; running on %s",
                    label, requested, active)


def finite_output(values, label: str):
    """``values`` (a model's output) as a numpy array, or a one-line ModelError naming the
    model when it holds NaN or infinite numbers or nothing at all.

    A network fed finite pixels gives finite numbers unless its weights are
    damaged; passed on, NaN would be stored in a facebank, compared as "not the
    same person" and printed as invalid JSON.
    """
    import numpy as np

    values = np.asarray(values)
    if values.size == 0:
        raise ModelError(f"{label}: the model gave an empty output (is it the right model?)")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ModelError(f"{label}: the model gave NaN or infinite values; its file is "
                         "damaged or not the expected model")
    return values
