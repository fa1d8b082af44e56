"""Graph optimisation and int8 quantisation of dlib's ResNet embedder, and the guard on using it.

This replaces MobileFace's MXNet prune and merge-bn tools. (Batch norm is
already folded into the convolutions by our converter, and onnxruntime fuses
Conv+Add+Relu itself when a session starts.)

* :func:`optimize_graph` saves onnxruntime's optimised graph (level EXTENDED:
  constant folding, redundant-node removal, Conv/Add/activation fusions; not
  the hardware-specific layout level), so that a session need not optimise at
  start. The saved file holds onnxruntime's own fused operators and runs only
  in onnxruntime.
* :func:`quantize` makes an int8 model with ``onnxruntime.quantization``:
  "static" (the default) quantises weights per channel (int8) and activations
  (uint8) in QDQ format, with activation ranges calibrated on face chips
  (MinMax by default, or Percentile or Entropy); "dynamic" quantises weights only and the activations at run time.

``tools/optimize_model.py`` measures the speed and the verification accuracy
of the int8 model against the float one and writes it into the model cache
beside a report (:func:`int8_paths`). ``create_embedder("dlib-int8")`` loads it
only when that report says it is usable: the 10-fold accuracy lost on the
evaluation set is at most the bound the tool was given (default
:data:`DEFAULT_MAX_LOSS`), the file's sha256 is the one the report names, and
it was made from the current float model. Accuracy was checked on the CPU that
ran the tool; int8 kernels differ between CPUs (with and without VNNI), so run
the tool again on the machine that will use the model.
"""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Iterable

import numpy as np

from mobileface.models import registry
from mobileface.convert.dlib_resnet import INPUT_NAME, MODEL_NAME
from mobileface.errors import ModelError
from mobileface.stages.embed.dlib_resnet import DlibEmbedder

log = logging.getLogger(__name__)

#: the most 10-fold accuracy (a fraction: 0.005 = 0.5 points) the int8 model may lose
DEFAULT_MAX_LOSS = 0.005
METHODS = ("static", "dynamic")
#: how static quantisation sets activation ranges (onnxruntime's CalibrationMethod)
CALIBRATIONS = ("minmax", "percentile", "entropy")
REPORT_VERSION = 1


def int8_paths() -> tuple[Path, Path]:
    """The int8 model and its report in the model cache, keyed by the source model's sha256."""
    digest = registry.get_spec(MODEL_NAME).sha256[:16]
    stem = registry.cache_dir() / f"{MODEL_NAME}-{digest}-int8"
    return stem.with_suffix(".onnx"), stem.with_suffix(".json")


def cpu_description() -> dict:
    """Machine type and whether the CPU has VNNI (int8 dot products), where Linux says."""
    vnni = None
    try:
        flags = Path("/proc/cpuinfo").read_text()
        vnni = "vnni" in flags
    except OSError:
        pass
    return {"machine": platform.machine(), "processor": platform.processor(), "vnni": vnni}


def optimize_graph(source: Path, target: Path) -> None:
    """Save onnxruntime's EXTENDED-level optimised graph of ``source`` to ``target``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])


def quantize(source: Path, target: Path, method: str = "static",
             calibration: Iterable[np.ndarray] = (), ranges: str = "minmax") -> None:
    """Write the int8 version of the float model ``source`` to ``target``.

    calibration: input batches (N, 3, 150, 150) float32 of real face chips, for
    the "static" method. ranges: how the activation ranges are set from them:
    "minmax" (the extremes seen), "percentile" (ignoring the top 0.001% of
    values) or "entropy" (onnxruntime's KL-divergence search).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if ranges not in CALIBRATIONS:
        raise ValueError(f"ranges must be one of {', '.join(CALIBRATIONS)}, got {ranges!r}")
    import contextlib
    import io
    import tempfile

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, np.float32) for b in calibration]
    if method == "static" and not batches:
        raise ValueError("static quantisation needs calibration face chips")

    class Chips(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

    # onnxruntime's histogram calibrators print their progress: keep stdout for our results
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        # shape inference and graph clean-up first, as onnxruntime recommends; the
        # network's shapes are static but for the batch, so no symbolic inference
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if method == "static":
            method_enum = {"minmax": CalibrationMethod.MinMax,
                           "percentile": CalibrationMethod.Percentile,
                           "entropy": CalibrationMethod.Entropy}[ranges]
            quantize_static(str(prepared), str(target), Chips(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method_enum)
        else:
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8,
                             per_channel=True)


def is_usable(accuracy_float: float, accuracy_int8: float, max_loss: float) -> bool:
    """True when the int8 model loses at most ``max_loss`` of 10-fold accuracy."""
    return accuracy_float - accuracy_int8 <= max_loss + 1e-12


def read_report(path: Path) -> dict:
    """The int8 report at ``path``; a one-line ModelError when it is absent, unreadable or
    not JSON (nesting too deep for the parser included) or of another version."""
    try:
        report = registry.parse_json(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"no int8 embedder has been made: run python tools/optimize_model.py "
                         f"DATA (it writes {path.name} into the model cache)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the int8 report {path}: {exc}") from None
    if not isinstance(report, dict) or report.get("version") != REPORT_VERSION:
        raise ModelError(f"{path} is not an int8 report this version understands; "
                         "run python tools/optimize_model.py again")
    return report


def int8_embedder(runtime=None):
    """The "dlib-int8" embedder stage, if tools/optimize_model.py found it accurate enough."""
    model, report_path = int8_paths()
    report = read_report(report_path)
    source = registry.get_spec(MODEL_NAME).sha256
    if report.get("source_sha256") != source:
        raise ModelError(f"the int8 model in {report_path.parent} was made from another version "
                         "of the float model: run python tools/optimize_model.py again")
    if not report.get("usable"):
        raise ModelError(f"the int8 embedder failed its accuracy check (10-fold accuracy "
                         f"{report.get('accuracy_int8')} against {report.get('accuracy_float')} "
                         f"for the float model; at most {report.get('max_loss')} may be lost), "
                         "so it is not used; the float embedder 'dlib' is")
    if not model.is_file():
        raise ModelError(f"the int8 model {model} is missing: run python tools/optimize_model.py")
    digest = registry.sha256_file(model)
    if digest != report.get("int8_sha256"):
        raise ModelError(f"{model} is not the file its report checked (sha256 differs): "
                         "run python tools/optimize_model.py again")
    here = cpu_description()
    checked = report.get("cpu") if isinstance(report.get("cpu"), dict) else {}
    if checked.get("vnni") != here["vnni"]:
        log.warning("the int8 embedder's accuracy was checked on a CPU %s VNNI and this one %s "
                    "it; run tools/optimize_model.py here to check it on this CPU",
                    "with" if checked.get("vnni") else "without",
                    "has" if here["vnni"] else "lacks")
    return DlibEmbedder(runtime, model_path=model, model_id=f"{MODEL_NAME}-int8:{digest[:16]}")
