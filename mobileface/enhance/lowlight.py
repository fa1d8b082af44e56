"""The low-light step before detection: off, on, or auto (only dark frames, with hysteresis).

A frame's **brightness** is the level its brightest 0.5 % reach, on a small
area-averaged thumbnail of its luminance (:class:`~mobileface.enhance.methods.Thumbnail`)
made from every 4th row (``DECISION_ROW_STEP``: nearly free, and the same decisions on
the shared data; an enhanced frame's tone curve comes from the full thumbnail).
Less light scales every level down, so no bright spot is left: at 15 % of the
light, a camera's gamma (2.2) maps even white to 0.42. Normally exposed frames of
the shared clips and photos measure 0.46 or more (friends1.mp4 0.46, the Hamilton
clip 0.51, the face_recognition photos 0.78, LFW-Aligned-100Pair crops 0.49);
the same darkened to 15 % of their light (mobileface/eval/lowlight.py, then H.264 or JPEG)
at most 0.20, 0.35, 0.42 and 0.42. So in ``auto``:

* a frame is dark below :data:`DARK_LEVEL` (0.40): enhancement starts;
* on video it goes on until a frame is brighter than :data:`BRIGHT_LEVEL`
  (0.44), so that frames near one level do not switch it on and off;
* a single image (IMAGE mode) is enhanced when it is below DARK_LEVEL.

A normally exposed frame is returned as it is (the same array): ``auto`` does not
touch it. A frame that is bright in places (a lamp, a window behind a person)
stays "not dark" in ``auto``: use ``on`` there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mobileface.enhance import check_mode
from mobileface.enhance.methods import DECISION_ROW_STEP, METHODS, Thumbnail

#: auto: a frame is dark (enhancement starts) when its brightness is below this (102 of 255)
DARK_LEVEL = 0.40
#: auto on video: enhancement stops when a frame's brightness is above this (112 of 255)
BRIGHT_LEVEL = 0.44
DEFAULT_METHOD = next(iter(METHODS))


@dataclass(frozen=True)
class Enhancement:
    """What the low-light step did to one frame.

    mode: off, auto or on; applied: whether the frame was enhanced; brightness:
    the frame's (see the module docstring; NaN when the mode is off, which
    measures nothing); image: the frame the stages analysed (the enhanced one
    when applied, else the frame itself), not part of the record.
    """

    mode: str
    applied: bool
    brightness: float
    method: str
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_record(self) -> dict:
        """For JSON: mode, applied, brightness (rounded, None when not measured), method."""
        bright = None if not np.isfinite(self.brightness) else round(float(self.brightness), 3)
        return {"mode": self.mode, "applied": self.applied, "brightness": bright,
                "method": self.method}


class LowLightEnhancer:
    """Decides, per frame, whether to enhance it, and enhances it.

    mode: "off", "auto" (dark frames only) or "on" (every frame).
    method: one of :data:`~mobileface.enhance.methods.METHODS` (default "histogram").
    hysteresis: on video, True (default): auto stays on until a frame is
        brighter than ``bright``; False (IMAGE mode): each image is decided alone.
    dark, bright: the two levels of auto (0..1).

    One enhancer follows one stream: call it on the frames in order (one thread
    at a time), :meth:`reset` for a new stream. ``mode`` may be changed between
    two frames (the viewer's toggle).
    """

    def __init__(self, mode: str = "auto", method: str = DEFAULT_METHOD,
                 hysteresis: bool = True, dark: float = DARK_LEVEL, bright: float = BRIGHT_LEVEL):
        if method not in METHODS:
            raise ValueError(f"enhancement method must be one of {', '.join(METHODS)}, "
                             f"got {method!r}")
        if not 0.0 < dark <= bright < 1.0:
            raise ValueError(f"need 0 < dark <= bright < 1, got dark {dark}, bright {bright}")
        self._mode = check_mode(mode)
        self.method = method
        self.hysteresis = hysteresis
        self.dark, self.bright = float(dark), float(bright)
        self._enhance = METHODS[method]
        self._active = False

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_mode(mode)
        self._active = False

    def reset(self) -> None:
        """A new stream: auto starts from "not dark"."""
        self._active = False

    def _dark(self, brightness: float) -> bool:
        if self.hysteresis and self._active:
            self._active = brightness <= self.bright
        else:
            self._active = brightness < self.dark
        return self._active

    def __call__(self, image: np.ndarray) -> Enhancement:
        """The enhancement of one BGR uint8 frame (the frames of a stream in order)."""
        mode = self._mode
        if mode == "off":
            return Enhancement(mode, False, float("nan"), self.method, image)
        brightness = Thumbnail.of(image, DECISION_ROW_STEP).brightness
        if mode == "auto" and not self._dark(brightness):
            return Enhancement(mode, False, brightness, self.method, image)
        return Enhancement(mode, True, brightness, self.method,
                           self._enhance(image, Thumbnail.of(image)))
