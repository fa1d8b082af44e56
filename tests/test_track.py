"""SORT tracker on synthetic boxes: stable ids, misses, sessions, reset, re-identification."""
from __future__ import annotations

import numpy as np
import pytest

from mobileface.track.sort import SortTracker
from mobileface.types import Faces


def _faces(boxes, scores=None) -> Faces:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Faces(boxes, np.ones(len(boxes), np.float32) if scores is None else scores)


def _update(tracker: SortTracker, boxes, scores=None, timestamp=None) -> Faces:
    return tracker.update(_faces(boxes, scores), timestamp=timestamp)


def _ids(tracks: Faces) -> list[int]:
    """The confirmed tracks of an update, detected or predicted, sorted."""
    return sorted(tracks.track_id[tracks.track_id > 0].tolist())


def _box(x: float, y: float, size: float = 80.0) -> np.ndarray:
    return np.array([x, y, x + size, y + size], np.float32)


def _walk(frame: int) -> np.ndarray:
    """Two faces moving steadily in opposite directions, well apart."""
    return np.stack([_box(100 + 4 * frame, 100), _box(600 - 3 * frame, 300 + 2 * frame)])


def test_ids_stay_stable_through_a_five_frame_miss():
    tracker = SortTracker(max_age=8)
    ids_seen = {}
    for frame in range(40):
        boxes = _walk(frame)
        scores = np.array([0.99, 0.95], np.float32)
        missing = 15 <= frame < 20  # the second face is not detected for 5 frames
        if missing:
            boxes, scores = boxes[:1], scores[:1]
        tracks = _update(tracker, boxes, scores, timestamp=frame / 25)
        ids = tracks.track_id[~tracks.predicted]
        assert len(ids) == len(boxes) and (ids > 0).all()
        for row, tid in enumerate(ids):
            ids_seen.setdefault(row, set()).add(int(tid))
        if missing:
            # the lost face is still reported, as a predicted box near where it would be
            coasting = tracks.predicted
            assert coasting.sum() == 1
            assert np.flatnonzero(coasting)[0] == len(boxes) and tracks.scores[coasting][0] == 0
            predicted_box = tracks.boxes[coasting][0]
            assert np.abs(predicted_box - _walk(frame)[1]).max() < 12
        else:
            assert not tracks.predicted.any()
            np.testing.assert_array_equal(tracks.boxes, boxes)  # the detections, in their order
    assert ids_seen == {0: {1}, 1: {2}}


def test_each_output_row_is_its_detection_with_its_score():
    tracker = SortTracker()
    for frame in range(2):
        _update(tracker, _walk(frame), np.array([0.9, 0.7], np.float32))
    # the detector lists the faces in the other order: each track keeps its face
    tracks = _update(tracker, _walk(2)[::-1], np.array([0.7, 0.9], np.float32))
    np.testing.assert_array_equal(tracks.track_id, [2, 1])
    order = np.argsort(tracks.track_id)
    np.testing.assert_allclose(tracks.scores[order], [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(tracks.boxes[order], _walk(2), atol=1e-4)


def test_ids_restart_in_a_new_session_and_after_reset():
    first = SortTracker()
    for frame in range(5):
        _update(first, _walk(frame))
    # a third face appears: id 3 in this session
    tracks = None
    for frame in range(5, 9):
        tracks = _update(first, np.vstack([_walk(frame), _box(900, 50)]))
    assert _ids(tracks) == [1, 2, 3]

    second = SortTracker()  # ids belong to the instance
    tracks = _update(second, _walk(0)[:1])
    assert tracks.track_id.tolist() == [1]

    first.reset()
    assert first.live_ids == []
    tracks = _update(first, _walk(30)[1:])
    assert tracks.track_id.tolist() == [1]


def test_a_one_frame_false_detection_gets_no_id_and_ids_stay_consecutive():
    tracker = SortTracker(min_hits=2)
    for frame in range(4):
        _update(tracker, _walk(frame))
    tracks = _update(tracker, np.vstack([_walk(4), _box(1000, 600)]))  # a blip
    assert _ids(tracks) == [1, 2] and tracks.track_id[2] == -1
    for frame in range(5, 8):
        tracks = _update(tracker, np.vstack([_walk(frame), _box(300, 600 + frame)]))
    assert _ids(tracks) == [1, 2, 3]


def test_finished_ids_are_reported_once_after_max_age():
    tracker = SortTracker(max_age=3, reid_seconds=0)
    for frame in range(5):
        _update(tracker, _walk(frame))
    finished = []
    for frame in range(5, 12):
        _update(tracker, _walk(frame)[:1])
        finished += tracker.finished
    assert finished == [2]
    assert tracker.flush() == [1]


def _lose_track_two(tracker: SortTracker, appearance: np.ndarray, until: int) -> None:
    for frame in range(5):
        _update(tracker, _walk(frame), timestamp=frame)
    tracker.set_appearance(2, appearance)
    for frame in range(5, until):
        _update(tracker, _walk(frame)[:1], timestamp=frame)


def test_a_returning_face_takes_back_its_id():
    rng = np.random.default_rng(0)
    face = rng.normal(size=128)
    tracker = SortTracker(max_age=2, reid_seconds=10)
    _lose_track_two(tracker, face, until=9)
    assert tracker.live_ids == [1]
    # the same face comes back elsewhere: a new track, confirmed as id 3 ...
    for frame in range(9, 11):
        tracks = _update(tracker, np.vstack([_walk(frame)[:1], _box(50, 500)]), timestamp=frame)
    assert _ids(tracks) == [1, 3]
    # ... whose first embedding matches the lost track 2: it becomes 2 again
    assert tracker.set_appearance(3, face + rng.normal(scale=0.05, size=128)) == 2
    tracks = _update(tracker, np.vstack([_walk(11)[:1], _box(52, 500)]), timestamp=11)
    assert _ids(tracks) == [1, 2]
    assert tracker.finished == []  # id 2 lives on; 3 is retired, not finished


def test_reidentification_needs_the_same_face_within_the_time_window():
    rng = np.random.default_rng(1)
    face = rng.normal(size=128)
    # a different face does not take the id
    tracker = SortTracker(max_age=2, reid_seconds=10)
    _lose_track_two(tracker, face, until=9)
    for frame in range(9, 11):
        _update(tracker, np.vstack([_walk(frame)[:1], _box(50, 500)]), timestamp=frame)
    assert tracker.set_appearance(3, rng.normal(size=128)) == 3
    # too late: the lost id has finished
    tracker = SortTracker(max_age=2, reid_seconds=3)
    finished = []
    for frame in range(5):
        _update(tracker, _walk(frame), timestamp=frame)
    tracker.set_appearance(2, face)
    for frame in range(5, 20):
        _update(tracker, _walk(frame)[:1], timestamp=frame)
        finished += tracker.finished
    assert finished == [2]
    for frame in range(20, 22):
        _update(tracker, np.vstack([_walk(frame)[:1], _box(50, 500)]), timestamp=frame)
    assert tracker.set_appearance(3, face) == 3


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        SortTracker(max_age=-1)
    with pytest.raises(ValueError):
        SortTracker(min_hits=0)
    with pytest.raises(ValueError):
        SortTracker(iou_threshold=1.5)
    tracker = SortTracker()
    with pytest.raises(ValueError, match="rows"):
        _update(tracker, np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="Faces"):
        tracker.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no live track"):
        tracker.set_appearance(7, np.ones(4))


def test_no_detections_gives_empty_output():
    tracks = _update(SortTracker(), np.zeros((0, 4)))
    assert len(tracks) == 0 and tracks.boxes.shape == (0, 4)


def test_a_scene_cut_ends_every_track():
    tracker = SortTracker(reid_seconds=0)
    for frame in range(4):
        _update(tracker, _walk(frame), timestamp=frame)
    tracker.cut()
    # the next shot has a face exactly where face 1 was: it must not inherit id 1
    tracks = _update(tracker, _walk(3)[:1], timestamp=4)
    assert sorted(tracker.finished) == [1, 2]
    assert _ids(tracks) == []  # the new face is not confirmed yet
    tracks = _update(tracker, _walk(3)[:1], timestamp=5)
    assert tracks.track_id.tolist() == [3]


def test_the_assignment_is_the_optimal_one_that_scipy_finds():
    """Our Hungarian method (no scipy import in the first frames) against scipy's, on
    random matrices with and without ties and with empty rows or columns."""
    from scipy.optimize import linear_sum_assignment as scipy_assignment

    from mobileface.track.assignment import linear_sum_assignment

    rng = np.random.default_rng(7)
    for trial in range(400):
        n, m = rng.integers(0, 9, 2)
        cost = rng.random((n, m))
        if trial % 2:
            cost = np.round(cost * 4) / 4          # ties: the total must still be optimal
        rows, cols = linear_sum_assignment(cost)
        ref_rows, ref_cols = scipy_assignment(cost)
        assert len(rows) == min(n, m) and len(set(cols.tolist())) == len(cols)
        assert list(rows) == sorted(rows)
        assert cost[rows, cols].sum() == pytest.approx(cost[ref_rows, ref_cols].sum(), abs=1e-9)
        if not trial % 2:                           # no ties: the very same pairs
            assert (rows == ref_rows).all() and (cols == ref_cols).all()


def test_the_predicted_boxes_are_the_next_updates_predictions():
    tracker = SortTracker()
    for frame in range(6):
        _update(tracker, _walk(frame))
    ahead = tracker._tracks.predicted_boxes()          # (tracks, 4), nothing advanced
    np.testing.assert_array_equal(tracker._tracks.predicted_boxes(), ahead)
    tracks = _update(tracker, np.zeros((0, 4)))         # both missed: their predictions
    np.testing.assert_allclose(tracks.boxes[tracks.predicted], ahead, rtol=1e-6)
    # the public forecast: the confirmed tracks seen in the last frame, keyed as `keys` says
    tracker = SortTracker()
    for frame in range(6):
        _update(tracker, _walk(frame))
    keys, boxes = tracker.forecast()
    np.testing.assert_array_equal(boxes, tracker._tracks.predicted_boxes())
    assert sorted(keys.tolist()) == sorted(tracker.keys.tolist()) and len(set(keys.tolist())) == 2
