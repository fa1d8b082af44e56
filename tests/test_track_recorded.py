"""The tracker on real detections: the same ids, boxes and finished ids as the reference
(filterpy's KalmanFilter per track, commit 7af6a80), recorded in tests/data/clip_faces.npz."""
from __future__ import annotations

import numpy as np
import pytest

import track_replay
from mobileface.track.sort import SortTracker


@pytest.fixture(scope="module")
def data():
    return track_replay.load()


@pytest.mark.parametrize("clip", track_replay.CLIPS)
def test_the_same_tracks_as_the_reference_on_a_real_clip(data, clip):
    got = track_replay.replay(SortTracker(), data, clip)
    for key in ("frame", "track_id", "predicted", "finished", "finished_frame", "flushed"):
        np.testing.assert_array_equal(got[key], data[f"{clip}_sort_{key}"], err_msg=key)
    # detected rows are the detections themselves; predicted ones come from the filter
    np.testing.assert_allclose(got["boxes"], data[f"{clip}_sort_boxes"], rtol=0, atol=1e-3)
