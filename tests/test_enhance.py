"""Low-light enhancement: the step on synthetic dark frames (the astronaut photo of
scikit-image, darkened as a camera records less light), auto's decision and its hysteresis
on video, and what the engine and the analyzer report. No ../shared needed."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fakes import FakeFrameStage
from mobileface.enhance import ENHANCE_MODES
from mobileface.enhance.lowlight import BRIGHT_LEVEL, DARK_LEVEL, LowLightEnhancer
from mobileface.enhance.methods import METHODS, Thumbnail, histogram_curve
from mobileface.eval.lowlight import darken, jpeg
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.types import Faces

#: the light at which RetinaFace misses the small astronaut without the enhancement
DARK_LIGHT = 0.03


def small_astronaut_frame(astronaut: np.ndarray, side: int = 128) -> np.ndarray:
    """640x360: the astronaut photo shrunk to ``side`` px on a dim grey wall."""
    frame = np.full((360, 640, 3), (60, 70, 75), np.uint8)
    frame[100:100 + side, 250:250 + side] = cv2.resize(astronaut, (side, side),
                                                       interpolation=cv2.INTER_AREA)
    return frame


@pytest.fixture(scope="module")
def dark_frames(astronaut_bgr):
    """The small astronaut at 3 % of the light, four noise draws, JPEG'd."""
    frame = small_astronaut_frame(astronaut_bgr)
    return [jpeg(darken(frame, DARK_LIGHT, np.random.default_rng(seed))) for seed in range(4)]


@pytest.fixture(scope="module")
def analyzers():
    from mobileface import FaceAnalyzer

    off = FaceAnalyzer(det_size=480, stages=("quality",))
    # the same models, the low-light step in auto
    auto = FaceAnalyzer(detector=off.detector, stages=off.stages, enhance="auto")
    return off, auto


def textured(level: float, seed: int = 0, size=(320, 240)) -> np.ndarray:
    """A frame of random 8x8-pixel blocks whose brightest 0.5 % reach about ``level``."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(0.0, level * 255.0, (size[1] // 8, size[0] // 8)).astype(np.uint8)
    grey = cv2.resize(blocks, size, interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


# -- the step on dark frames -------------------------------------------------------------------


def test_auto_finds_the_face_of_a_dark_frame_that_off_misses(analyzers, dark_frames):
    off, auto = analyzers
    for frame in dark_frames:
        assert len(off.analyze(frame)) == 0
        faces = auto.analyze(frame)
        assert len(faces) == 1 and faces.enhancement.applied
        x1, y1, x2, y2 = faces.boxes[0]
        assert 250 <= (x1 + x2) / 2 <= 378 and 100 <= (y1 + y2) / 2 <= 228   # where she is
        assert faces.to_records()[0]["enhanced"] is True


@pytest.mark.parametrize("method", METHODS)
def test_every_method_brightens_a_dark_frame_and_leaves_it_untouched(method, astronaut_bgr):
    dark = darken(astronaut_bgr, 0.05, np.random.default_rng(0))
    before = dark.copy()
    enhancement = LowLightEnhancer("on", method)(dark)
    out = enhancement.image
    assert enhancement.applied and enhancement.method == method
    assert out.shape == dark.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(dark, before)                   # the input is not changed
    assert Thumbnail.of(out).brightness > Thumbnail.of(dark).brightness + 0.15
    assert out.mean() > 1.5 * dark.mean()


def test_the_histogram_curve_rises_and_never_darkens():
    for frame in (textured(0.2), textured(0.9), np.zeros((40, 40, 3), np.uint8)):
        curve = histogram_curve(Thumbnail.of(frame).histogram).astype(int)
        assert (np.diff(curve) >= 0).all()
        assert (curve >= np.arange(256)).all()


def test_the_brightness_is_the_level_of_the_brightest_half_percent():
    frame = np.full((720, 1280, 3), 30, np.uint8)
    frame[:16, :256] = 200                      # 0.44 % of the frame: less than 0.5 %
    assert Thumbnail.of(frame).brightness == pytest.approx(30 / 255, abs=0.005)
    frame[:16, :512] = 200                      # 0.9 %
    assert Thumbnail.of(frame).brightness == pytest.approx(200 / 255, abs=0.005)


# -- auto leaves normal frames alone -----------------------------------------------------------


def test_auto_leaves_a_normal_frame_untouched(astronaut_bgr, analyzers):
    enhancement = LowLightEnhancer("auto")(astronaut_bgr)
    assert not enhancement.applied and enhancement.image is astronaut_bgr
    assert enhancement.brightness > BRIGHT_LEVEL
    off, auto = analyzers
    normal = small_astronaut_frame(astronaut_bgr)
    plain, automatic = off.analyze(normal), auto.analyze(normal)
    assert len(plain) == 1 and plain == automatic        # every column bit-identical
    assert not automatic.enhancement.applied


def test_off_measures_nothing_and_on_enhances_a_normal_frame(astronaut_bgr):
    off = LowLightEnhancer("off")(astronaut_bgr)
    assert not off.applied and off.image is astronaut_bgr and np.isnan(off.brightness)
    assert off.to_record() == {"mode": "off", "applied": False, "brightness": None,
                               "method": "histogram"}
    on = LowLightEnhancer("on")(astronaut_bgr)
    assert on.applied and on.image is not astronaut_bgr


# -- hysteresis --------------------------------------------------------------------------------

#: (brightness of the frame, enhanced on video) : dark starts it, it holds until bright
SEQUENCE = [(0.60, False), (0.30, True), (0.42, True), (0.43, True), (0.50, False),
            (0.42, False), (0.38, True), (0.90, False)]


def test_auto_on_video_starts_below_the_dark_level_and_holds_until_the_bright_level():
    assert DARK_LEVEL < 0.42 < 0.43 < BRIGHT_LEVEL
    enhancer = LowLightEnhancer("auto")
    applied = [enhancer(textured(level, seed)).applied for seed, (level, _) in
               enumerate(SEQUENCE)]
    assert applied == [want for _, want in SEQUENCE]


def test_single_images_are_decided_alone():
    enhancer = LowLightEnhancer("auto", hysteresis=False)
    assert enhancer(textured(0.30)).applied
    assert not enhancer(textured(0.42)).applied        # above the dark level: not dark


def test_changing_the_mode_or_resetting_starts_from_not_dark():
    enhancer = LowLightEnhancer("auto")
    assert enhancer(textured(0.30)).applied
    enhancer.reset()
    assert not enhancer(textured(0.42)).applied
    assert enhancer(textured(0.30)).applied
    enhancer.mode = "auto"
    assert not enhancer(textured(0.42)).applied


class SeeingDetector:
    """Finds no face; remembers how bright each image it was given was."""

    def __init__(self):
        self.seen: list[float] = []

    def detect(self, image):
        self.seen.append(float(image.mean()))
        return Faces.empty()


def test_the_engine_detects_in_the_enhanced_frame_and_reports_it():
    detector = SeeingDetector()
    pipeline = FacePipeline(detector, [FakeFrameStage()], enhancer=LowLightEnhancer("auto"))
    frames = [textured(level, seed) for seed, (level, _) in enumerate(SEQUENCE)]
    results = [pipeline.process(f, i, i / 25.0) for i, f in enumerate(frames)]
    assert [r.enhancement.applied for r in results] == [want for _, want in SEQUENCE]
    for result, frame, seen, (_, want) in zip(results, frames, detector.seen, SEQUENCE):
        assert (result.image is frame) is not want
        assert bool(seen > 1.3 * frame.mean()) == want      # the detector saw the enhanced one
        assert ("enhance" in result.timings) and result.faces.enhancement is result.enhancement
    pipeline.reset()                                        # a new stream starts "not dark"
    assert not pipeline.process(textured(0.42), 0, 0.0).enhancement.applied


def test_a_pipeline_from_config_enhances_in_auto_unless_told_otherwise():
    assert PipelineConfig().enhance == "auto"
    with pytest.raises(ValueError, match="enhance must be one of off, auto, on"):
        PipelineConfig(enhance="bright")
    with pytest.raises(ValueError, match="enhance must be one of"):
        LowLightEnhancer("sometimes")
    with pytest.raises(ValueError, match="method must be one of"):
        LowLightEnhancer("on", "magic")
    assert ENHANCE_MODES == ("off", "auto", "on")


def test_a_track_counts_the_frames_it_was_seen_enhanced():
    from mobileface.track.memory import MemoryLimits, TrackState

    state = TrackState(1, 0, 0.0, MemoryLimits())
    for i, enhanced in enumerate((True, True, False)):
        state.seen(i, i / 25.0, None, enhanced)
    assert state.summary(None, None).to_record()["enhanced_frames"] == 2


def test_the_decision_on_every_fourth_row_is_the_full_thumbnails_on_the_shared_data():
    """auto measures every 4th row (nearly free); on real frames and photos, as they are and
    darkened, that moves the level a little, and to the other side of a level only for a
    frame that was on it already (within 2 grey levels)."""
    import glob

    from conftest import DATA, shared_file
    from mobileface.enhance.methods import DECISION_ROW_STEP

    images = []
    for clip in ("mobileface/friends1.mp4", "face_recognition/short_hamilton_clip.mp4"):
        capture = cv2.VideoCapture(str(shared_file(clip)))
        for index in range(1000):
            ok, frame = capture.read()
            if not ok:
                break
            if index % 10 == 0:
                images.append(frame)
        capture.release()
    images += [cv2.imread(p) for p in sorted(glob.glob(str(DATA / "face_recognition" / "*.jpg")))]
    rng = np.random.default_rng(0)
    levels = []
    for image in images:
        for light in (1.0, 0.3, 0.15):
            frame = image if light == 1.0 else jpeg(darken(image, light, rng))
            levels.append((Thumbnail.of(frame).brightness,
                           Thumbnail.of(frame, DECISION_ROW_STEP).brightness))
    full, sampled = np.array(levels).T
    assert len(full) > 100
    assert np.abs(sampled - full).max() <= 10 / 255 and abs((sampled - full).mean()) < 1 / 255
    for level in (DARK_LEVEL, BRIGHT_LEVEL):
        flipped = (sampled < level) != (full < level)
        assert flipped.mean() <= 0.01
        assert (np.abs(full[flipped] - level) <= 2 / 255).all()
