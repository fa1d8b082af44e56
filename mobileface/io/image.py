"""Reading images from disk and normalising arrays to 8-bit BGR."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mobileface.errors import ImageError

log = logging.getLogger(__name__)


def to_bgr8(image: np.ndarray, label: str = "image") -> np.ndarray:
    """Any common image array as contiguous (H, W, 3) uint8 BGR.

    Accepts grayscale (H, W) or (H, W, 1), BGR and BGRA (alpha is dropped),
    8-bit, 16-bit and float (0..1) pixels. Anything else raises ImageError.
    """
    import cv2

    if not isinstance(image, np.ndarray):
        raise ImageError(f"{label}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ImageError(f"{label}: the image is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"{label}: unsupported image shape {image.shape}; "
                         "expected (H, W), (H, W, 3) or (H, W, 4)")
    image = _to_uint8(image, label)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, label: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageError(f"{label}: the image has NaN or infinite pixels")
        scale = 255.0 if image.max() <= 1.0 else 1.0
        return np.clip(image * scale + 0.5, 0, 255).astype(np.uint8)
    raise ImageError(f"{label}: unsupported pixel type {image.dtype}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as 8-bit BGR, or raise ImageError with a one-line reason."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(f"{path}: the file is empty")
    # ANYDEPTH keeps 16-bit pixels, ANYCOLOR keeps grayscale as one channel;
    # unlike IMREAD_UNCHANGED both still apply the EXIF orientation.
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.dtype != np.uint8 or image.ndim != 3:
        log.info("%s: converting %s %s image to 8-bit BGR", path, image.dtype, image.shape)
    return to_bgr8(image, str(path))


#: RGB means of dlib's networks (face descriptor, Cydral's age and gender)
DLIB_MEANS_RGB = np.array([122.782, 117.001, 104.298], np.float32)


def dlib_net_blob(chips_bgr: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) BGR uint8 chips -> the (N, 3, S, S) float32 input of dlib's networks.

    RGB, (pixel - mean) / 256 with :data:`DLIB_MEANS_RGB`, as dlib's
    ``input_rgb_image`` layers compute it.
    """
    rgb = chips_bgr[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - DLIB_MEANS_RGB) / 256.0).transpose(0, 3, 1, 2))
