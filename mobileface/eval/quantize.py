"""int8 models made once, checked against their float models on real faces, kept in the cache.

``python -m mobileface models quantize [--data DIR] [--models detect,embed,attributes]``
runs :func:`quantize_groups`. For each group it makes the int8 model(s) with
``onnxruntime.quantization`` (static QDQ: weights int8 per output channel,
activations uint8, ranges calibrated on real faces; :func:`quantize_onnx`),
runs the group's accuracy gates and writes the int8 files and a report into
the model cache (:mod:`mobileface.models.precision` reads them). The data is a
folder laid out as the shared test data (``DATA/face_recognition``,
``DATA/mobileface``):

* **detect** (RetinaFace; its convolutions from backbone stage 2 on, see
  :data:`DETECT_FLOAT_CONVS`): calibrated on the photos of
  ``face_recognition/knn_examples/train`` and frames 5, 25, 45 ... of the clips;
  checked on every photo of ``face_recognition`` and ``mobileface/friends.jpg`` and
  frames 0, 10, 20 ... of ``friends1.mp4``, ``friends2.mp4`` (where present) and
  ``short_hamilton_clip.mp4``, at input sizes 640 and 480. An image agrees when
  the two models find the same faces: every face one model scores at least
  :data:`CLEAR_MARGIN` above the detection threshold overlaps a face the other
  model finds with IoU >= 0.5. Faces that only one
  model scores near the threshold are borderline for either model and do not
  count (the gate also reports how many images have exactly the same count).
  Gate: the share of images that agree >= ``min_detect_agreement`` (default 0.98).
* **attributes** (age and gender): calibrated on the faces of the detector's
  calibration photos and frames; checked on the faces of LFW-Aligned-100Pair and
  of the detector's photos and frames. Gates: gender decisions (p(male) >= 0.5)
  agree for >= 98 % of the faces, median |age difference| <= 1 year.
* **embed** (dlib's ResNet): calibrated on the faces of every
  ``face_recognition`` photo (other people than the evaluation's); checked on
  LFW-Aligned-100Pair. Gates: 10-fold accuracy at most 0.005 below the float
  model's, and the mean cosine similarity of int8 to float embeddings >= 0.99.
"""
from __future__ import annotations

import contextlib
import io
import logging
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from mobileface.errors import DataError, ImageError
from mobileface.models import precision, registry
from mobileface.models.precision import Bounds

log = logging.getLogger(__name__)

#: onnxruntime's ways of setting activation ranges from the calibration data
RANGES = ("minmax", "percentile", "entropy")
#: detection scores this far above the threshold are "clear" faces the other model must find
CLEAR_MARGIN = 0.1
MATCH_IOU = 0.5
DETECT_SIZES = (640, 480)
#: RetinaFace's recipe, measured (frames of the shared clips, input 640): its first backbone
#: stage (14 convolutions, strides 2 to 8) in int8 drops clear faces (a score of 0.97 became
#: 0.05 on a dark stage frame of the Hamilton clip), and so does quantising the operators
#: between convolutions (LeakyRelu, Resize, Concat of the FPN); the convolutions from stage 2
#: on, alone, find the same faces. Counted in the graph of the pinned model (sha256 checked).
DETECT_FLOAT_CONVS = 14
CLIPS = ("mobileface/friends1.mp4", "mobileface/friends2.mp4",
         "face_recognition/short_hamilton_clip.mp4")
#: the opset the int8 models need at least (per-channel Q/DQ nodes)
MIN_OPSET = 13
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def gate(name: str, measured: float, bound: float, higher_is_better: bool, **detail) -> dict:
    passed = measured >= bound - 1e-12 if higher_is_better else measured <= bound + 1e-12
    return {"name": name, "measured": round(float(measured), 6),
            "bound": f"{'>=' if higher_is_better else '<='} {bound:g}",
            "passed": bool(passed), **detail}


# ---------------------------------------------------------------------------
# quantisation


def quantize_onnx(source: Path, target: Path, input_name: str, batches: Iterable[np.ndarray],
                  ranges: str = "percentile", method: str = "static",
                  convs_only: bool = False, float_convs: int = 0) -> None:
    """Write the int8 version of the float model ``source`` to ``target``.

    batches: calibration inputs of the network (real faces), for "static": QDQ,
    weights int8 per channel, activations uint8, ranges by ``ranges``: "minmax"
    (the extremes seen), "percentile" (ignoring the top 0.001 % of values) or
    "entropy" (onnxruntime's KL-divergence search). "dynamic": weights only,
    activations quantised at run time.

    convs_only: quantise the convolutions only (every other operator stays float);
    float_convs: leave the first this many convolutions of the graph in float.
    """
    if method not in ("static", "dynamic"):
        raise ValueError(f"method must be static or dynamic, got {method!r}")
    if ranges not in RANGES:
        raise ValueError(f"ranges must be one of {', '.join(RANGES)}, got {ranges!r}")
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data = [np.ascontiguousarray(b, np.float32) for b in batches]
    if method == "static" and not data:
        raise DataError(f"{source.name}: no calibration faces")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(data)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    # onnxruntime's histogram calibrators print their progress: keep stdout for our results
    import warnings

    import onnx

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = onnx.load(str(source))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < MIN_OPSET:
            # per-channel QuantizeLinear/DequantizeLinear (their axis) came with opset 13
            from onnx import version_converter

            upgraded = Path(tmp) / "opset.onnx"
            onnx.save(version_converter.convert_version(model, MIN_OPSET), str(upgraded))
            source = upgraded
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if method == "static":
            calibrate = {"minmax": CalibrationMethod.MinMax,
                         "percentile": CalibrationMethod.Percentile,
                         "entropy": CalibrationMethod.Entropy}[ranges]
            options = {}
            if convs_only or float_convs:
                convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
                options["nodes_to_exclude"] = convs[:float_convs]
                if convs_only:
                    options["op_types_to_quantize"] = ["Conv"]
            quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=calibrate, **options)
        else:
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8,
                             per_channel=True)


@contextlib.contextmanager
def _logger_level(name: str | None, level: int):
    """The logger ``name`` (None: the root) at ``level`` for the block."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _quiet_root_logger():
    """onnxruntime.quantization warns through the root logger about conv biases it reads
    from Constant nodes (it quantises them anyway): keep those lines off the user's stderr."""
    return _logger_level(None, logging.ERROR)


def _singles(blob: np.ndarray) -> list[np.ndarray]:
    """One calibration input per face (onnxruntime's histogram calibrators need every
    input of one shape)."""
    return [blob[i:i + 1] for i in range(len(blob))]


def cpu_record(flags=None) -> dict:
    flags = precision.cpu_flags() if flags is None else flags
    return {"machine": platform.machine(), "processor": platform.processor(),
            "int8_flags": precision.int8_flags(flags),
            "avx512": "avx512f" in flags, "avx2": "avx2" in flags}


def install(group: str, made: dict[str, Path], report: dict) -> Path:
    """Copy the int8 files ``made`` (registry name -> file) into the cache and write the
    group's report last (the old report goes first, so that a half-finished update never
    pairs one file with another's report)."""
    path = precision.report_path(group)
    path.unlink(missing_ok=True)
    models = {}
    for name, file in made.items():
        data = file.read_bytes()
        registry.write_atomically(data, precision.int8_path(name))
        models[name] = {"source_sha256": registry.get_spec(name).sha256,
                        "int8_sha256": registry.sha256_file(precision.int8_path(name)),
                        "int8_file": str(precision.int8_path(name)),
                        "size_mb": round(len(data) / 1e6, 2)}
    report = {"version": precision.REPORT_VERSION, "group": group, "models": models, **report}
    report["passed"] = all(g["passed"] for g in report["gates"])
    return precision.write_report(group, report)


# ---------------------------------------------------------------------------
# the data


@dataclass
class Images:
    """The images a group is calibrated and checked on, as (label, BGR image) pairs."""

    calibration: list = field(default_factory=list)
    evaluation: list = field(default_factory=list)


def _photos(folder: Path) -> list[Path]:
    """The images under ``folder``, linked folders followed."""
    import os

    if not folder.is_dir():
        return []
    return sorted(Path(top) / name for top, _, names in os.walk(folder, followlinks=True)
                  for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES
                  and not name.startswith("."))


def _quiet_reader():
    """LFW-Aligned-100Pair's crops are grey: no info line for each one converted to BGR."""
    return _logger_level("mobileface.io.image", logging.WARNING)


def _read(paths: Iterable[Path]) -> list:
    """(label, BGR image) of each readable image."""
    from mobileface.io.image import read_image

    out = []
    for path in paths:
        try:
            out.append((str(path), read_image(path)))
        except ImageError as exc:
            log.warning("%s", exc)
    return out


def clip_frames(path: Path, step: int, offset: int) -> list:
    """Frames offset, offset + step, ... of a clip, as (label, frame)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == offset % step:
                frames.append((f"{path.name}#{index}", frame))
            index += 1
    finally:
        capture.release()
    return frames


def scene_images(data: Path, step: int) -> Images:
    """Photos and clip frames for the detector (and the faces in them, for attributes)."""
    fr = data / "face_recognition"
    calibration = _read(_photos(fr / "knn_examples" / "train"))
    evaluation = _read([p for p in sorted(fr.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
                       + _photos(fr / "test_images") + _photos(fr / "knn_examples" / "test")
                       + [p for p in [data / "mobileface" / "friends.jpg"] if p.is_file()])
    for clip in CLIPS:
        if (data / clip).is_file():
            calibration += clip_frames(data / clip, step * 2, step // 2)
            evaluation += clip_frames(data / clip, step, 0)
    return Images(calibration, evaluation)


# ---------------------------------------------------------------------------
# the gates


#: the shape every calibration input of the detector is brought to (onnxruntime's histogram
#: calibrators need one shape): a 16:9 frame at the detector's input size 640
CALIBRATION_FRAME = (360, 640)


def detector_blob(image: np.ndarray) -> np.ndarray:
    """RetinaFace's input for ``image`` scaled to fit 640x360, the rest zero (the mean pixel)."""
    from mobileface.detect.retinaface import MEANS_BGR
    import cv2

    h, w = image.shape[:2]
    scale = min(CALIBRATION_FRAME[0] / h, CALIBRATION_FRAME[1] / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32) - MEANS_BGR
    blob = np.zeros((1, 3, *CALIBRATION_FRAME), np.float32)
    blob[0, :, :size[1], :size[0]] = resized.transpose(2, 0, 1)
    return blob


def detect_gate(images: list, fp32_path: Path, int8_path: Path, runtime,
                bound: float) -> dict:
    from mobileface.detect.retinaface import RetinaFaceDetector

    agree = exact = total = 0
    ious, differing = [], []
    for size in DETECT_SIZES:
        fp32 = RetinaFaceDetector(runtime, input_size=size, model_path=fp32_path)
        int8 = RetinaFaceDetector(runtime, input_size=size, model_path=int8_path)
        for label, image in images:
            a, b = fp32.detect(image), int8.detect(image)
            same, pair_ious = _same_faces(a, b, fp32.score_threshold)
            total += 1
            agree += same
            exact += len(a) == len(b)
            ious += pair_ious
            if not same:
                differing.append(f"{label}@{size}: {len(a)} vs {len(b)} faces")
    if total == 0:
        raise DataError("no photos or clip frames for the detector gate")
    return gate("detect: images with the same faces", agree / total, bound, True,
                images=total, sizes=list(DETECT_SIZES), same_count=round(exact / total, 6),
                matched_faces=len(ious),
                median_iou=round(float(np.median(ious)), 4) if ious else None,
                min_iou=round(float(np.min(ious)), 4) if ious else None,
                differing=differing[:20],
                criterion=f"every face one model scores >= threshold + {CLEAR_MARGIN} is "
                          f"matched by a face of the other with IoU >= {MATCH_IOU}")


def _same_faces(a, b, threshold: float) -> tuple[bool, list[float]]:
    """Whether every clear face of each model (score >= threshold + CLEAR_MARGIN) overlaps a
    face of the other (any it found) with IoU >= MATCH_IOU; the best IoU of each face of
    ``a`` that does."""
    from mobileface.detect.boxes import iou_matrix

    if len(a) == 0 and len(b) == 0:
        return True, []
    iou = iou_matrix(a.boxes, b.boxes) if len(a) and len(b) else np.zeros((len(a), len(b)))
    clear = threshold + CLEAR_MARGIN
    ok_a = all(iou.shape[1] and iou[i].max() >= MATCH_IOU
               for i in np.flatnonzero(a.scores >= clear))
    ok_b = all(iou.shape[0] and iou[:, j].max() >= MATCH_IOU
               for j in np.flatnonzero(b.scores >= clear))
    pair_ious = [float(iou[i].max()) for i in range(len(a)) if iou.shape[1]
                 and iou[i].max() >= MATCH_IOU]
    return bool(ok_a and ok_b), pair_ious


def face_blobs(analyzer, images: list, kind: str = "auto"):
    """The inputs of the age and gender nets for every face of ``images`` (the main face of
    a crop): (N, 3, 64, 64) and (N, 3, 32, 32)."""
    from mobileface.detect.locate import find_main_face
    from mobileface.stages.attributes import Attributes

    ages, genders = [], []
    for label, image in images:
        if max(image.shape[:2]) <= 256:
            found = find_main_face(analyzer, image, kind)
            faces, image = (found.faces, found.image) if found.found else (None, None)
        else:
            faces = analyzer.analyze(image)
        if faces is None or len(faces) == 0:
            continue
        age, gender = Attributes.blobs(image, faces)
        ages.append(age)
        genders.append(gender)
    if not ages:
        return np.zeros((0, 3, 64, 64), np.float32), np.zeros((0, 3, 32, 32), np.float32)
    return np.concatenate(ages), np.concatenate(genders)


def attributes_gates(blobs, fp32_paths: dict, int8_paths: dict, runtime,
                     bounds: Bounds) -> list[dict]:
    from mobileface.stages.attributes import Attributes

    age_blob, gender_blob = blobs
    if len(age_blob) == 0:
        raise DataError("no faces for the attributes gate")
    fp32 = Attributes(runtime, model_paths=fp32_paths)
    int8 = Attributes(runtime, model_paths=int8_paths)
    out_a, out_b = [], []
    for start in range(0, len(age_blob), 32):
        part = slice(start, start + 32)
        out_a.append(fp32.predict(age_blob[part], gender_blob[part]))
        out_b.append(int8.predict(age_blob[part], gender_blob[part]))
    age_a, gender_a = (np.concatenate(x) for x in zip(*out_a))
    age_b, gender_b = (np.concatenate(x) for x in zip(*out_b))
    agreement = float(((gender_a >= 0.5) == (gender_b >= 0.5)).mean())
    age_diff = np.abs(age_a - age_b)
    return [gate("attributes: gender agreement", agreement, bounds.min_gender_agreement, True,
                 faces=len(age_a), max_p_male_diff=round(float(np.abs(gender_a - gender_b).max()), 4)),
            gate("attributes: median |age difference|, years", float(np.median(age_diff)),
                 bounds.max_age_diff, False, faces=len(age_a),
                 p90=round(float(np.percentile(age_diff, 90)), 3),
                 max=round(float(age_diff.max()), 3))]


def embed_chips(analyzer, images: list) -> np.ndarray:
    """(N, 3, 150, 150) inputs of dlib's ResNet for the main face of each image."""
    from mobileface.detect.locate import find_main_face
    from mobileface.io.image import dlib_net_blob
    from mobileface.stages.align import dlib_chips
    from mobileface.stages.embed.dlib_resnet import CHIP_PADDING, CHIP_SIZE

    blobs = []
    for label, image in images:
        found = find_main_face(analyzer, image, "auto")
        if found.found:
            blobs.append(dlib_net_blob(dlib_chips(found.image, found.faces.landmarks68,
                                                  CHIP_SIZE, CHIP_PADDING)))
    if not blobs:
        raise DataError("no faces for the embedder's calibration")
    return np.concatenate(blobs)


def embed_gates(lfw: Path, analyzer, fp32_path: Path, int8_path: Path, runtime,
                bounds: Bounds) -> list[dict]:
    from mobileface.eval.dataset import load_verification_set, verify_embedders
    from mobileface.eval.verification import l2_normalise
    from mobileface.stages.embed.dlib_resnet import DlibEmbedder

    vset = load_verification_set(lfw)
    embedders = {"fp32": DlibEmbedder(runtime, model_path=fp32_path),
                 "int8": DlibEmbedder(runtime, model_path=int8_path)}
    vset, dropped, embedded, results = verify_embedders(vset, analyzer, embedders, "auto")
    ok = embedded.ok
    cosine = (l2_normalise(embedded.embeddings["fp32"][ok])
              * l2_normalise(embedded.embeddings["int8"][ok])).sum(1)
    acc = {k: r.kfold.accuracy for k, r in results.items()}
    loss = acc["fp32"] - acc["int8"]
    return [gate("embed: 10-fold accuracy lost", loss, bounds.max_loss, False,
                 accuracy_fp32=round(acc["fp32"], 6), accuracy_int8=round(acc["int8"], 6),
                 data=str(lfw), pairs=int(len(vset.pairs.same)), pairs_left_out=dropped,
                 images=int(ok.sum())),
            gate("embed: mean cosine to fp32", float(cosine.mean()), bounds.min_cosine, True,
                 min=round(float(cosine.min()), 6))]


# ---------------------------------------------------------------------------
# the command


@dataclass
class Job:
    """What every group's quantisation needs: the data, the float analyzer that finds the
    faces (landmarks included), the runtime, the bounds and where the new files go."""

    data: Path
    analyzer: object
    runtime: object
    bounds: Bounds
    ranges: str
    frame_step: int
    tmp: Path
    scenes: Images | None = None

    @property
    def lfw(self) -> Path:
        return self.data / "mobileface" / "LFW-Aligned-100Pair"

    @property
    def frames(self) -> str:
        first = self.frame_step // 2
        return f"frames {first}, {first + 2 * self.frame_step} ... of the clips"

    def made(self, group: str) -> dict[str, Path]:
        return {name: self.tmp / f"{name}-int8.onnx" for name in precision.GROUPS[group]}


def quantize_detect(job: Job) -> tuple[dict, list[dict], dict]:
    """RetinaFace: (the int8 file made, its gates, what it was calibrated on)."""
    from mobileface.models.graph import folded_model

    made = job.made("detect")
    source = folded_model("retinaface_mnet025")
    calib = [detector_blob(image) for _, image in job.scenes.calibration]
    quantize_onnx(source, made["retinaface_mnet025"], "input", calib, job.ranges,
                  convs_only=True, float_convs=DETECT_FLOAT_CONVS)
    gates = [detect_gate(job.scenes.evaluation, source, made["retinaface_mnet025"],
                         job.runtime, job.bounds.min_detect_agreement)]
    return made, gates, {"images": len(calib),
                         "what": f"knn_examples/train photos and {job.frames}"}


def quantize_attributes(job: Job) -> tuple[dict, list[dict], dict]:
    """The age and gender nets: (the int8 files made, their gates, the calibration)."""
    from mobileface.models.graph import folded_model

    made = job.made("attributes")
    sources = {name: folded_model(name) for name in made}
    age, gender = face_blobs(job.analyzer, job.scenes.calibration)
    for name, blob in (("age_v1", age), ("gender_v1", gender)):
        quantize_onnx(sources[name], made[name], "images", _singles(blob), job.ranges)
    checked = [face_blobs(job.analyzer, _read(_photos(job.lfw))),
               face_blobs(job.analyzer, job.scenes.evaluation)]
    blobs = tuple(np.concatenate([b[k] for b in checked]) for k in (0, 1))
    gates = attributes_gates(blobs, sources, made, job.runtime, job.bounds)
    return made, gates, {"faces": len(age),
                         "what": f"faces of the knn_examples/train photos and of {job.frames}"}


def quantize_embed(job: Job) -> tuple[dict, list[dict], dict]:
    """dlib's ResNet: (the int8 file made, its gates, the calibration)."""
    from mobileface.convert.dlib_resnet import INPUT_NAME, converted_model_path

    if not job.lfw.is_dir():
        raise DataError(f"{job.lfw}: no such folder (the embedder's gate needs it)")
    made = job.made("embed")
    chips = embed_chips(job.analyzer, _read(_photos(job.data / "face_recognition")))
    source = converted_model_path()
    quantize_onnx(source, made["dlib_resnet_v1"], INPUT_NAME, _singles(chips), job.ranges)
    gates = embed_gates(job.lfw, job.analyzer, source, made["dlib_resnet_v1"], job.runtime,
                        job.bounds)
    return made, gates, {"faces": len(chips), "what": "faces of the face_recognition photos"}


QUANTIZERS = {"detect": quantize_detect, "attributes": quantize_attributes,
              "embed": quantize_embed}


def quantize_groups(data: Path, groups: Iterable[str], bounds: Bounds | None = None,
                    ranges: str = "percentile", frame_step: int = 10, threads: int = 0,
                    flags=None) -> dict[str, dict]:
    """Make, check and install the int8 models of ``groups``; the report of each group."""
    from mobileface.models.runtime import RuntimeConfig
    from mobileface.pipeline.image import FaceAnalyzer

    groups = precision.check_groups(groups)
    if frame_step < 2:
        raise ValueError(f"frame step must be >= 2, got {frame_step}")
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: no such folder (give --data, the shared test data)")
    reports = {}
    with tempfile.TemporaryDirectory() as tmp, _quiet_reader():
        job = Job(data, FaceAnalyzer(stages=("landmarks",), threads=threads, precision="fp32"),
                  RuntimeConfig(intra_op_threads=threads), bounds or Bounds(), ranges,
                  frame_step, Path(tmp))
        if {"detect", "attributes"} & set(groups):
            job.scenes = scene_images(data, frame_step)
        for group in groups:
            begin = time.perf_counter()
            made, gates, calibration = QUANTIZERS[group](job)
            method = f"static QDQ, weights int8 per channel, activations uint8, {ranges} ranges"
            if group == "detect":
                method += (f"; convolutions only, the first {DETECT_FLOAT_CONVS} (backbone "
                           "stage 1) left in float")
            install(group, made, {"made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "method": method, "data": str(data),
                                  "calibration": calibration, "cpu": cpu_record(flags),
                                  "seconds": round(time.perf_counter() - begin, 1),
                                  "gates": gates})
            reports[group] = precision.read_report(group)
    return reports
