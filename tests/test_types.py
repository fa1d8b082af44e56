import json

import numpy as np
import pytest

from mobileface.types import Faces


def _faces(n=3):
    boxes = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return Faces(boxes, np.linspace(0.9, 0.5, n), age=np.arange(n, dtype=np.float32),
                 gender=np.array([0.9, 0.1, 0.5][:n], np.float32))


def test_mask_indexing_slices_every_column():
    faces = _faces()
    kept = faces[faces.scores > 0.6]
    assert len(kept) == 2
    np.testing.assert_allclose(kept.age, [0, 1])
    assert kept.embedding is None


def test_length_mismatch_is_rejected():
    with pytest.raises(ValueError, match="age"):
        Faces(np.zeros((2, 4)), np.zeros(2), age=np.zeros(3))
    faces = _faces()
    with pytest.raises(ValueError):
        faces.set_column("quality", np.zeros(5))


def test_empty_and_records_are_json():
    assert len(Faces.empty()) == 0
    records = _faces().to_records()
    text = json.dumps(records)
    assert json.loads(text)[0]["gender"] == "male"
    assert json.loads(text)[1]["gender"] == "female"
    assert records[0]["box"] == [0.0, 1.0, 2.0, 3.0]
