"""Classical low-light enhancement: four ways to brighten a dark BGR frame, each cheap.

Each method takes the frame and the :class:`Thumbnail` of its luminance (one
small grey image, made once per frame, that the decision to enhance reads too)
and returns a new frame; none changes its input. What they do:

* ``histogram`` (the default): clipped histogram equalisation of the
  thumbnail, as one tone curve (a 256-entry lookup table) applied to B, G and R.
  The clip limit (2x a uniform bin, CLAHE's usual value, the excess spread over
  every bin) keeps the curve from stretching noise; the curve never darkens a
  level. One global curve: no halos or tile seams, and flicker-free frame to
  frame as long as the histogram changes slowly.
* ``clahe``: OpenCV's CLAHE (8x8 tiles, clip 2) on the luminance (YCrCb) of the
  full frame: local contrast, at 2.5-3.5 ms per 720p frame.
* ``gamma``: one gamma from the frame's brightness, chosen so that the level of
  its brightest 0.5 % reaches :data:`TARGET_LEVEL`; it lifts the shadows (and
  their noise) most.
* ``illumination``: Retinex/LIME-style: the illumination map is the brightest
  channel of a downscaled frame, smoothed by a self-guided filter (He et al.),
  and each pixel is multiplied by ``TARGET_LEVEL / illumination`` (at most
  :data:`MAX_GAIN`), upsampled.

Which one is used, and why, is measured by ``benchmark/lowlight.py`` (see
README, "Low-light enhancement").
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: the thumbnail's longer side, pixels (about 160: 14,000 pixels for a 16:9 frame)
THUMBNAIL_SIDE = 160
#: the brightness that decides (lowlight.py) is measured on every 4th row only: a quarter
#: of the colour conversion, 0.2 ms instead of 0.9-1.3 ms for 720p on the 2-core machine,
#: and on the 317 frames and photos of ../shared, as they are and darkened to 30, 15 and
#: 10 % of the light, it moved the level by 0.3 on average (at most 10 of 255); a decision
#: changes only for a frame within 2 levels of DARK_LEVEL or BRIGHT_LEVEL (tests/test_enhance.py)
DECISION_ROW_STEP = 4
#: the share of the frame whose level is its "brightness": its brightest 0.5 %
BRIGHT_SHARE = 0.005
#: where the gamma and illumination methods bring the frame's brightness (0..1): about the
#: level of the brightest 0.5 % in the darkest normally exposed frames of the shared clips
#: (117 and 129 of 255)
TARGET_LEVEL = 0.5
#: the histogram curve's clip limit, times a uniform bin
HISTOGRAM_CLIP = 2.0
#: the gamma method's smallest exponent
MIN_GAMMA = 0.3
#: the illumination method's largest gain
MAX_GAIN = 6.0

_LEVELS = np.arange(256, dtype=np.float64)


@dataclass(frozen=True)
class Thumbnail:
    """The frame's luminance, downscaled by an integer factor (area average), and its
    histogram."""

    luma: np.ndarray       # (h, w) uint8
    histogram: np.ndarray  # (256,) pixel counts of luma

    @classmethod
    def of(cls, image: np.ndarray, row_step: int = 1) -> "Thumbnail":
        """The thumbnail of a BGR frame; with ``row_step`` > 1, of every so many rows of
        it only (at most the thumbnail's own factor: each thumbnail row still averages
        rows of its own band)."""
        h, w = image.shape[:2]
        factor = max(1, max(h, w) // THUMBNAIL_SIDE)
        # An exact integer factor takes OpenCV's fast area path (0.3 ms for 720p,
        # against 1.5 ms for an arbitrary size); the last rows and columns are left out.
        th, tw = max(1, h // factor), max(1, w // factor)
        step = max(1, min(int(row_step), factor))
        # A view of whole rows: OpenCV reads it in place, without a copy.
        grey = cv2.cvtColor(image[:th * factor:step, :tw * factor], cv2.COLOR_BGR2GRAY)
        luma = grey if factor == 1 else cv2.resize(grey, (tw, th), interpolation=cv2.INTER_AREA)
        return cls(luma, np.bincount(luma.ravel(), minlength=256))

    @property
    def brightness(self) -> float:
        """The level (0..1) that the brightest 0.5 % of the thumbnail reach."""
        cumulative = np.cumsum(self.histogram)
        level = int(np.searchsorted(cumulative, (1.0 - BRIGHT_SHARE) * cumulative[-1]))
        return level / 255.0


def _lut(curve: np.ndarray) -> np.ndarray:
    return np.clip(np.round(curve), 0, 255).astype(np.uint8)


def histogram_curve(histogram: np.ndarray, clip: float = HISTOGRAM_CLIP) -> np.ndarray:
    """The tone curve (256 levels, uint8) of clipped histogram equalisation, never below
    the identity."""
    counts = histogram.astype(np.float64)
    total = counts.sum()
    limit = clip * total / 256.0
    excess = np.maximum(counts - limit, 0.0).sum()
    counts = np.minimum(counts, limit) + excess / 256.0
    return _lut(np.maximum(np.cumsum(counts) * (255.0 / total), _LEVELS))


def histogram(image: np.ndarray, thumb: Thumbnail) -> np.ndarray:
    return cv2.LUT(image, histogram_curve(thumb.histogram))


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def clahe(image: np.ndarray, thumb: Thumbnail) -> np.ndarray:
    ycc = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    ycc[:, :, 0] = _CLAHE.apply(np.ascontiguousarray(ycc[:, :, 0]))
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)


def gamma(image: np.ndarray, thumb: Thumbnail) -> np.ndarray:
    level = min(max(thumb.brightness, 1.0 / 255.0), 0.99)
    exponent = float(np.clip(np.log(TARGET_LEVEL) / np.log(level), MIN_GAMMA, 1.0))
    return cv2.LUT(image, _lut(255.0 * (_LEVELS / 255.0) ** exponent))


def _guided(guide: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of ``guide`` by itself (float32, box windows)."""
    size = (2 * radius + 1, 2 * radius + 1)
    mean = cv2.boxFilter(guide, -1, size)
    var = cv2.boxFilter(guide * guide, -1, size) - mean * mean
    a = var / (var + eps)
    b = mean - a * mean
    return cv2.boxFilter(a, -1, size) * guide + cv2.boxFilter(b, -1, size)


def illumination(image: np.ndarray, thumb: Thumbnail) -> np.ndarray:
    h, w = image.shape[:2]
    th, tw = thumb.luma.shape
    small = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
    light = _guided(small.max(axis=2).astype(np.float32) / 255.0, radius=4, eps=1e-2)
    gain = np.clip(TARGET_LEVEL / np.maximum(light, 1e-3), 1.0, MAX_GAIN)
    # Gains in 1/32 steps as uint8, so that OpenCV multiplies the frame in 8-bit (4x faster
    # than a float multiply of a 720p frame).
    gain = cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)
    steps = np.clip(np.round(gain * 32.0), 0, 255).astype(np.uint8)
    return cv2.multiply(image, cv2.merge([steps, steps, steps]), scale=1.0 / 32.0)


#: the methods by name (the first is the default)
METHODS = {"histogram": histogram, "clahe": clahe, "gamma": gamma, "illumination": illumination}
