"""Low-light enhancement, the step before detection: the frame the detector and the stages see.

``lowlight`` decides per frame (off, on, or auto: dark frames only, with
hysteresis on video) and records what it did; ``methods`` holds the image
operations it can use (a histogram tone curve by default; CLAHE, gamma and a
Retinex-style illumination map were measured against it).

This module imports nothing heavy (the command lines read the modes from it
for ``--help``); the enhancer itself comes with :mod:`.lowlight`.
"""
from __future__ import annotations

#: the modes, as the command lines and the configs spell them
ENHANCE_MODES = ("off", "auto", "on")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ENHANCE_MODES, else a ValueError saying which are."""
    if mode not in ENHANCE_MODES:
        raise ValueError(f"enhance must be one of {', '.join(ENHANCE_MODES)}, got {mode!r}")
    return mode


def __getattr__(name):
    if name in ("Enhancement", "LowLightEnhancer", "DARK_LEVEL", "BRIGHT_LEVEL"):
        from mobileface.enhance import lowlight
        return getattr(lowlight, name)
    raise AttributeError(name)


__all__ = ["BRIGHT_LEVEL", "DARK_LEVEL", "ENHANCE_MODES", "Enhancement", "LowLightEnhancer",
           "check_mode"]
