"""Grouping the best shots of unknown tracks (no Qt needed)."""
from __future__ import annotations

import numpy as np
import pytest

from mobileface.gui.unknowns import UnknownFaces
from mobileface.identity.gallery import UNKNOWN, normalise
from mobileface.track.memory import TrackSummary


def _summary(track_id, embedding, quality=0.5, identity=UNKNOWN, frames=30):
    return TrackSummary(track_id=track_id, identity=identity, similarity=None, first_frame=0,
                        last_frame=frames, first_time=0.0, last_time=1.0, frames=frames,
                        age=30.0, gender="male", gender_confidence=0.9, best_quality=quality,
                        pose_range={}, best_shot=np.full((40, 30, 3), track_id, np.uint8),
                        embedding=normalise(np.asarray(embedding, np.float32)))


def _people(seed=0):
    """Two 'people': embeddings scattered around two directions (cosine ~0.97 within,
    ~0.1 between)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 128))
    return ([a + 0.15 * np.linalg.norm(a) / np.sqrt(128) * rng.normal(size=128) for _ in range(4)],
            [b + 0.15 * np.linalg.norm(b) / np.sqrt(128) * rng.normal(size=128) for _ in range(3)])


def test_shots_of_the_same_face_form_one_group():
    first, second = _people()
    unknowns = UnknownFaces(threshold=0.9)
    summaries = [_summary(i + 1, e, 0.4 + 0.1 * i) for i, e in enumerate(first)]
    summaries += [_summary(i + 10, e) for i, e in enumerate(second)]
    assert unknowns.update(1, summaries, final=True)
    groups = unknowns.groups()
    assert [sorted(k[1] for k in g.keys) for g in groups] == [[1, 2, 3, 4], [10, 11, 12]]
    assert groups[0].best.key == (1, 4)          # the best quality
    # a strict threshold splits everything apart
    unknowns.threshold = 0.999
    assert len(unknowns.groups()) == 7


def test_live_shots_improve_and_ended_ones_are_final():
    (a, a2, *_), (b, *_) = _people(1)
    unknowns = UnknownFaces(threshold=0.9)
    assert not unknowns.update(1, [_summary(1, a, 0.4, frames=5)], final=False)   # too new
    assert unknowns.update(1, [_summary(1, a, 0.4, frames=20)], final=False)
    assert not unknowns.update(1, [_summary(1, a2, 0.3)], final=False)   # not better
    assert unknowns.update(1, [_summary(1, a2, 0.6)], final=False)
    assert unknowns.shots[(1, 1)].quality == 0.6
    assert unknowns.update(1, [_summary(1, a, 0.5)], final=True)
    assert not unknowns.update(1, [_summary(1, b, 0.9)], final=False)    # ended: final
    assert unknowns.shots[(1, 1)].final and unknowns.shots[(1, 1)].quality == 0.5
    # ids restart with every run: the same id in run 2 is another track
    unknowns.update(2, [_summary(1, b, 0.7)], final=False)
    assert set(unknowns.shots) == {(1, 1), (2, 1)}


def test_a_track_that_gets_a_name_leaves_and_a_run_end_drops_unfinished_shots():
    (a, *_), (b, c, *_) = _people(2)
    unknowns = UnknownFaces(threshold=0.9)
    unknowns.update(1, [_summary(1, a), _summary(2, b), _summary(3, c)], final=False)
    unknowns.update(1, [_summary(1, a, identity="Ada")], final=False)
    assert set(unknowns.shots) == {(1, 2), (1, 3)}
    unknowns.update(1, [_summary(2, b)], final=True)
    unknowns.end_run(1)                            # track 3 never ended (merged into another)
    assert set(unknowns.shots) == {(1, 2)}
    unknowns.remove([(1, 2)])
    assert len(unknowns) == 0


def test_tracks_without_a_shot_or_an_embedding_are_left_out_and_the_size_is_bounded():
    first, second = _people(3)
    unknowns = UnknownFaces(threshold=0.9, limit=3)
    bare = _summary(1, first[0])
    bare.embedding = None
    assert not unknowns.update(1, [bare], final=True)
    unknowns.update(1, [_summary(i + 2, e, quality=0.1 * (i + 1))
                        for i, e in enumerate(first + second)], final=True)
    assert len(unknowns) == 3
    assert sorted(s.quality for s in unknowns.shots.values()) == pytest.approx([0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="limit"):
        UnknownFaces(0.9, limit=0)


def test_complete_linkage_does_not_chain_and_poor_shots_are_left_out():
    rng = np.random.default_rng(4)
    base, step = rng.normal(size=(2, 128))
    step -= base * (step @ base) / (base @ base)          # orthogonal to base
    step *= 0.45 * np.linalg.norm(base) / np.linalg.norm(step)
    a, b, c = base, base + step, base + 2 * step          # a~b, b~c, a and c further apart
    sims = normalise(np.stack([a, b, c]))
    sims = sims @ sims.T
    assert sims[0, 1] > 0.9 and sims[1, 2] > 0.9 and sims[0, 2] < 0.9
    unknowns = UnknownFaces(threshold=0.9)
    unknowns.update(1, [_summary(1, b, 0.9), _summary(2, a, 0.8), _summary(3, c, 0.7),
                        _summary(4, a, 0.2)], final=True)    # track 4: too poor to enrol
    groups = sorted(sorted(k[1] for k in g.keys) for g in unknowns.groups())
    assert groups == [[1, 2], [3]]
