"""Low-light enhancement measured: faces found and named in darkened clips, photos and LFW pairs.

    python benchmark/lowlight.py [--light 0.15 ...] [--frames N] [--figure docs/lowlight.png]
                                 [--method histogram ...] [--json-out lowlight.json]

The shared clips (friends1.mp4, short_hamilton_clip.mp4), the face_recognition
photos and LFW-Aligned-100Pair are darkened here, at run time, the way a
camera records less light (mobileface/eval/lowlight.py: the light scaled to
10-25 %, the camera's gamma, sensor noise, then H.264 for video and JPEG for
photos; nothing is written outside a temporary folder). Each is analysed with
the low-light step off, auto and on, and compared with what the same pipeline
finds with it off on the original:

* detection recall: the faces found on the original (every frame) that are
  found again (a box with IoU >= 0.5);
* identity recall: the faces named (as an enrolled person) on the original that
  get the same name;
* false names: faces named someone the original names otherwise there (another
  person), or where the original found no face; new names: faces named where
  the original says Unknown (right or wrong: only the original is known);
* verification: 10-fold accuracy on the darkened LFW-Aligned-100Pair crops.

--feeds measures which image should feed the stages after detection: on faces
found in darkened frames, the 68 points, the embedding, age and gender computed
from the dark frame or from the enhanced one, against the same face in the
original frame (point error over the eye distance, cosine to the original
embedding, years, agreement).

Video runs the app's pipeline frame by frame (RetinaFace input 480, tracking,
votes) against a facebank of the people in knn_examples/train and Lin-Manuel
Miranda; photos run FaceAnalyzer (input 640) against the same facebank. The
"original" rows check that auto changes nothing on normal footage: the frames
auto enhanced, and whether every face and name is the same as with it off.

Prints a table, then one JSON line (also written to --json-out). --figure
writes the README's picture: a frame of friends1.mp4 at 15 % of the light and its
enhanced version, with the faces found on each (of the first 100 frames, the one
where enhancement changes the count most: a best case, next to the totals).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mobileface.cli import common
from mobileface.detect.boxes import iou_matrix
from mobileface.enhance import ENHANCE_MODES
from mobileface.enhance.lowlight import LowLightEnhancer
from mobileface.enhance.methods import METHODS
from mobileface.errors import DataError
from mobileface.eval import lowlight
from mobileface.eval.bench import DATA, demo_facebank
from mobileface.identity.gallery import UNKNOWN

CLIPS = ("mobileface/friends1.mp4", "face_recognition/short_hamilton_clip.mp4")
PHOTOS = "face_recognition"
LFW = "mobileface/LFW-Aligned-100Pair"
#: the facebank: the people of knn_examples/train, and Lin-Manuel Miranda (the Hamilton clip)
PEOPLE = {"Barack Obama": ["face_recognition/knn_examples/train/obama/obama.jpg",
                           "face_recognition/knn_examples/train/obama/obama2.jpg"],
          "Joe Biden": ["face_recognition/knn_examples/train/biden/biden.jpg",
                        "face_recognition/knn_examples/train/biden/biden2.jpg"],
          "Alex Lacamoire": ["face_recognition/knn_examples/train/alex_lacamoire/img1.jpg"],
          "Kit Harington": ["face_recognition/knn_examples/train/kit_harington/john1.jpeg",
                            "face_recognition/knn_examples/train/kit_harington/john2.jpeg"],
          "Rose Leslie": ["face_recognition/knn_examples/train/rose_leslie/img1.jpg",
                          "face_recognition/knn_examples/train/rose_leslie/img2.jpg"],
          "Lin-Manuel Miranda": ["face_recognition/lin-manuel-miranda.png"]}
VIDEO_DET_SIZE = 480
PHOTO_DET_SIZE = 640
IOU = 0.5
#: the figure: among the first frames of friends1.mp4, at this light
FIGURE_FRAMES, FIGURE_LIGHT = 100, 0.15


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowlight.py", description=__doc__.splitlines()[0])
    parser.add_argument("--light", type=float, action="append", default=None,
                        help="share of the light to darken to (repeatable; default: 0.10, "
                             "0.15, 0.25)")
    parser.add_argument("--frames", type=int, default=None,
                        help="analyse at most this many frames of each clip (default: all)")
    parser.add_argument("--method", action="append", choices=tuple(METHODS), default=None,
                        help="enhancement method (repeatable, to compare them; default: "
                             f"{next(iter(METHODS))}, the library's)")
    parser.add_argument("--video-codec", choices=("h264", "jpeg"), default="h264",
                        help="how the darkened clips are re-encoded: H.264 (x264 CRF 23, needs "
                             "PyAV) or each frame as a JPEG (default: h264)")
    parser.add_argument("--no-video", action="store_true", help="leave the clips out")
    parser.add_argument("--no-photos", action="store_true", help="leave the photos out")
    parser.add_argument("--no-lfw", action="store_true", help="leave the LFW pairs out")
    parser.add_argument("--feeds", action="store_true",
                        help="also measure the stages after detection on the dark and the "
                             "enhanced frame")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sensor noise")
    parser.add_argument("--figure", metavar="PNG", default=None,
                        help="write the picture of a dark frame and its enhanced version here")
    parser.add_argument("--json-out", default=None)
    common.add_logging_options(parser)
    return parser


# -- what was found ---------------------------------------------------------------------------


@dataclass
class Found:
    """The faces found in one frame or photo: boxes, and each one's name ("" = none)."""

    boxes: np.ndarray
    names: list[str]


@dataclass
class Score:
    """Counts of one set, one light, one mode, against the original."""

    faces: int = 0          # found on the original
    found: int = 0          # ... and here
    named: int = 0          # named on the original
    same_name: int = 0      # ... and here, the same
    false_names: int = 0    # named here, otherwise (or no face) on the original
    new_names: int = 0      # named here, Unknown on the original
    frames: int = 0
    enhanced: int = 0       # frames (photos) the low-light step enhanced
    identical: bool = True  # every box and name equal to the original's
    seconds: float = 0.0

    def add(self, reference: Found, got: Found, enhanced: bool) -> None:
        self.frames += 1
        self.enhanced += bool(enhanced)
        self.faces += len(reference.boxes)
        named = [n not in ("", UNKNOWN) for n in reference.names]
        self.named += sum(named)
        self.identical &= (len(got.boxes) == len(reference.boxes)
                           and np.array_equal(got.boxes, reference.boxes)
                           and got.names == reference.names)
        overlap = iou_matrix(reference.boxes, got.boxes) if len(reference.boxes) and \
            len(got.boxes) else np.zeros((len(reference.boxes), len(got.boxes)))
        for i in range(len(reference.boxes)):
            j = int(np.argmax(overlap[i])) if overlap.shape[1] else -1
            if j >= 0 and overlap[i, j] >= IOU:
                self.found += 1
                self.same_name += bool(named[i] and got.names[j] == reference.names[i])
        for j, name in enumerate(got.names):
            if name in ("", UNKNOWN):
                continue
            i = int(np.argmax(overlap[:, j])) if overlap.shape[0] else -1
            if i < 0 or overlap[i, j] < IOU or reference.names[i] not in (name, UNKNOWN):
                self.false_names += 1
            elif reference.names[i] == UNKNOWN:
                self.new_names += 1

    def to_dict(self) -> dict:
        return {"faces": self.faces, "found": self.found,
                "detection_recall": _share(self.found, self.faces), "named": self.named,
                "identity_recall": _share(self.same_name, self.named),
                "false_names": self.false_names, "new_names": self.new_names,
                "frames": self.frames,
                "enhanced_frames": self.enhanced, "identical_to_original": self.identical,
                "seconds": round(self.seconds, 1)}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# -- the sets ---------------------------------------------------------------------------------


def read_clip(path: Path, limit: int | None) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise DataError(f"{path}: no frame could be read")
    return frames, fps


def darken_clip(frames, fps, light, rng, codec) -> list[np.ndarray]:
    dark = [lowlight.darken(f, light, rng) for f in frames]
    return lowlight.h264(dark, fps) if codec == "h264" else [lowlight.jpeg(f) for f in dark]


def run_clip(pipeline, frames, fps, enhancer) -> tuple[list[Found], list[bool], float]:
    """What the pipeline finds and names in every frame, with this low-light step."""
    pipeline.enhancer = enhancer
    pipeline.reset()
    found, enhanced = [], []
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        result = pipeline.process(frame, index, timestamp=index / fps)
        faces = result.detected
        found.append(Found(faces.boxes.copy(), [str(n) for n in faces.identity]))
        enhanced.append(bool(result.enhancement.applied))
    pipeline.finish()
    return found, enhanced, time.perf_counter() - start


def photo_paths() -> list[Path]:
    root = DATA / PHOTOS
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def run_photos(analyzer, gallery, threshold, margin, images, enhancer):
    analyzer.enhancer = enhancer
    found, enhanced = [], []
    start = time.perf_counter()
    for image in images:
        faces = analyzer.analyze(image)
        names = [""] * len(faces)
        if len(faces) and len(gallery):
            decided = gallery.match(faces.embedding).decide(threshold, margin)
            names = [gallery.names[k] if k >= 0 else UNKNOWN for k in decided]
        found.append(Found(faces.boxes.copy(), names))
        enhanced.append(bool(faces.enhancement.applied))
    return found, enhanced, time.perf_counter() - start


def lfw_accuracy(folder: Path, analyzer, embedders) -> float:
    from mobileface.eval.dataset import load_verification_set, verify_embedders

    vset = load_verification_set(folder)
    _, _, _, results = verify_embedders(vset, analyzer, embedders)
    return float(next(iter(results.values())).kfold.accuracy)


def darken_folder(source: Path, target: Path, light: float, rng) -> None:
    for path in sorted(source.rglob("*.jpg")):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        image = cv2.imread(str(path))
        cv2.imwrite(str(out), lowlight.darken(image, light, rng),
                    [cv2.IMWRITE_JPEG_QUALITY, lowlight.JPEG_QUALITY])


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[dict] = field(default_factory=list)

    def add(self, data: str, light: float | None, mode: str, method: str, score: Score) -> None:
        self.rows.append({"data": data, "light": light, "mode": mode, "method": method,
                          **score.to_dict()})


def enhancers(methods, hysteresis: bool):
    """(mode, method, enhancer) for off, then auto and on with each method."""
    yield "off", "-", LowLightEnhancer("off", hysteresis=hysteresis)
    for method in methods:
        for mode in ENHANCE_MODES[1:]:
            yield mode, method, LowLightEnhancer(mode, method, hysteresis=hysteresis)


def measure_clips(args, report, pipeline, lights, methods, rng) -> None:
    for relative in CLIPS:
        path = DATA / relative
        frames, fps = read_clip(path, args.frames)
        reference, _, seconds = run_clip(pipeline, frames, fps, LowLightEnhancer("off"))
        for method in methods:       # normal footage: auto must change nothing
            got, enhanced, seconds = run_clip(pipeline, frames, fps,
                                              LowLightEnhancer("auto", method))
            report.add(path.name, None, "auto", method, _score(reference, got, enhanced, seconds))
        for light in lights:
            dark = darken_clip(frames, fps, light, rng, args.video_codec)
            for mode, method, enhancer in enhancers(methods, hysteresis=True):
                got, enhanced, seconds = run_clip(pipeline, dark, fps, enhancer)
                report.add(path.name, light, mode, method,
                           _score(reference, got, enhanced, seconds))
        common.log.info("%s: %d frames done", path.name, len(frames))


def measure_photos(report, pipeline, lights, methods, rng) -> None:
    from mobileface.pipeline.image import FaceAnalyzer

    paths = photo_paths()
    images = [cv2.imread(str(p)) for p in paths]
    images = [i for i in images if i is not None]
    analyzer = FaceAnalyzer(det_size=PHOTO_DET_SIZE, stages=("quality", "embed"))
    gallery = pipeline.gallery.gallery
    threshold, margin = pipeline.threshold, pipeline.config.margin
    reference, _, _ = run_photos(analyzer, gallery, threshold, margin, images,
                                 LowLightEnhancer("off", hysteresis=False))
    for method in methods:
        got, enhanced, seconds = run_photos(analyzer, gallery, threshold, margin, images,
                                            LowLightEnhancer("auto", method, hysteresis=False))
        report.add("photos", None, "auto", method, _score(reference, got, enhanced, seconds))
    for light in lights:
        dark = [lowlight.jpeg(lowlight.darken(i, light, rng)) for i in images]
        for mode, method, enhancer in enhancers(methods, hysteresis=False):
            got, enhanced, seconds = run_photos(analyzer, gallery, threshold, margin, dark,
                                                enhancer)
            report.add("photos", light, mode, method, _score(reference, got, enhanced, seconds))


def measure_lfw(lights, methods, rng, workdir: Path) -> dict:
    from mobileface.eval.dataset import build_embedders
    from mobileface.pipeline.image import FaceAnalyzer

    source = DATA / LFW
    analyzer = FaceAnalyzer(stages=("landmarks",))
    embedders = build_embedders(None, analyzer.runtime)
    accuracy = {"original": lfw_accuracy(source, analyzer, embedders)}
    rows = []
    for light in lights:
        folder = workdir / f"lfw_{light:g}"
        darken_folder(source, folder, light, rng)
        for mode, method, enhancer in enhancers(methods, hysteresis=False):
            analyzer.enhancer = enhancer
            start = time.perf_counter()
            value = lfw_accuracy(folder, analyzer, embedders)
            rows.append({"light": light, "mode": mode, "method": method,
                         "accuracy": round(value, 4),
                         "seconds": round(time.perf_counter() - start, 1)})
    accuracy["darkened"] = rows
    accuracy["original"] = round(accuracy["original"], 4)
    return accuracy


def measure_feeds(args, method: str, rng, light: float = FIGURE_LIGHT, step: int = 3) -> list[dict]:
    """Every third frame of the clips at ``light``: the faces found in the enhanced frame,
    matched to the original's, with the stages after detection run on the dark frame or
    on the enhanced one, against those of the original frame."""
    from mobileface.pipeline.image import FaceAnalyzer
    from mobileface.vectors import normalise

    analyzer = FaceAnalyzer(det_size=VIDEO_DET_SIZE,
                            stages=("landmarks", "pose", "quality", "attributes", "embed"))
    enhance = LowLightEnhancer("on", method, hysteresis=False)
    sums: dict[tuple[str, str], dict[str, list]] = {}
    for relative in CLIPS:
        frames, fps = read_clip(DATA / relative, args.frames)
        frames = frames[::step]
        dark = darken_clip(frames, fps, light, rng, args.video_codec)
        for original, recorded in zip(frames, dark):
            reference = analyzer.analyze(original)
            enhanced = enhance(recorded).image
            found = analyzer.detector.detect(enhanced)
            if not len(reference) or not len(found):
                continue
            overlap = iou_matrix(reference.boxes, found.boxes)
            keep = overlap.max(1) >= IOU
            reference, found = reference[keep], found[overlap.argmax(1)[keep]]
            eyes = np.linalg.norm(reference.landmarks68[:, 36:42].mean(1)
                                  - reference.landmarks68[:, 42:48].mean(1), axis=1)
            for points in ("dark", "enhanced"):
                for chips in ("dark", "enhanced"):
                    faces = found[np.arange(len(found))]
                    for stage in analyzer.stages:
                        per_face = stage.name in ("attributes", "embed")
                        source = chips if per_face else points
                        stage(enhanced if source == "enhanced" else recorded, faces)
                    acc = sums.setdefault((points, chips), {k: [] for k in
                                                            ("nme", "cos", "age", "gender")})
                    acc["nme"] += list(np.linalg.norm(faces.landmarks68 - reference.landmarks68,
                                                      axis=2).mean(1) / eyes)
                    acc["cos"] += list((normalise(faces.embedding)
                                        * normalise(reference.embedding)).sum(1))
                    acc["age"] += list(np.abs(faces.age - reference.age))
                    acc["gender"] += list((faces.gender >= 0.5) == (reference.gender >= 0.5))
    return [{"light": light, "landmarks_from": k[0], "chips_from": k[1], "faces": len(v["nme"]),
             "landmark_error": round(float(np.median(v["nme"])), 4),
             "embedding_cosine": round(float(np.median(v["cos"])), 4),
             "age_error": round(float(np.median(v["age"])), 2),
             "gender_agreement": round(float(np.mean(v["gender"])), 4)} for k, v in sums.items()]


def _score(reference, got, enhanced, seconds) -> Score:
    score = Score(seconds=seconds)
    for ref, mine, applied in zip(reference, got, enhanced):
        score.add(ref, mine, applied)
    return score


def write_figure(path: Path, pipeline, rng, codec: str) -> dict:
    """The first FIGURE_FRAMES frames of friends1.mp4 at 15 % of the light, run with the
    low-light step off and in auto; the frame where the two find the most different number
    of faces (the first such), as recorded with the faces found off, and enhanced with the
    faces found in auto."""
    from mobileface.outputs.annotators import BoxAnnotator, draw_status

    frames, fps = read_clip(DATA / CLIPS[0], FIGURE_FRAMES)
    dark = darken_clip(frames, fps, FIGURE_LIGHT, rng, codec)
    runs = {}
    for mode in ("off", "auto"):
        pipeline.enhancer = LowLightEnhancer(mode)
        pipeline.reset()
        runs[mode] = [pipeline.process(frame, i, timestamp=i / fps) for i, frame in
                      enumerate(dark)]
        pipeline.finish()
    counts = {mode: [len(r.detected) for r in results] for mode, results in runs.items()}
    index = int(np.argmax(np.array(counts["auto"]) - np.array(counts["off"])))
    panels = []
    for mode, text in (("off", "as recorded, enhancement off"), ("auto", "enhanced (auto)")):
        result = runs[mode][index]
        shown = cv2.resize(result.image, (result.image.shape[1] // 2,
                                          result.image.shape[0] // 2),
                           interpolation=cv2.INTER_AREA)
        faces = result.detected
        faces.boxes = faces.boxes / 2
        BoxAnnotator().annotate(shown, faces)
        draw_status(shown, f"{FIGURE_LIGHT:.0%} of the light, {text}: {len(faces)} faces")
        panels.append(shown)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.hstack(panels)):
        raise DataError(f"cannot write {path}")
    return {"figure": str(path), "frame": index, "light": FIGURE_LIGHT,
            "faces_off": counts["off"][index], "faces_auto": counts["auto"][index],
            "faces_off_all_frames": int(sum(counts["off"])),
            "faces_auto_all_frames": int(sum(counts["auto"]))}


def print_table(report: Report, lfw: dict | None) -> None:
    print(f"{'data':<24} {'light':>5} {'mode':<5} {'method':<12} {'det recall':>10} "
          f"{'id recall':>9} {'false':>5} {'new':>4} {'enhanced':>9} {'same as off':>11}")
    for r in report.rows:
        light = "orig" if r["light"] is None else f"{r['light']:.0%}"
        same = ("yes" if r["identical_to_original"] else "no") if r["light"] is None else ""
        print(f"{r['data']:<24} {light:>5} {r['mode']:<5} {r['method']:<12} "
              f"{_pct(r['detection_recall']):>10} {_pct(r['identity_recall']):>9} "
              f"{r['false_names']:>5} {r['new_names']:>4} "
              f"{r['enhanced_frames']:>4}/{r['frames']:<4} {same:>11}")
    if lfw:
        print(f"LFW-Aligned-100Pair 10-fold accuracy: original {lfw['original']:.4f}")
        for r in lfw["darkened"]:
            print(f"  {r['light']:.0%} of the light, {r['mode']:<4} {r['method']:<12} "
                  f"{r['accuracy']:.4f}")


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def pooled(report: Report) -> list[dict]:
    """Detection recall over every clip and the photos, per light, mode and method."""
    out: dict = {}
    for r in report.rows:
        if r["light"] is None:
            continue
        key = (r["light"], r["mode"], r["method"])
        faces, found = out.get(key, (0, 0))
        out[key] = (faces + r["faces"], found + r["found"])
    return [{"light": k[0], "mode": k[1], "method": k[2], "faces": v[0],
             "detection_recall": _share(v[1], v[0])} for k, v in out.items()]


def run(args) -> int:
    from mobileface.pipeline import FacePipeline, PipelineConfig

    lights = args.light or [0.10, 0.15, 0.25]
    if not all(0.0 < light <= 1.0 for light in lights):
        raise ValueError("--light must be in (0, 1]")
    if args.frames is not None and args.frames < 1:
        raise ValueError("--frames must be at least 1")
    methods = list(dict.fromkeys(args.method or [next(iter(METHODS))]))
    missing = [p for p in (*CLIPS, PHOTOS, LFW) if not (DATA / p).exists()]
    if missing:
        raise DataError(f"the shared data is absent ({', '.join(missing)} under {DATA}): set "
                        "MOBILEFACE_SHARED to the shared folder")
    if args.video_codec == "h264" and not args.no_video:
        lowlight.h264([np.zeros((16, 16, 3), np.uint8)], 25.0)   # PyAV is there, or one line
    rng = np.random.default_rng(args.seed)
    report, lfw, figure = Report(), None, None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mobileface-lowlight-") as tmp:
        workdir = Path(tmp)
        pipeline = FacePipeline.from_config(PipelineConfig(det_size=VIDEO_DET_SIZE, threads=0))
        demo_facebank(workdir / "facebank", pipeline, PEOPLE)
        if args.figure:
            figure = write_figure(Path(args.figure), pipeline, np.random.default_rng(args.seed),
                                  args.video_codec)
        if not args.no_video:
            measure_clips(args, report, pipeline, lights, methods, rng)
        if not args.no_photos:
            measure_photos(report, pipeline, lights, methods, rng)
        if not args.no_lfw:
            lfw = measure_lfw(lights, methods, rng, workdir)
        feeds = measure_feeds(args, methods[0], rng) if args.feeds else None
    print(f"low light: {', '.join(f'{x:.0%}' for x in lights)} of the light, camera gamma "
          f"{lowlight.CAMERA_GAMMA}, full well {lowlight.FULL_WELL:.0f} e-, read noise "
          f"{lowlight.READ_NOISE:g} e-; video {args.video_codec}, photos JPEG "
          f"{lowlight.JPEG_QUALITY}; cpu cores: {os.cpu_count()}")
    print_table(report, lfw)
    all_recall = pooled(report)
    for r in all_recall:
        print(f"every clip and photo, {r['light']:.0%} of the light, {r['mode']:<4} "
              f"{r['method']:<12}: detection recall {_pct(r['detection_recall'])} of "
              f"{r['faces']} faces")
    for r in feeds or []:
        print(f"{r['light']:.0%} of the light, {r['faces']} faces, landmarks from the "
              f"{r['landmarks_from']:<8} frame, chips from the {r['chips_from']:<8} frame: "
              f"68-point error {r['landmark_error']:.3f} of the eye distance, embedding cosine "
              f"to the original {r['embedding_cosine']:.4f}, age error {r['age_error']:.1f} "
              f"years, gender agrees {_pct(r['gender_agreement'])}")
    if figure:
        print(f"wrote {figure['figure']}: frame {figure['frame']}, {figure['faces_off']} faces "
              f"found off, {figure['faces_auto']} with auto (over the first {FIGURE_FRAMES} "
              f"frames: {figure['faces_off_all_frames']} and {figure['faces_auto_all_frames']})")
    result = {"benchmark": "lowlight", "lights": lights, "methods": methods,
              "video_codec": args.video_codec, "frames_limit": args.frames, "seed": args.seed,
              "full_well": lowlight.FULL_WELL, "read_noise": lowlight.READ_NOISE,
              "camera_gamma": lowlight.CAMERA_GAMMA, "jpeg_quality": lowlight.JPEG_QUALITY,
              "h264_crf": lowlight.H264_CRF, "video_det_size": VIDEO_DET_SIZE,
              "photo_det_size": PHOTO_DET_SIZE, "people_enrolled": sorted(PEOPLE),
              "rows": report.rows, "pooled": all_recall, "lfw": lfw, "feeds": feeds,
              "figure": figure,
              "seconds": round(time.perf_counter() - started, 1), "cpu_count": os.cpu_count()}
    common.emit_json(result, args.json_out)
    return 0


def main(argv=None) -> int:
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
