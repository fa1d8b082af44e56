"""onnxruntime sessions with configurable providers and thread counts."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mobileface.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeConfig:
    """How every ONNX model of an analyzer runs.

    providers: onnxruntime execution providers in order of preference, e.g.
        ("CUDAExecutionProvider", "CPUExecutionProvider"). Short names such as
        "cuda" or "cpu" are accepted.
    intra_op_threads: threads per operator (0 lets onnxruntime decide).
    active: where each model's session really runs (a provider can fall back).
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0
    #: model label -> the provider its latest session runs on (filled by create_session)
    active: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0")
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


_warned: set[tuple[str, ...]] = set()


def create_session(model, config: RuntimeConfig, label: str):
    """An InferenceSession for ``model`` (path or bytes); warns when a provider falls back."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = [p for p in config.providers if p in available]
    missing = [p for p in config.providers if p not in available]
    if missing and tuple(missing) not in _warned:
        _warned.add(tuple(missing))
        log.warning("onnxruntime provider(s) %s not available here (available: %s); falling back",
                    ", ".join(missing), ", ".join(available))
    if not wanted:
        wanted = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    # Each session owns a thread pool whose idle threads spin by default. The
    # pipeline runs several models back to back, so one model's spinning
    # threads would steal the cores from the next (age then gender took 4.0
    # ms per face with spinning and 2.2 ms without, on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot load {label}: {str(exc).splitlines()[0]}") from None
    active = session.get_providers()
    if active[0] != config.providers[0]:
        key = (label, active[0])
        if key not in _warned:
            _warned.add(key)
            log.warning("%s: requested %s but running on %s", label, config.providers[0], active[0])
    log.debug("%s: running on %s", label, active[0])
    config.active[label] = active[0]
    return session
