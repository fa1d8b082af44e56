"""Detection every k frames with re-finding in between (mobileface.track.refind), on real
video with the real models."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import load_bgr, shared_file
from mobileface.detect.boxes import iou_matrix
from mobileface.eval.bench import read_frames
from mobileface.io.video import VideoSource
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.pipeline.runner import VideoRunner
from mobileface.track.refind import box_from_points, box_on_points, kps5_from_landmarks

CUTS = [20, 82, 211]           # the Hamilton clip's scene cuts (tests/test_pipeline.py)
FPS = 29.97


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return read_frames(shared_file("face_recognition/short_hamilton_clip.mp4"))[0]


def _pipeline(every: int, **settings) -> FacePipeline:
    return FacePipeline.from_config(PipelineConfig(det_size=480, detect_every=every,
                                                   recognition=False, attributes=False,
                                                   **settings))


def _run(pipeline: FacePipeline, frames) -> list:
    results = [pipeline.process(frame, i, i / FPS) for i, frame in enumerate(frames)]
    pipeline.finish()
    return results


@pytest.fixture(scope="module")
def every_frame(clip):
    return _run(_pipeline(1), clip)


@pytest.fixture(scope="module")
def scheduled(clip):
    return _run(_pipeline(3), clip)


def test_detecting_every_frame_is_what_detect_every_1_does(every_frame):
    assert {r.faces.found_by for r in every_frame} == {"detector"}


def test_the_detector_skips_frames_and_the_faces_are_still_there(every_frame, scheduled):
    found_by = [r.faces.found_by for r in scheduled]
    assert found_by.count("tracks") > len(found_by) / 3
    assert found_by[0] == "detector"
    # every third frame, counted from the first, and every cut is a detector frame
    assert all(found_by[i] == "detector" for i in range(0, len(found_by), 3))
    assert all(found_by[i] == "detector" for i in CUTS)
    matched = total = 0
    for ref, got in zip(every_frame, scheduled):
        a, b = ref.detected.boxes, got.detected.boxes
        total += len(a)
        if len(a) and len(b):
            iou = iou_matrix(a, b)
            matched += int((iou.max(1) >= 0.5).sum())
    assert matched / total >= 0.95          # measured 0.978 (benchmark/scheduling.py)


def test_refound_faces_have_every_column_and_stay_on_their_face(scheduled):
    refound = [r for r in scheduled if r.faces.found_by == "tracks" and len(r.detected)]
    assert refound
    for result in refound:
        faces = result.detected
        assert faces.landmarks68.shape == (len(faces), 68, 2)
        assert faces.kps5.shape == (len(faces), 5, 2)
        assert np.isfinite(faces.pose).all() and np.isfinite(faces.quality).all()
        assert (faces.track_id > 0).all()       # only confirmed tracks are re-found
        # the box sits on the points: the eyes and mouth lie inside it
        inside = ((faces.kps5[..., 0] >= faces.boxes[:, None, 0]) &
                  (faces.kps5[..., 0] <= faces.boxes[:, None, 2]) &
                  (faces.kps5[..., 1] >= faces.boxes[:, None, 1]) &
                  (faces.kps5[..., 1] <= faces.boxes[:, None, 3]))
        assert inside.all()


def _face(size: tuple[int, int]) -> np.ndarray:
    """Obama's face (cut from obama.jpg, where the detector finds it at 372-609 x 88-426)."""
    return cv2.resize(load_bgr("face_recognition/obama.jpg")[50:470, 330:650], size)


def test_a_new_face_appears_within_k_frames_and_one_seen_once_is_never_confirmed(clip):
    face = _face((120, 150))

    background = np.full_like(clip[30], 90)                  # no face of its own

    def with_face(frames, present):
        out = []
        for i, frame in enumerate(frames):
            frame = frame.copy()
            if i in present:
                frame[10:160, 500:620] = face
            out.append(frame)
        return out

    frames = [background] * 50
    k = 4
    results = _run(_pipeline(k), with_face(frames, set(range(9, 50))))
    first = next(i for i, r in enumerate(results)
                 if any(iou_matrix(r.detected.boxes, np.array([[500, 10, 620, 160]])).ravel()
                        >= 0.3))
    assert 9 <= first < 9 + k
    # the detector ran on the next frame as well, which confirmed the new track
    assert results[first + 1].faces.found_by == "detector"
    assert results[first + 2].detected.track_id.max() > 0

    # shown on one detector frame only: a tentative track, never given an id, never re-found
    results = _run(_pipeline(k), with_face(frames, {12}))
    assert results[12].faces.found_by == "detector"
    assert len(results[12].detected) == 1 and results[12].detected.track_id[0] == -1
    assert not any(len(r.detected) for i, r in enumerate(results) if i != 12)


def test_a_face_that_jumps_away_from_its_forecast_is_found_by_the_detector(clip):
    face = _face((100, 125))
    background = np.full_like(clip[30], 90)                  # no face of its own
    frames = []
    for i in range(30):
        frame = background.copy()
        # steady for 15 frames, then jumping 30 px left and right, which no forecast follows
        x = 200 + 2 * i if i < 15 else 230 + (30 if i % 2 else -30)
        frame[200:325, x:x + 100] = face
        frames.append(frame)
    results = _run(_pipeline(6), frames)
    found_by = [r.faces.found_by for r in results]
    steady, jumping = found_by[3:15], found_by[17:26]
    assert steady.count("tracks") >= 6
    assert jumping.count("detector") >= len(jumping) - 1
    for i, result in enumerate(results[15:], 15):   # and every frame has the face where it is
        x = 230 + (30 if i % 2 else -30)
        assert iou_matrix(result.detected.boxes, np.array([[x, 200, x + 100, 325]])).max() > 0.3


def test_the_detection_thread_and_the_inline_detector_give_the_same_frames():
    path = shared_file("face_recognition/short_hamilton_clip.mp4")
    boxes = {}
    for threaded in (True, False):
        pipeline = _pipeline(3)
        seen = []
        VideoRunner(VideoSource(str(path)), pipeline, [], detect_thread=threaded,
                    on_result=lambda frame, result: seen.append(
                        (result.faces.found_by, result.detected.boxes.copy()))).run()
        boxes[threaded] = seen
    assert len(boxes[True]) == len(boxes[False]) == 275
    for (how_a, a), (how_b, b) in zip(boxes[True], boxes[False]):
        assert how_a == how_b and np.array_equal(a, b)


def test_a_box_placed_back_on_its_points_is_the_same_box():
    rng = np.random.default_rng(3)
    points = rng.normal(200, 30, (4, 68, 2))
    boxes = np.array([[150, 140, 260, 280], [0, 0, 50, 60], [10, 20, 30, 40], [100, 90, 300, 330]],
                     np.float32)
    placement = box_on_points(boxes, points)
    assert np.allclose(box_from_points(placement, points), boxes, atol=1e-3)
    moved = points * 1.5 + 40            # the points move and grow: so does the box
    assert np.allclose(box_from_points(placement, moved), boxes * 1.5 + 40, atol=1e-2)


def test_the_five_points_come_from_the_68_in_the_detector_order():
    points = np.zeros((1, 68, 2), np.float32)
    points[0, 36:42] = (10, 5)      # the subject's right eye, on the image's left
    points[0, 42:48] = (30, 5)
    points[0, 30] = (20, 15)
    points[0, 48], points[0, 54] = (12, 25), (28, 25)
    assert kps5_from_landmarks(points).tolist() == [[[10, 5], [30, 5], [20, 15], [12, 25],
                                                     [28, 25]]]


def test_detect_every_must_be_positive():
    with pytest.raises(ValueError, match="detect_every"):
        PipelineConfig(detect_every=0)
