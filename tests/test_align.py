"""Our chips must be the chips dlib's networks were trained on."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import load_bgr
from mobileface.models import registry
from mobileface.stages import align


@pytest.fixture(scope="module")
def dlib_tools():
    dlib = pytest.importorskip("dlib")
    predictor = dlib.shape_predictor(str(registry.verified_path("dlib_shape_predictor_68")))
    return dlib, dlib.get_frontal_face_detector(), predictor


def _compare_with_dlib(dlib_tools, rgb: np.ndarray, size: int, padding: float) -> int:
    dlib, detector, predictor = dlib_tools
    rects = detector(rgb, 1)
    assert len(rects) >= 1
    for rect in rects:
        shape = predictor(rgb, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)[None]
        reference = dlib.get_face_chip(rgb, shape, size, padding).astype(np.int16)
        ours = align.dlib_chips(rgb, points, size, padding)[0].astype(np.int16)
        diff = np.abs(reference - ours)
        # Same geometry: only rounding of the bilinear interpolation differs.
        assert diff.mean() < 1.0, diff.mean()
        assert np.percentile(diff, 99) <= 2
    return len(rects)


def test_dlib_chip_matches_dlib_on_astronaut(dlib_tools, astronaut_bgr):
    rgb = np.ascontiguousarray(astronaut_bgr[:, :, ::-1])
    _compare_with_dlib(dlib_tools, rgb, 150, 0.25)
    _compare_with_dlib(dlib_tools, rgb, 64, 0.2)


@pytest.mark.parametrize("name", ["face_recognition/obama.jpg", "face_recognition/obama-1080p.jpg",
                                  "face_recognition/two_people.jpg"])
def test_dlib_chip_matches_dlib_on_photos(dlib_tools, name):
    # obama-1080p's face is several times the chip size: dlib's pyramid path.
    rgb = np.ascontiguousarray(load_bgr(name)[:, :, ::-1])
    _compare_with_dlib(dlib_tools, rgb, 150, 0.25)


def test_arcface_template_maps_onto_itself():
    template = align.arcface_template(112)
    # A face twice the size, rotated by 30 degrees and shifted.
    angle = np.deg2rad(30)
    rot = 2 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    kps = template @ rot.T + [300, 200]
    matrix = align.arcface_transforms(kps[None], 112)
    back = align.transform_points(matrix, kps[None])[0]
    np.testing.assert_allclose(back, template, atol=1e-6)
    np.testing.assert_allclose(align.arcface_template(224), template * 2)


def test_arcface_chip_puts_eyes_on_template(astronaut_bgr):
    from mobileface.detect import create_detector

    faces = create_detector("retinaface").detect(astronaut_bgr)
    matrix = align.arcface_transforms(faces.kps5[:1], 112)
    chip_kps = align.transform_points(matrix, faces.kps5[:1])[0]
    error = np.abs(chip_kps - align.arcface_template(112))
    # A real face is not the template: the eyes land within a few pixels,
    # the smiling mouth a little further.
    assert error[:2].max() < 4 and error.max() < 8
    chips = align.warp_chips(astronaut_bgr, matrix, 112)
    assert chips.shape == (1, 112, 112, 3) and chips.dtype == np.uint8
    assert chips.mean() > 40  # a face, not a black border


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="landmarks68"):
        align.dlib_chip_transforms(np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        align.arcface_transforms(np.full((1, 5, 2), np.nan))
    with pytest.raises(ValueError, match="image"):
        align.warp_chips(np.zeros((0, 0, 3), np.uint8), np.eye(2, 3)[None], 112)
    assert align.dlib_chip_transforms(np.zeros((0, 68, 2))).shape == (0, 2, 3)
