"""The frame pipeline on the Hamilton clip: names per track, no flicker, bounded memory."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import load_bgr, shared_file
from mobileface.identity.enrol import FaceEnroller
from mobileface.identity.gallery import Gallery, normalise
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.eval.bench import read_frames
from mobileface.track.scene_cut import SceneCutDetector

LIN = "Lin-Manuel Miranda"
OBAMA = "Barack Obama"


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return read_frames(shared_file("face_recognition/short_hamilton_clip.mp4"))[0]


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.from_config(PipelineConfig(det_size=480))


@pytest.fixture(scope="module")
def gallery(pipeline) -> Gallery:
    enrol = FaceEnroller(pipeline.analyzer)
    lin = enrol.embed_image(load_bgr("face_recognition/lin-manuel-miranda.png"))
    obama = enrol.embed_image(load_bgr("face_recognition/obama.jpg"))
    return Gallery([1, 2], [LIN, OBAMA], np.stack([lin.embedding, obama.embedding]), [0, 1])


def _run(pipeline, frames, start=0, fps=29.97, on_frame=None):
    results = []
    for i, frame in enumerate(frames):
        if on_frame is not None:
            on_frame(start + i, pipeline)
        results.append(pipeline.process(frame, start + i, (start + i) / fps))
    summaries = pipeline.finish()
    return results, summaries


def _names(result) -> list[str]:
    return [] if result.detected.identity is None else list(result.detected.identity)


def test_his_tracks_carry_his_name_and_nobody_else_is_called_him(pipeline, gallery, clip):
    pipeline.set_gallery(gallery)
    results, summaries = _run(pipeline, clip)
    # frames 0-19: him on stage; 21-81: the pianist and the audience; 83-210: him,
    # close; 212-274: the audience (the Obamas among them)
    for index in list(range(21, 82)) + list(range(212, 275)):
        assert LIN not in _names(results[index]), f"frame {index}: {_names(results[index])}"
    named = [i for i in range(90, 211) if LIN in _names(results[i])]
    assert len(named) == 121, "his close-up is named on every frame from frame 90 on"
    # no flicker: along his close-up track the shown name never changes once given
    ids = {int(t) for r in results[90:211] for t in r.detected.track_id if t > 0}
    assert len(ids) == 1
    his = [s for s in summaries + [x for r in results for x in r.finished]
           if s.identity == LIN]
    assert his and all(s.similarity >= pipeline.threshold for s in his)


def test_recognition_runs_per_track_not_per_frame(pipeline, gallery, clip):
    pipeline.set_gallery(gallery)
    results, _ = _run(pipeline, clip[:150])
    face_rows = sum(len(r.detected) for r in results)
    runs = sum(r.recognised for r in results)
    assert face_rows > 250
    assert runs < 0.25 * face_rows, (runs, face_rows)
    # age and gender are per track: the same values on every frame between runs
    ages = [float(r.detected.track_age[0]) for r in results[120:150] if len(r.detected) == 1]
    assert len(set(ages)) <= 8


def test_finished_tracks_are_released_and_state_is_bounded(pipeline, gallery, clip):
    pipeline.set_gallery(gallery)
    cfg = pipeline.config
    finished = 0
    for i, frame in enumerate(clip):
        result = pipeline.process(frame, i, i / 29.97)
        finished += len(result.finished)
        live = set(pipeline.tracker.live_ids) | set(pipeline.tracker._lost)
        assert set(pipeline.states) <= live
        for state in pipeline.states.values():
            assert len(state.ages) <= cfg.attribute_samples
            assert len(state.embeddings) <= cfg.vote_window
            assert state.best_shot is None or max(state.best_shot.shape[:2]) <= cfg.best_shot_size
    assert finished >= 10
    pipeline.finish()
    assert pipeline.states == {}


def test_a_person_enrolled_during_the_run_is_named_without_a_restart(pipeline, gallery, clip):
    pipeline.set_gallery(Gallery.empty())

    def enrol_at_150(index, pipe):
        if index == 150:
            pipe.set_gallery(gallery)

    results, _ = _run(pipeline, clip[100:180], start=100, on_frame=enrol_at_150)
    assert all(LIN not in _names(r) for r in results[:50])
    # his stored embeddings are matched again at once: named on the very frame
    assert LIN in _names(results[50])


def test_a_scene_cut_starts_new_tracks(pipeline, clip):
    pipeline.set_gallery(Gallery.empty())
    results, _ = _run(pipeline, clip[70:100], start=70)
    before = {int(t) for r in results[5:12] for t in r.detected.track_id if t > 0}
    after = {int(t) for r in results[15:30] for t in r.detected.track_id if t > 0}
    assert before and after and not before & after


def test_the_cut_detector_fires_on_cuts_only(clip):
    detector = SceneCutDetector()
    cuts = [i for i, frame in enumerate(clip) if detector(frame)]
    assert cuts == [20, 82, 211]


def test_a_face_that_comes_back_gets_its_id_back(pipeline, gallery, clip):
    pipeline.set_gallery(gallery)
    frames = [f.copy() for f in clip[100:160]]
    first = pipeline.process(frames[0], 100, 100 / 29.97)
    box = first.detected.boxes[0].astype(int)
    pipeline.reset()
    # hide his face for 25 frames (longer than the tracker's max_age of 15)
    for frame in frames[20:45]:
        x1, y1, x2, y2 = box
        frame[max(0, y1 - 60):y2 + 60, max(0, x1 - 60):x2 + 60] = 60
    results, summaries = _run(pipeline, frames, start=100)
    before = {int(t) for r in results[5:20] for t in r.detected.track_id if t > 0}
    after = {int(t) for r in results[50:60] for t in r.detected.track_id if t > 0}
    assert len(before) == 1 and before == after
    assert [s.track_id for s in summaries] == sorted(before)
    (summary,) = summaries
    assert summary.identity == LIN and summary.frames < 60


def test_attributes_only_needs_no_facebank(clip):
    pipe = FacePipeline.from_config(PipelineConfig(det_size=480, recognition=False))
    results, summaries = _run(pipe, clip[100:130], start=100)
    faces = results[-1].detected
    assert faces.identity is None and faces.embedding is None
    assert np.isfinite(faces.track_age).all() and np.isfinite(faces.track_gender).all()
    assert summaries and summaries[0].identity is None and summaries[0].gender == "male"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="match_mode"):
        PipelineConfig(match_mode="median")
    with pytest.raises(ValueError, match="threshold"):
        PipelineConfig(threshold=3.0)
    with pytest.raises(ValueError, match="vote_window"):
        PipelineConfig(vote_window=0)


def test_the_gallery_matches_what_the_pipeline_sees(gallery):
    assert gallery.names == [LIN, OBAMA]
    np.testing.assert_allclose(np.linalg.norm(normalise(gallery.embeddings), axis=1), 1, atol=1e-6)


def test_changes_another_process_makes_to_the_facebank_are_picked_up(clip, tmp_path):
    from mobileface.identity.facebank import Facebank

    pipe = FacePipeline.from_config(PipelineConfig(det_size=480, facebank_poll=0.0))
    pipe.set_facebank(Facebank(tmp_path))            # empty: everybody is unknown
    other = Facebank(tmp_path)                       # e.g. `mobileface facebank add` meanwhile
    enrol = FaceEnroller(pipe.analyzer)
    lin = enrol.embed_image(load_bgr("face_recognition/lin-manuel-miranda.png"))
    results = []
    for i in range(100, 170):
        if i == 140:
            other.add("Lin", [(lin.jpeg(), ".jpg", "lin", lin.embedding, lin.quality)],
                      enrol.model_id)
        if i == 155:
            other.rename("Lin", LIN)
        results.append(pipe.process(clip[i], i, i / 29.97))
    assert all(_names(r) == ["Unknown"] for r in results[:40])
    assert _names(results[40]) == ["Lin"]            # named on the next frame, no restart
    assert _names(results[56]) == [LIN]              # and renamed


def test_live_summaries_describe_the_tracks_without_ending_them(pipeline, gallery, clip):
    pipeline.set_gallery(gallery)
    pipeline.reset()
    for i in range(100, 140):
        pipeline.process(clip[i], i, i / 29.97)
    live = pipeline.live_summaries()
    assert [s.track_id for s in live] == sorted(pipeline.states)
    (his,) = [s for s in live if s.identity == LIN]
    assert his.best_shot is not None and his.embedding is not None and his.frames > 30
    assert his.track_id in pipeline.states          # still going
    result = pipeline.process(clip[140], 140, 140 / 29.97)
    assert LIN in _names(result)
    assert [s.track_id for s in pipeline.finish()] == [s.track_id for s in live]


def test_a_face_of_an_analysed_frame_embeds_like_the_same_face_from_its_picture(pipeline, clip):
    enrol = FaceEnroller(pipeline.analyzer)
    pipeline.set_gallery(Gallery.empty())
    pipeline.reset()
    result = pipeline.process(clip[150], 150, 150 / 29.97)
    pipeline.finish()
    face = enrol.embed_row(clip[150], result.detected, 0)
    again = enrol.embed_image(clip[150])
    assert float(normalise(face.embedding) @ normalise(again.embedding)) > 0.99
    assert face.quality == pytest.approx(float(result.detected.quality[0]))
    assert face.parts == pytest.approx({k: float(v[0]) for k, v in result.detected.extra.items()})
    assert face.chip.shape == again.chip.shape and face.problem() is None
    with pytest.raises(ValueError, match="row 1"):
        enrol.embed_row(clip[150], result.detected, 1)
