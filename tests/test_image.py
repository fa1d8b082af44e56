import cv2
import numpy as np
import pytest

from mobileface.errors import ImageError
from mobileface.io.image import read_image, to_bgr8


def test_missing_empty_corrupt_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "text.png").write_text("this is not a picture")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "text.png")
    good = cv2.imencode(".jpg", np.full((40, 40, 3), 128, np.uint8))[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(good[:20])
    with pytest.raises(ImageError):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


def test_grey_rgba_and_16bit_files_become_bgr8(tmp_path, astronaut_bgr):
    grey = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "deep.png"), astronaut_bgr.astype(np.uint16) * 257)
    for name in ("grey.png", "rgba.png", "deep.png"):
        image = read_image(tmp_path / name)
        assert image.shape == astronaut_bgr.shape and image.dtype == np.uint8
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), astronaut_bgr)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png")[:, :, 0], grey)


def test_to_bgr8_rejects_bad_arrays():
    with pytest.raises(ImageError, match="empty"):
        to_bgr8(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        to_bgr8(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ImageError, match="numpy"):
        to_bgr8("image.jpg")
    assert to_bgr8(np.ones((4, 4), np.float32)).max() == 255
