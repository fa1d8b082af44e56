"""Embedder specs for MobileFace's identification models, as measured, not guessed.

MobileFace (github.com/becauseofAI/MobileFace, MIT) ships three MXNet models,
converted to ONNX by :mod:`mobileface.convert.mxnet`. What each expects was
established as follows (figures in README.md, "Bring your own models"):

* **V1**: a grey 100x100 face, ``(px - 127.5) / 127.5`` (MobileFace's example
  code; the graph has no normalisation of its own), output already
  L2-normalised. It was trained on crops like LFW-Aligned-100Pair: in those
  crops RetinaFace finds the eyes at x = 0.25 and 0.74, y = 0.31 of the side
  and the mouth centre at (0.50, 0.76), within two pixels of MobileFace's
  alignment template ``mobileface_align_v1.npy`` (eyes (0.237, 0.318) and
  (0.763, 0.318), mouth centre (0.5, 0.773), fractions of the side). So V1
  chips are cut with that template, from the eyes and mouth centre of
  ``kps5``, by a similarity (AUC 0.988 on our colour photo set against 0.940
  with MobileFace's exact 3-point affine map).
* **V2, V3**: a 112x112 colour face of raw pixels: their graphs subtract 127.5
  and multiply by 0.0078125 themselves (MobileFace's example code normalised
  once more, with a Python-built graph that lacks those two nodes; fed to the
  released ``-symbol.json`` that double normalisation makes every face give
  the same embedding). They work with the ArcFace 112 template (InsightFace's
  training crops): on our colour photo set, AUC 1.000 (V2) and 0.998 (V3)
  with it against 0.95 and 0.86 with MobileFace's template; RGB separated
  people slightly better than BGR for both (V2 genuine-impostor gap 0.64
  against 0.57; V3 0.40 against 0.36), as expected of InsightFace-style
  training data, although MobileFace's examples feed OpenCV's BGR.

The cosine thresholds are the best-accuracy thresholds on the 100 genuine and
100 impostor pairs of LFW-Aligned-100Pair run through our pipeline (a small
set: treat them as a starting point).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileface.stages.embed.spec import EmbedderSpec

PRESETS = ("mobileface-v1", "mobileface-v2", "mobileface-v3")
_THRESHOLDS = {"mobileface-v1": 0.36, "mobileface-v2": 0.38, "mobileface-v3": 0.46}
_NOTES = ("MobileFace_Identification_{v} (github.com/becauseofAI/MobileFace, MIT), converted "
          "from MXNet by mobileface.convert.mxnet. {how}")


def mobileface_spec(preset: str, model: str | Path,
                    align_template: str | Path | np.ndarray | None = None,
                    sha256: str | None = None) -> EmbedderSpec:
    """The spec of a converted MobileFace model; ``preset`` is one of :data:`PRESETS`.

    V1 aligns with MobileFace's own template: pass ``mobileface_align_v1.npy``
    (or its (3, 2) array) as ``align_template``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    version = preset[-2:].upper()
    data: dict = {"name": preset.replace("-", "_"), "model": str(model), "normalize": "l2",
                  "cosine_threshold": _THRESHOLDS[preset]}
    if sha256:
        data["sha256"] = sha256
    if preset == "mobileface-v1":
        if align_template is None:
            raise ValueError("the mobileface-v1 preset aligns faces with MobileFace's template: "
                             "give the path of mobileface_align_v1.npy")
        if not isinstance(align_template, np.ndarray):
            align_template = str(align_template)
        data.update(input_size=100, color="gray", mean=127.5, std=127.5,
                    align={"method": "template", "template": align_template,
                           "units": "fraction", "points": "eyes_mouth",
                           "transform": "similarity"},
                    notes=_NOTES.format(v=version, how="Grey 100x100 chips on MobileFace's "
                                        "template, (px - 127.5) / 127.5."))
    else:
        if align_template is not None:
            raise ValueError(f"the {preset} preset uses the ArcFace template, not a template file")
        data.update(input_size=112, color="rgb", mean=0.0, std=1.0, align="arcface",
                    notes=_NOTES.format(v=version, how="RGB 112x112 ArcFace chips of raw pixels "
                                        "(the graph normalises them itself)."))
    return EmbedderSpec.from_dict(data, base=Path.cwd())
