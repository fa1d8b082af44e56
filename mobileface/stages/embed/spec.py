"""Explicit specs for ONNX face embedders: everything a model needs, nothing guessed.

An embedder's input convention (chip size, colour order, normalisation and how
the face is aligned) cannot be read reliably from an ONNX file, so it is
written down in a spec: a Python :class:`EmbedderSpec` or a JSON file.
:func:`mobileface.stages.embed.create_embedder` accepts either.

JSON fields (``load_spec(path)``; paths inside are relative to the spec file):

``name`` (required)
    A short label for the model, e.g. ``"mobileface_v1"``; part of the
    embedder's ``model_id``.
``model`` (required)
    The ``.onnx`` file. Its input must be NCHW float32 with the spec's
    channels and size (the batch may be free or fixed to 1).
``sha256`` (optional)
    The model file's sha256; a different file is refused.
``input_size`` (required)
    The chip side in pixels, ``112`` or ``[112, 112]`` (square chips only).
``color`` (required)
    ``"rgb"``, ``"bgr"`` or ``"gray"`` (OpenCV's BGR -> grey conversion).
``mean``, ``std`` (required)
    The network input is ``(pixel - mean) / std``, per channel in the
    model's colour order: one number for all channels, or one per channel.
    Pixels are 0..255.
``align`` (required)
    How the chip is cut from the frame:

    * ``"arcface"`` (or ``{"method": "arcface"}``): a least-squares
      similarity putting ``kps5`` on InsightFace's 112x112 ArcFace template,
      scaled to ``input_size``.
    * ``{"method": "dlib", "padding": 0.25}``: dlib's face chip from the 68
      landmarks (``dlib.get_face_chip``), the given padding.
    * ``{"method": "template", "template": T, "units": "fraction" | "pixels",
      "points": "kps5" | "eyes_mouth", "transform": "similarity" | "affine",
      "source": "kps5"}``: map the face's points onto template ``T`` (a
      ``.npy`` file, read with ``allow_pickle=False``, or a list of [x, y]).
      ``units`` says whether T is in fractions of the chip side or in chip
      pixels. ``points`` names T's rows: ``"kps5"`` = image-left eye,
      image-right eye, nose tip, image-left and image-right mouth corner;
      ``"eyes_mouth"`` = image-left eye, image-right eye, mouth centre
      (MobileFace's ``mobileface_align_v1.npy`` is this, in fractions).
      ``transform``: a least-squares ``"similarity"`` (rotation, one scale,
      shift) or an ``"affine"`` map (exact for three points, as MobileFace's
      ``cv2.getAffineTransform``; least squares for more). ``source`` (default
      ``"kps5"``): the ``Faces`` column holding the points; ``"kps5"`` gives
      both point sets (the mouth centre is the mean of the two corners); any
      other name is an extra column of (N, K, 2) points in T's order, such as
      ``"landmarks_eme"`` filled by a MobileFace 3-point landmark stage.
``normalize`` (optional, default ``"none"``)
    ``"l2"`` divides each embedding by its length; ``"none"`` keeps the
    network's output.
``cosine_threshold`` (optional)
    Cosine similarity at or above which two faces are the same person, used
    by ``python -m mobileface verify`` when no ``--threshold`` is given.
``input_name``, ``output_name`` (optional)
    The ONNX input and output to use (default: the model's first ones).
``notes`` (optional)
    Free text (where the model comes from, its licence).

Unknown fields and bad values raise ``ValueError`` naming the field.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobileface.models.registry import parse_json
from mobileface.stages.align import arcface_transforms, dlib_chip_transforms, similarity_transforms

COLORS = ("rgb", "bgr", "gray")
NORMALIZE = ("none", "l2")
ALIGN_METHODS = ("arcface", "dlib", "template")
POINT_SETS = {"kps5": 5, "eyes_mouth": 3}
TRANSFORMS = ("similarity", "affine")
_FIELDS = {"name", "model", "sha256", "input_size", "color", "mean", "std", "align",
           "normalize", "cosine_threshold", "input_name", "output_name", "notes"}
_ALIGN_FIELDS = {"arcface": {"method"}, "dlib": {"method", "padding"},
                 "template": {"method", "template", "units", "points", "transform", "source"}}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return value


@dataclass(frozen=True)
class Alignment:
    """How a chip is cut from the frame (see the module docstring)."""

    method: str
    padding: float = 0.25                  # dlib
    template: np.ndarray | None = field(default=None, compare=False)   # (K, 2), units below
    units: str = "fraction"
    points: str = "kps5"
    transform: str = "similarity"
    source: str = "kps5"

    @classmethod
    def from_value(cls, value: Any, base: Path) -> "Alignment":
        if isinstance(value, str):
            value = {"method": value}
        if not isinstance(value, dict):
            raise ValueError(f"align must be a method name or an object, got {value!r}")
        method = value.get("method")
        if method not in ALIGN_METHODS:
            raise ValueError(f"align.method must be one of {', '.join(ALIGN_METHODS)}, "
                             f"got {method!r}")
        unknown = set(value) - _ALIGN_FIELDS[method]
        if unknown:
            raise ValueError(f"unknown align field(s) for method {method!r}: "
                             f"{', '.join(sorted(unknown))}")
        if method == "arcface":
            return cls("arcface")
        if method == "dlib":
            padding = _number(value.get("padding", 0.25), "align.padding")
            if padding < 0:
                raise ValueError(f"align.padding must be >= 0, got {padding}")
            return cls("dlib", padding=padding)
        for key in ("template", "units", "points", "transform"):
            if key not in value:
                raise ValueError(f"align.{key} is required for method 'template'")
        units, points, transform = value["units"], value["points"], value["transform"]
        if units not in ("fraction", "pixels"):
            raise ValueError(f"align.units must be 'fraction' or 'pixels', got {units!r}")
        if points not in POINT_SETS:
            raise ValueError(f"align.points must be one of {', '.join(POINT_SETS)}, "
                             f"got {points!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"align.transform must be one of {', '.join(TRANSFORMS)}, "
                             f"got {transform!r}")
        source = value.get("source", "kps5")
        if not isinstance(source, str) or not source:
            raise ValueError(f"align.source must be a column name, got {source!r}")
        raw = value["template"]
        if isinstance(raw, (str, Path)):
            path = Path(raw) if Path(raw).is_absolute() else base / raw
            try:
                raw = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ValueError(f"align.template: cannot read {path} as a numpy array "
                                 f"without pickle ({exc})") from None
        try:
            template = np.array(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"align.template must be a list of [x, y] points, "
                             f"got {raw!r}") from None
        count = POINT_SETS[points]
        if template.shape != (count, 2):
            raise ValueError(f"align.template has shape {template.shape}; points {points!r} "
                             f"needs ({count}, 2)")
        if not np.isfinite(template).all():
            raise ValueError("align.template has NaN or infinite values")
        if units == "fraction" and (template.min() < 0 or template.max() > 1):
            raise ValueError("align.template in units 'fraction' must lie in [0, 1]")
        spread = template - template.mean(axis=0)
        if np.linalg.matrix_rank(spread, tol=1e-9) < 2:
            raise ValueError("align.template points are collinear")
        template.setflags(write=False)
        return cls("template", template=template, units=units, points=points,
                   transform=transform, source=source)

    @property
    def requires(self) -> tuple[str, ...]:
        """The Faces columns the alignment reads (extra columns are checked at run time)."""
        if self.method == "dlib":
            return ("landmarks68",)
        if self.method == "arcface" or self.source == "kps5":
            return ("kps5",)
        return ()

    def chip_template(self, size: int) -> np.ndarray:
        assert self.template is not None
        return self.template * size if self.units == "fraction" else self.template.copy()

    def transforms(self, faces, size: int) -> np.ndarray:
        """(N, 2, 3) image -> chip matrices for every face."""
        if self.method == "arcface":
            return arcface_transforms(faces.kps5, size)
        if self.method == "dlib":
            return dlib_chip_transforms(faces.landmarks68, size, self.padding)
        points = self.source_points(faces)
        template = np.broadcast_to(self.chip_template(size), points.shape)
        if self.transform == "similarity":
            return similarity_transforms(points, template)
        return _affine_transforms(points, template)

    def source_points(self, faces) -> np.ndarray:
        if self.source == "kps5":
            kps = np.asarray(faces.kps5, np.float64)
            if kps.ndim != 3 or kps.shape[1:] != (5, 2):
                raise ValueError(f"kps5 must have shape (N, 5, 2), got {kps.shape}")
            if self.points == "kps5":
                return kps
            return np.stack([kps[:, 0], kps[:, 1], (kps[:, 3] + kps[:, 4]) / 2], axis=1)
        if self.source not in faces.extra:
            raise ValueError(f"alignment needs the column {self.source!r}; run the stage "
                             "that fills it first")
        points = np.asarray(faces.extra[self.source], np.float64)
        count = POINT_SETS[self.points]
        if points.ndim != 3 or points.shape[1:] != (count, 2):
            raise ValueError(f"column {self.source!r} has shape {points.shape}, "
                             f"the template needs (N, {count}, 2)")
        return points

    def to_dict(self) -> Any:
        if self.method == "arcface":
            return "arcface"
        if self.method == "dlib":
            return {"method": "dlib", "padding": self.padding}
        # the numbers themselves, so that a written spec needs no other file
        template = [[float(f"{v:.7g}") for v in row] for row in self.template]
        out = {"method": "template", "template": template, "units": self.units,
               "points": self.points, "transform": self.transform}
        if self.source != "kps5":
            out["source"] = self.source
        return out


def _affine_transforms(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Affine maps points -> template, batched: exact for 3 points, least squares for more.

    A face whose points are (nearly) collinear has no affine map; it gets the
    least-squares similarity instead.
    """
    n, k, _ = points.shape
    design = np.concatenate([points, np.ones((n, k, 1))], axis=2)          # (N, K, 3)
    solution = np.linalg.pinv(design) @ template                          # (N, 3, 2)
    matrices = np.ascontiguousarray(solution.transpose(0, 2, 1))           # (N, 2, 3)
    scale = np.abs(points - points.mean(1, keepdims=True)).max(axis=(1, 2))
    det = np.linalg.det(matrices[:, :, :2])
    bad = ~np.isfinite(det) | (np.abs(det) * np.maximum(scale, 1e-12) ** 2 < 1e-6)
    if bad.any():
        matrices[bad] = similarity_transforms(points[bad], template[bad])
    return matrices


@dataclass(frozen=True)
class EmbedderSpec:
    """An ONNX face embedder and its input convention (see the module docstring)."""

    name: str
    model: Path
    input_size: int
    color: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    align: Alignment
    normalize: str = "none"
    sha256: str | None = None
    cosine_threshold: float | None = None
    input_name: str | None = None
    output_name: str | None = None
    notes: str = ""

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @classmethod
    def from_dict(cls, data: dict, base: Path | str = ".") -> "EmbedderSpec":
        """Validate a spec dict; relative paths are taken from ``base``."""
        if not isinstance(data, dict):
            raise ValueError(f"an embedder spec must be an object, got {type(data).__name__}")
        base = Path(base)
        unknown = set(data) - _FIELDS
        if unknown:
            raise ValueError(f"unknown spec field(s): {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(_FIELDS))})")
        for key in ("name", "model", "input_size", "color", "mean", "std", "align"):
            if key not in data:
                raise ValueError(f"the spec field {key!r} is required")
        name = data["name"]
        if not isinstance(name, str) or not name.strip() or any(c in name for c in ":\n"):
            raise ValueError(f"name must be a non-empty string without ':' or newlines, "
                             f"got {name!r}")
        model = data["model"]
        if not isinstance(model, (str, Path)) or not str(model):
            raise ValueError(f"model must be a file path, got {model!r}")
        model = Path(model) if Path(model).is_absolute() else base / model
        size = data["input_size"]
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"input_size must be one number or [side, side] (square "
                                 f"chips only), got {size!r}")
            size = size[0]
        if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 1024:
            raise ValueError(f"input_size must be an integer from 8 to 1024, got {size!r}")
        color = data["color"]
        if color not in COLORS:
            raise ValueError(f"color must be one of {', '.join(COLORS)}, got {color!r}")
        channels = 1 if color == "gray" else 3
        mean = cls._per_channel(data["mean"], "mean", channels)
        std = cls._per_channel(data["std"], "std", channels)
        if any(s == 0 for s in std):
            raise ValueError(f"std must not be zero, got {list(std)}")
        normalize = data.get("normalize", "none")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
        sha = data.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                                or any(c not in "0123456789abcdef" for c in sha.lower())):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha!r}")
        threshold = data.get("cosine_threshold")
        if threshold is not None:
            threshold = _number(threshold, "cosine_threshold")
            if not -1 <= threshold <= 1:
                raise ValueError(f"cosine_threshold must lie in [-1, 1], got {threshold}")
        for key in ("input_name", "output_name", "notes"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string, got {data[key]!r}")
        return cls(name=name, model=model, input_size=size, color=color, mean=mean, std=std,
                   align=Alignment.from_value(data["align"], base), normalize=normalize,
                   sha256=sha.lower() if sha else None, cosine_threshold=threshold,
                   input_name=data.get("input_name"), output_name=data.get("output_name"),
                   notes=data.get("notes") or "")

    @staticmethod
    def _per_channel(value: Any, what: str, channels: int) -> tuple[float, ...]:
        if isinstance(value, (list, tuple)):
            if len(value) == 1:
                value = value[0]
            elif len(value) != channels:
                raise ValueError(f"{what} needs 1 or {channels} values for this colour, "
                                 f"got {len(value)}")
            else:
                return tuple(_number(v, what) for v in value)
        return (_number(value, what),) * channels

    def to_dict(self, relative_to: Path | str | None = None) -> dict:
        """The spec as JSON-ready data; the model path relative to ``relative_to``."""
        model = self.model
        if relative_to is not None:
            try:
                model = self.model.resolve().relative_to(Path(relative_to).resolve())
            except ValueError:
                model = self.model.resolve()
        out: dict[str, Any] = {"name": self.name, "model": str(model)}
        if self.sha256:
            out["sha256"] = self.sha256
        out.update({"input_size": self.input_size, "color": self.color,
                    "mean": list(self.mean), "std": list(self.std),
                    "align": self.align.to_dict(), "normalize": self.normalize})
        for key in ("cosine_threshold", "input_name", "output_name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.notes:
            out["notes"] = self.notes
        return out

    def preprocessing_digest(self) -> str:
        """sha256 of everything that shapes the network's input, for ``model_id``."""
        align = self.align
        fields = {"input_size": self.input_size, "color": self.color, "mean": self.mean,
                  "std": self.std, "normalize": self.normalize, "method": align.method}
        if align.method == "dlib":
            fields["padding"] = align.padding
        elif align.method == "template":
            fields.update(template=np.round(align.template, 6).tolist(), units=align.units,
                          points=align.points, transform=align.transform, source=align.source)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def blob(self, chips_bgr: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) BGR uint8 chips -> the (N, C, S, S) float32 network input."""
        import cv2

        n, s = chips_bgr.shape[:2]
        if self.color == "gray":
            flat = chips_bgr.reshape(n * s, s, 3)
            pixels = cv2.cvtColor(flat, cv2.COLOR_BGR2GRAY).reshape(n, s, s, 1)
        elif self.color == "rgb":
            pixels = chips_bgr[..., ::-1]
        else:
            pixels = chips_bgr
        x = (pixels.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_spec(path: str | Path) -> EmbedderSpec:
    """Read an embedder spec JSON file (ValueError with the reason when it is not valid)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the embedder spec {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the embedder spec {path} is not UTF-8 text") from None
    try:
        data = parse_json(text)   # deep nesting is a ValueError too, not a RecursionError
    except ValueError as exc:
        raise ValueError(f"the embedder spec {path} is not valid JSON ({exc})") from None
    try:
        return EmbedderSpec.from_dict(data, base=path.parent)
    except ValueError as exc:
        raise ValueError(f"embedder spec {path}: {exc}") from None


def save_spec(spec: EmbedderSpec, path: str | Path) -> Path:
    """Write ``spec`` as JSON; the model path is stored relative to the spec's folder."""
    path = Path(path)
    data = spec.to_dict(relative_to=path.parent)
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return path
