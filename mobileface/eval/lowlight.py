"""Low light made from normal pictures, the way a camera records it, for benchmark/lowlight.py
and the tests.

:func:`darken` models a camera that gets less light at the same exposure:

1. the pixel values are taken back to light with the camera's gamma (2.2);
2. the light is scaled to ``light`` (0.15: 15 % of the light);
3. the sensor counts it as electrons: a full well of ``full_well`` electrons
   (10,000, a 2.9 µm security-camera pixel) is white at the original exposure;
   photon (shot) noise is Poisson, approximated by a normal of variance equal to
   the count, and the read noise (2 electrons) adds to it;
4. the camera's gamma gives 8-bit pixels again.

At 15 % of the light the pixel values fall to about 0.15 ** (1 / 2.2) = 42 % of
theirs, and the darkest parts drown in noise. The pictures are then re-encoded
as a camera would: photos as JPEG (:func:`jpeg`, quality 75, libjpeg's
default), video as H.264 (:func:`h264`, x264's default CRF 23, which spends few
bits on dark, flat areas).
"""
from __future__ import annotations

import io
from typing import Sequence

import cv2
import numpy as np

from mobileface.errors import MobileFaceError

CAMERA_GAMMA = 2.2
FULL_WELL = 10_000.0
READ_NOISE = 2.0
JPEG_QUALITY = 75
H264_CRF = 23


def darken(image: np.ndarray, light: float, rng: np.random.Generator,
           full_well: float = FULL_WELL, read_noise: float = READ_NOISE,
           gamma: float = CAMERA_GAMMA) -> np.ndarray:
    """``image`` (BGR uint8) as the camera records it with ``light`` times the light."""
    if not 0.0 < light <= 1.0:
        raise ValueError(f"light must be in (0, 1], got {light}")
    electrons = (image.astype(np.float32) / 255.0) ** gamma * (light * full_well)
    noise = rng.standard_normal(electrons.shape, dtype=np.float32)
    electrons += noise * np.sqrt(electrons + read_noise * read_noise)
    linear = np.clip(electrons / full_well, 0.0, 1.0)
    return (linear ** (1.0 / gamma) * 255.0 + 0.5).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``image`` after a JPEG encode and decode."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MobileFaceError("cannot encode a JPEG")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def h264(frames: Sequence[np.ndarray], fps: float, crf: int = H264_CRF) -> list[np.ndarray]:
    """``frames`` (BGR, one size) after an H.264 encode (x264, yuv420p) and decode, in
    memory. Needs PyAV (``pip install av``), whose wheels ship x264; OpenCV's do not."""
    try:
        import av
    except ImportError:
        raise MobileFaceError("H.264 needs PyAV: pip install av (or re-encode video frames "
                              "as JPEG: --video-codec jpeg)") from None
    if not frames:
        return []
    buffer = io.BytesIO()
    height, width = frames[0].shape[:2]
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(frame[:stream.height, :stream.width]), format="bgr24")
            out.mux(stream.encode(picture))
        out.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as decoded:
        images = [f.to_ndarray(format="bgr24") for f in decoded.decode(video=0)]
    if (width, height) != (stream.width, stream.height):   # odd sizes: yuv420p needs even ones
        images = [cv2.copyMakeBorder(i, 0, height - i.shape[0], 0, width - i.shape[1],
                                     cv2.BORDER_REPLICATE) for i in images]
    return images
