"""FaceAnalyzer: every column for every face, in one call."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_bgr
from mobileface.pipeline.image import FaceAnalyzer, resolve_stages


def test_every_column_for_every_face(analyzer):
    faces = analyzer.analyze(load_bgr("mobileface/friends.jpg"))
    n = len(faces)
    assert n == 6
    assert faces.landmarks68.shape == (n, 68, 2)
    assert faces.pose.shape == (n, 3)
    assert faces.age.shape == faces.gender.shape == faces.quality.shape == (n,)
    assert faces.embedding.shape == (n, 128) and faces.embedding.dtype == np.float32
    # The landmarks of each face lie around its box.
    centres = faces.landmarks68.mean(1)
    assert ((centres[:, 0] > faces.boxes[:, 0]) & (centres[:, 0] < faces.boxes[:, 2])).all()
    assert ((centres[:, 1] > faces.boxes[:, 1]) & (centres[:, 1] < faces.boxes[:, 3])).all()
    # Six different people: every pair of embeddings is far apart.
    d = np.linalg.norm(faces.embedding[:, None] - faces.embedding[None], axis=-1)
    assert (d[~np.eye(n, dtype=bool)] > 0.6).all()
    json.dumps(faces.to_records())
    assert set(analyzer.last_timings) == {"detect", "landmarks", "pose", "attributes",
                                          "quality", "embed"}


def test_same_person_across_photos(analyzer):
    a = analyzer.analyze(load_bgr("face_recognition/obama.jpg")).embedding[0]
    b = analyzer.analyze(load_bgr("face_recognition/obama2.jpg")).embedding[0]
    c = analyzer.analyze(load_bgr("face_recognition/biden.jpg")).embedding[0]
    assert np.linalg.norm(a - b) < 0.6 < np.linalg.norm(a - c)


def test_no_face_gives_empty_columns(analyzer):
    faces = analyzer.analyze(np.full((240, 320, 3), 90, np.uint8))
    assert len(faces) == 0
    assert faces.landmarks68.shape == (0, 68, 2) and faces.pose.shape == (0, 3)
    assert faces.embedding.shape == (0, 128) and faces.to_records() == []


def test_grey_and_16bit_arrays(analyzer, astronaut_bgr):
    grey = astronaut_bgr.mean(2).astype(np.uint8)
    assert len(analyzer.analyze(grey)) == 1
    assert len(analyzer.analyze(astronaut_bgr.astype(np.uint16) * 257)) == 1


def test_stage_selection_adds_prerequisites():
    assert resolve_stages(["quality"]) == ["landmarks", "pose", "quality"]
    assert resolve_stages(["embed"]) == ["landmarks", "embed"]
    with pytest.raises(ValueError, match="unknown stage"):
        resolve_stages(["gait"])
    light = FaceAnalyzer(stages=["pose"])
    assert [s.name for s in light.stages] == ["landmarks", "pose"]


def test_mtcnn_analyzer(astronaut_bgr):
    faces = FaceAnalyzer(detector="mtcnn", stages=["pose"]).analyze(astronaut_bgr)
    assert len(faces) >= 1 and abs(faces.pose[0, 0]) < 15  # the best-scoring face
