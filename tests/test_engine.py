"""The video engine (FacePipeline) made of fake parts: scheduling, voting, tracking, modes.

No model and no ../shared: the detector, the frame stage and the per-track
stages are the fakes of tests/fakes.py, so every number here is exact.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fakes import (FakeDetector, FakeEmbedder, FakeFrameStage, box_at, fake_pipeline,
                   make_frame, names_by_track, run_frames)
from mobileface.identity.gallery import UNKNOWN
from mobileface.outputs.annotators import Overlay, OverlayOptions
from mobileface.pipeline import FacePipeline, PipelineConfig, RunningMode
from mobileface.stages.base import Stage, order_stages
from mobileface.track.scene_cut import SceneCutDetector
from mobileface.types import Faces


def _one(who, quality=0.9, x=100.0):
    """A script: one face, ``who``, always at the same place."""
    return lambda i: [(box_at(x), who, quality)]


def _rising(who, x=100.0, start=0.5):
    """One face whose quality rises a little every frame (with quality_gain=0, every frame
    gets per-track work: each frame is one recognition decision)."""
    return lambda i: [(box_at(x), who, start + 0.001 * i)]


def _name_of(result, row=0) -> str:
    return str(result.faces.identity[row])


# -- 1. the parts make an engine ---------------------------------------------------------


def test_a_pipeline_of_fake_parts_names_each_enrolled_person_on_their_own_track():
    parts = fake_pipeline(lambda i: [(box_at(20), "ada"), (box_at(200), "bob")])
    results = run_frames(parts.pipeline, range(12))
    names = names_by_track(results[11])
    assert sorted(names.values()) == ["ada", "bob"] and len(names) == 2
    by_x = {float(b[0]): str(n) for b, n in zip(results[11].faces.boxes,
                                                 results[11].faces.identity)}
    assert by_x == {20.0: "ada", 200.0: "bob"}
    summaries = parts.pipeline.finish()
    assert sorted(s.identity for s in summaries) == ["ada", "bob"]
    assert all(s.similarity == pytest.approx(1.0) for s in summaries)
    assert {s.gender for s in summaries} == {"female", "male"}        # the attributes stage
    assert parts.pipeline.states == {}


# -- 2. scheduling of the per-track work ------------------------------------------------


def test_per_track_work_runs_when_new_rechecking_better_or_back_not_every_frame():
    # quality 0.5 until frame 19, 0.6 at 20 (better by more than quality_gain), 0.62 after
    # (not better by enough); missed on frames 25-31 (7 >= reappear_frames) and on 40 (one
    # frame: not a reappearance)
    def script(i):
        if 25 <= i <= 31 or i == 40:
            return []
        return [(box_at(100), "ada", 0.5 if i < 20 else 0.6 if i == 20 else 0.62)]

    parts = fake_pipeline(script, recheck_frames=5, quality_gain=0.05, reappear_frames=5)
    results = run_frames(parts.pipeline, range(46))
    # new at 0; identity re-checks at 5 and 10 until confirmed (3 votes); better at 20;
    # back at 32
    assert parts.embedder.frames_of(1) == [0, 5, 10, 20, 32]
    # the re-checks are for the identity only: age and gender do not run on them
    assert parts.attributes.frames_of(1) == [0, 20, 32]
    assert sum(r.recognised for r in results.values()) == 5
    assert all(tid == 1 for r in results.values() for tid in r.faces.track_id)


def test_rechecks_go_on_every_recheck_frames_while_the_identity_is_unconfirmed():
    parts = fake_pipeline(_one("ada", 0.5), recheck_frames=4, confirm_votes=6, vote_window=9)
    run_frames(parts.pipeline, range(40))
    # confirmed after 6 decisions: 0, 4, 8, 12, 16, 20; nothing after
    assert parts.embedder.frames_of(1) == [0, 4, 8, 12, 16, 20]


def test_max_per_frame_caps_the_per_track_work_and_the_others_wait_their_turn():
    xs = [0, 60, 120, 180, 240]
    parts = fake_pipeline(lambda i: [(box_at(x, size=50), "stranger") for x in xs],
                          max_per_frame=2)
    results = run_frames(parts.pipeline, range(6))
    assert [results[i].recognised for i in range(4)] == [2, 2, 1, 0]
    per_frame = {}
    for frame, tid, _ in parts.embedder.calls:
        per_frame.setdefault(frame, []).append(tid)
    assert max(len(v) for v in per_frame.values()) <= 2
    assert sorted(t for f in (0, 1, 2) for t in per_frame[f]) == [1, 2, 3, 4, 5]


# -- 3. voting with hysteresis ------------------------------------------------------------


def test_one_stray_decision_does_not_switch_the_name():
    def script(i):
        return [(box_at(100), "bob" if i == 3 else "ada", 0.5 + 0.001 * i)]

    parts = fake_pipeline(script, quality_gain=0.0, hysteresis=2)
    results = run_frames(parts.pipeline, range(8))
    assert len(parts.embedder.calls) == 8                     # one decision per frame
    assert [_name_of(results[i]) for i in range(8)] == [UNKNOWN] + ["ada"] * 7


@pytest.mark.parametrize("hysteresis", [1, 2, 3])
def test_the_name_switches_once_the_other_person_leads_by_hysteresis(hysteresis):
    # three decisions for ada (frames 0-2), then bob from frame 3 on: bob must get
    # 3 + hysteresis decisions, at frame 5 + hysteresis
    def script(i):
        return [(box_at(100), "ada" if i < 3 else "bob", 0.5 + 0.001 * i)]

    parts = fake_pipeline(script, quality_gain=0.0, hysteresis=hysteresis, vote_window=9)
    results = run_frames(parts.pipeline, range(12))
    names = [_name_of(results[i]) for i in range(12)]
    switch = 5 + hysteresis
    assert names[2:switch] == ["ada"] * (switch - 2)
    assert names[switch:] == ["bob"] * (12 - switch)
    assert names_by_track(results[11]) == {1: "bob"}           # the same track, renamed


# -- 4. unknown by threshold and margin ---------------------------------------------------


@pytest.mark.parametrize("who, expected", [
    ("ada", "ada"),                # the control: an enrolled face is named
    ("ada_or_bob", UNKNOWN),       # as like ada as bob (0.707 each): no margin
    ("faint_ada", UNKNOWN),        # like ada, but below the threshold (0.5 < 0.6)
    ("stranger", UNKNOWN),         # like nobody
])
def test_a_face_is_named_only_past_the_threshold_and_the_margin(who, expected):
    parts = fake_pipeline(_rising(who), quality_gain=0.0, margin=0.03)
    results = run_frames(parts.pipeline, range(10))
    assert {_name_of(results[i]) for i in range(1, 10)} == {expected}
    (summary,) = parts.pipeline.finish()
    assert summary.identity == expected


def test_equally_similar_people_are_told_apart_only_with_no_margin():
    strict = fake_pipeline(_rising("ada_or_bob"), quality_gain=0.0, margin=0.03)
    lax = fake_pipeline(_rising("ada_or_bob"), quality_gain=0.0, margin=0.0)
    assert _name_of(run_frames(strict.pipeline, range(6))[5]) == UNKNOWN
    assert _name_of(run_frames(lax.pipeline, range(6))[5]) in ("ada", "bob")


def test_a_stranger_with_noisy_embeddings_is_never_named():
    stranger = fake_pipeline(_rising("stranger"), enrolled=("ada", "bob", "cyd"),
                             quality_gain=0.0, noise=0.2)
    ada = fake_pipeline(_rising("ada"), enrolled=("ada", "bob", "cyd"), quality_gain=0.0,
                        noise=0.2)
    strange = run_frames(stranger.pipeline, range(60))
    known = run_frames(ada.pipeline, range(60))
    assert len(stranger.embedder.calls) == 60                     # 60 decisions
    assert {_name_of(r) for r in strange.values()} == {UNKNOWN}
    assert {_name_of(known[i]) for i in range(5, 60)} == {"ada"}  # the same noise: named


# -- 5. set_threshold ----------------------------------------------------------------------


def test_set_threshold_revotes_the_live_tracks_at_once():
    parts = fake_pipeline(_one("faint_ada", 0.5))       # 0.5 like ada; threshold 0.6
    pipeline = parts.pipeline
    results = run_frames(pipeline, range(12))
    assert _name_of(results[11]) == UNKNOWN
    calls = len(parts.embedder.calls)
    pipeline.set_threshold(0.45)
    assert pipeline.threshold == 0.45
    assert [s.identity for s in pipeline.live_summaries()] == ["ada"]   # before any frame
    assert len(parts.embedder.calls) == calls                           # no re-embedding
    assert _name_of(run_frames(pipeline, [12])[12]) == "ada"
    pipeline.set_threshold(None)                                        # the embedder's own
    assert pipeline.threshold == pytest.approx(0.6)
    assert [s.identity for s in pipeline.live_summaries()] == [UNKNOWN]


def test_set_threshold_with_a_margin_revotes_a_tie():
    parts = fake_pipeline(_one("ada_or_bob", 0.5))
    run_frames(parts.pipeline, range(12))
    assert [s.identity for s in parts.pipeline.live_summaries()] == [UNKNOWN]
    parts.pipeline.set_threshold(None, margin=0.0)
    assert parts.pipeline.live_summaries()[0].identity in ("ada", "bob")


@pytest.mark.parametrize("bad", [1.5, -2.0])
def test_a_threshold_outside_minus_one_to_one_is_refused_and_the_old_one_kept(bad):
    parts = fake_pipeline(_one("ada"))
    run_frames(parts.pipeline, range(6))
    with pytest.raises(ValueError, match="threshold"):
        parts.pipeline.set_threshold(bad)
    assert parts.pipeline.threshold == pytest.approx(0.6)
    assert _name_of(run_frames(parts.pipeline, [6])[6]) == "ada"


# -- 6. low quality ------------------------------------------------------------------------


def test_faces_below_min_quality_do_not_vote():
    # quality rising a little every frame, with quality_gain=0: per-track work on every
    # frame, but the poor face stays under min_quality (0.2-0.23 < 0.3)
    poor = fake_pipeline(_rising("ada", start=0.2), min_quality=0.3, quality_gain=0.0)
    good = fake_pipeline(_rising("ada", start=0.3), min_quality=0.3, quality_gain=0.0)
    poor_results = run_frames(poor.pipeline, range(30))
    good_results = run_frames(good.pipeline, range(30))
    assert len(poor.embedder.calls) == 30                # embedded on every frame ...
    assert {_name_of(r) for r in poor_results.values()} == {UNKNOWN}   # ... never counted
    assert {_name_of(good_results[i]) for i in range(1, 30)} == {"ada"}
    (summary,) = poor.pipeline.finish()
    assert summary.identity == UNKNOWN
    assert summary.similarity is None or math.isnan(summary.similarity)


def test_a_track_that_gets_good_later_is_named_from_its_good_faces():
    parts = fake_pipeline(lambda i: [(box_at(100), "ada", 0.2 if i < 10 else 0.5)],
                          min_quality=0.3, recheck_frames=5)
    results = run_frames(parts.pipeline, range(20))
    assert {_name_of(results[i]) for i in range(10)} == {UNKNOWN}
    assert _name_of(results[19]) == "ada"


# -- 7. re-identification -------------------------------------------------------------------


def _gone_and_back(first: str, second: str):
    """``first`` at x=40 on frames 0-9, nobody on 10-29 (longer than max_age=15),
    ``second`` at x=200 (no overlap: the tracker alone cannot link them) on 30-39."""
    def script(i):
        if i < 10:
            return [(box_at(40), first)]
        if i < 30:
            return []
        return [(box_at(200), second)]
    return script


def test_a_face_back_after_max_age_within_reid_seconds_gets_its_old_track_id():
    parts = fake_pipeline(_gone_and_back("ada", "ada"), max_age=15, reid_seconds=3.0)
    results = run_frames(parts.pipeline, range(40))        # 30 fps: back after 0.7 s
    before = {int(t) for i in range(10) for t in results[i].faces.track_id if t > 0}
    after = {int(t) for i in range(31, 40) for t in results[i].faces.track_id}
    assert before == {1} and after == {1}
    assert not any(r.finished for r in results.values())    # never reported as finished
    (summary,) = parts.pipeline.finish()
    assert (summary.track_id, summary.first_frame, summary.last_frame) == (1, 0, 39)
    assert summary.identity == "ada"


def test_someone_else_back_at_that_moment_gets_a_new_track_id():
    parts = fake_pipeline(_gone_and_back("ada", "bob"), max_age=15, reid_seconds=3.0)
    results = run_frames(parts.pipeline, range(40))
    assert names_by_track(results[39]) == {2: "bob"}


def test_a_face_back_after_reid_seconds_gets_a_new_track_id():
    parts = fake_pipeline(_gone_and_back("ada", "ada"), max_age=15, reid_seconds=0.2)
    results = run_frames(parts.pipeline, range(40))
    assert names_by_track(results[39]) == {2: "ada"}
    assert [s.track_id for r in results.values() for s in r.finished] == [1]


# -- 8. scene cuts ----------------------------------------------------------------------------


def _shots(i):
    return (60, 60, 60) if i < 10 else (200, 200, 200)


def test_a_scene_cut_ends_every_track_and_the_next_shot_gets_new_ids():
    parts = fake_pipeline(lambda i: [(box_at(40), "ada"), (box_at(200), "bob")], embed=False)
    results = run_frames(parts.pipeline, range(20), colour=_shots)
    before = {int(t) for i in range(10) for t in results[i].faces.track_id}
    after = {int(t) for i in range(11, 20) for t in results[i].faces.track_id}
    assert before == {1, 2} and after == {3, 4}
    assert sorted(s.track_id for s in results[10].finished) == [1, 2]


def test_a_small_change_of_the_frame_is_not_a_cut():
    parts = fake_pipeline(_one("ada"), embed=False)
    results = run_frames(parts.pipeline, range(20),
                         colour=lambda i: (60, 60, 60) if i < 10 else (72, 72, 72))
    assert {int(t) for r in results.values() for t in r.faces.track_id} == {1}
    assert not any(r.finished for r in results.values())
    cuts = SceneCutDetector(20.0)
    assert [cuts(make_frame(0, c)) for c in ((60,) * 3, (72,) * 3, (200,) * 3)] == \
        [False, False, True]


def test_after_a_cut_a_new_face_at_the_same_place_does_not_inherit_the_name():
    parts = fake_pipeline(lambda i: [(box_at(100), "ada" if i < 10 else "bob", 0.5)])
    results = run_frames(parts.pipeline, range(20), colour=_shots)
    assert names_by_track(results[9]) == {1: "ada"}
    later = [names_by_track(results[i]) for i in range(10, 20)]
    assert all("ada" not in names.values() and 1 not in names for names in later)
    assert later[-1] == {2: "bob"}


# -- 9. bounded memory -------------------------------------------------------------------------


def _many_short_tracks(i):
    """A long-lived face (quality rising: per-track work on every frame) and a new
    short-lived face every 10 frames (8 frames each, at a new place)."""
    faces = [(box_at(0, 0, 60), "ada", 0.3 + 0.001 * i)]
    if i % 10 < 8:
        k = i // 10
        faces.append((box_at(80 + (k % 3) * 80, 100, 60), "cyd" if k % 2 else "stranger"))
    return faces


def test_memory_holds_only_the_live_tracks_and_finish_empties_it():
    parts = fake_pipeline(_many_short_tracks, embed=False, quality_gain=0.0, max_age=3,
                          attribute_samples=15)
    pipeline = parts.pipeline
    ids = set()
    for i in range(300):
        result = pipeline.process(make_frame(i), i, i / 30)
        ids |= {int(t) for t in result.faces.track_id if t > 0}
        assert set(pipeline.states) <= set(pipeline.tracker.live_ids)
        assert len(pipeline.states) <= 3
        assert all(len(s.ages) <= 15 and len(s.genders) <= 15 for s in pipeline.states.values())
    assert len(ids) == 31                       # ada and 30 short tracks
    assert len(parts.attributes.frames_of(1)) == 300
    live = set(pipeline.states)
    summaries = pipeline.finish()
    assert {s.track_id for s in summaries} == live and 1 in live
    assert next(s for s in summaries if s.track_id == 1).frames == 300
    assert pipeline.states == {} and pipeline.tracker.live_ids == []


def test_with_recognition_memory_stays_bounded_and_every_track_is_reported_once():
    parts = fake_pipeline(_many_short_tracks, quality_gain=0.0, max_age=3, reid_seconds=0.2,
                          vote_window=9)
    pipeline = parts.pipeline
    reported, ids = [], set()
    for i in range(300):
        result = pipeline.process(make_frame(i), i, i / 30)
        ids |= {int(t) for t in result.faces.track_id if t > 0}
        reported += [s.track_id for s in result.finished]
        assert len(pipeline.states) <= 4
        for state in pipeline.states.values():
            assert len(state.embeddings) <= 9 and len(state.vote.history) <= 9
    reported += [s.track_id for s in pipeline.finish()]
    assert sorted(reported) == sorted(ids) and len(ids) == 31
    assert pipeline.states == {}


# -- 10. running modes ------------------------------------------------------------------------


def test_video_mode_refuses_a_repeated_a_decreasing_or_a_missing_timestamp():
    pipeline = fake_pipeline(_one("ada")).pipeline
    pipeline.process(make_frame(0), 0, 1.0)
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="increasing timestamps"):
            pipeline.process(make_frame(1), 1, bad)
    with pytest.raises(ValueError, match="timestamp"):
        pipeline.process(make_frame(1), 1, None)
    # a refused frame changes nothing: the stream goes on
    result = pipeline.process(make_frame(1), 1, 1.04)
    assert result.faces.timestamp == 1.04 and list(result.faces.track_id) == [1]


def test_stream_mode_stamps_frames_without_a_timestamp_with_the_clock():
    pipeline = fake_pipeline(_one("ada"), mode="stream").pipeline
    assert pipeline.config.mode is RunningMode.STREAM
    stamps = [pipeline.process(make_frame(i)).faces.timestamp for i in range(3)]
    assert all(s is not None for s in stamps) and stamps == sorted(set(stamps))
    with pytest.raises(ValueError, match="increasing"):
        pipeline.process(make_frame(3), 3, stamps[0])


def test_reset_starts_a_new_stream_timestamps_and_ids_again():
    parts = fake_pipeline(lambda i: [(box_at(40 + (i // 5) * 100), "ada")], embed=False,
                          max_age=0)
    pipeline = parts.pipeline
    results = run_frames(pipeline, range(10))
    assert {int(t) for t in results[9].faces.track_id} == {2}
    pipeline.reset()
    assert pipeline.states == {}
    result = pipeline.process(make_frame(0), 0, 0.0)          # time 0 again: accepted
    assert list(result.faces.track_id) == [1]


def test_image_mode_is_refused_by_the_video_engine():
    with pytest.raises(ValueError, match="FaceAnalyzer"):
        FacePipeline(FakeDetector({}), [FakeFrameStage()], config=PipelineConfig(mode="image"))
    with pytest.raises(ValueError, match="video, stream"):
        PipelineConfig(mode="movie")


# -- 11. stage order -----------------------------------------------------------------------


class _Named(Stage):
    def __init__(self, name, requires=(), provides=(), per_track=False):
        self.name, self.requires, self.provides, self.per_track = \
            name, tuple(requires), tuple(provides), per_track

    def process(self, image, faces):
        for column in self.provides:
            faces.set_column(column, np.zeros(len(faces), np.float32))


def test_stages_given_in_the_wrong_order_run_after_what_they_require():
    quality = _Named("quality", ["pose", "landmarks68"], ["quality"])
    pose = _Named("pose", ["landmarks68"], ["pose"])
    points = _Named("landmarks", ["kps5"], ["landmarks68"])
    embed = _Named("embed", ["landmarks68"], ["embedding"])
    ordered = order_stages([quality, embed, pose, points])
    assert [s.name for s in ordered] == ["landmarks", "embed", "pose", "quality"]


def test_a_column_no_stage_provides_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="no stage provides mouth_open"):
        order_stages([_Named("smile", ["mouth_open"], ["smile"])])
    with pytest.raises(ValueError, match="circle"):
        order_stages([_Named("a", ["y"], ["x"]), _Named("b", ["x"], ["y"])])


def test_a_pipeline_needs_a_frame_stage_providing_quality_and_an_embedder_threshold():
    with pytest.raises(ValueError, match="quality"):
        FacePipeline(FakeDetector({}), [_Named("pose", [], ["pose"])])
    with pytest.raises(ValueError, match="quality"):     # per track is too late for quality
        FacePipeline(FakeDetector({}), [_Named("q", [], ["quality"], per_track=True)])
    with pytest.raises(ValueError, match="threshold"):
        FacePipeline(FakeDetector({}), [FakeFrameStage(), FakeEmbedder(threshold=None)])
    pipeline = FacePipeline(FakeDetector({}), [FakeFrameStage(), FakeEmbedder(threshold=None)],
                            config=PipelineConfig(threshold=0.5))
    assert pipeline.threshold == 0.5


# -- 12. timings ---------------------------------------------------------------------------


def test_timings_name_each_step_once_with_its_own_time():
    parts = fake_pipeline(_one("ada"), frame_stage=FakeFrameStage(delay=0.02))
    results = run_frames(parts.pipeline, range(3))
    first, second = results[0].timings, results[1].timings
    assert {"detect", "track", "fake_frame", "fake_embed", "fake_attributes"} <= set(first)
    assert 0.02 <= first["fake_frame"] < 0.2                   # counted once, not twice
    assert first["total"] >= first["fake_frame"]
    assert "fake_embed" not in second                          # no per-track work on frame 1
    assert all(isinstance(v, float) and v >= 0 for v in first.values())


# -- 13. predicted rows -----------------------------------------------------------------------


def test_a_missed_face_is_a_predicted_row_that_is_drawn_and_written_as_json():
    def script(i):
        faces = [(box_at(20), "ada", 0.5 + 0.001 * i)]
        if i != 5:
            faces.append((box_at(200), "bob", 0.5 + 0.001 * i))
        return faces

    parts = fake_pipeline(script, quality_gain=0.0)
    results = run_frames(parts.pipeline, range(8))
    missed = results[5]
    assert list(missed.faces.predicted) == [False, True]
    assert len(missed.detected) == 1 and list(missed.detected.track_id) == [1]
    assert list(missed.faces.track_id) == [1, 2]
    assert list(missed.faces.identity) == ["ada", "bob"]          # the track's name goes on
    assert np.isnan(missed.faces.landmarks68[1]).all()
    records = missed.faces.to_records()
    text = json.dumps(records, allow_nan=False)
    assert json.loads(text)[1]["predicted"] is True and records[1]["quality"] is None
    for index in (4, 5):
        scene = make_frame(index)
        overlay = Overlay(OverlayOptions(show_scores=True, landmarks=True, pose_axes=True))
        out = overlay.annotate(scene, results[index].faces)
        x1, y1, x2, y2 = (int(v) for v in results[index].faces.boxes[1])
        assert (out[y1, x1:x2] != 90).any()                      # bob's box is drawn
    assert list(results[6].faces.track_id) == [1, 2] and not results[6].faces.predicted.any()


# -- 14. Faces ---------------------------------------------------------------------------------


def _faces(n=2, **kw):
    return Faces(np.arange(n * 4, dtype=np.float32).reshape(n, 4), np.linspace(0.9, 0.8, n),
                 age=np.array([30.0, np.nan][:n], np.float32), frame_index=3, timestamp=0.1,
                 **kw)


def test_faces_are_equal_by_their_rows_and_frame_not_their_timings():
    a, b = _faces(), _faces()
    b.timings["detect"] = 1.0
    assert a == b                                    # NaN equals NaN; timings ignored
    c = _faces()
    c.age[0] = 31.0
    assert a != c
    d = _faces()
    d.frame_index = 4
    assert a != d
    assert a != _faces(gender=np.array([0.1, 0.9], np.float32))   # a column more
    assert a != _faces(1)


def test_concat_pads_the_columns_a_part_lacks_and_subsets_share_timings():
    tracked = _faces(track_id=np.array([1, 2]), identity=np.array(["ada", "bob"], object))
    plain = Faces(np.zeros((1, 4)), np.ones(1))
    joined = Faces.concat([tracked, plain])
    assert len(joined) == 3 and joined.frame_index == 3
    assert list(joined.track_id) == [1, 2, -1] and list(joined.identity) == ["ada", "bob", ""]
    assert np.isnan(joined.age[2])
    assert joined[:2] == tracked
    assert Faces.concat([plain]) == plain and len(Faces.concat([])) == 0
    sub = tracked[np.array([False, True])]
    sub.timings["stage"] = 0.5
    assert tracked.timings == {"stage": 0.5}
    records = joined.to_records()
    json.dumps(records, allow_nan=False)
    assert records[1]["age"] is None and records[2]["track_id"] == -1
