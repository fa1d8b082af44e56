"""Similarity-transform face alignment, vectorised over the faces of a frame.

Two chip conventions are provided:

* **dlib face chips** (the input of dlib's ResNet face descriptor):
  :func:`dlib_chip_transforms` reproduces ``dlib.get_face_chip_details(shape,
  size, padding)`` followed by ``extract_image_chip`` for 68-point shapes
  (dlib/image_transforms/interpolation.h, dlib 19.x/20.x):

  1. A template of the mean face shape (dlib's ``mean_face_shape_x/y``,
     landmarks 17..67 in a unit square) is padded,
     ``(padding + mean) / (2 * padding + 1) * size``. Only 33 of its points are
     used: 27..54 (nose, eyes, outer lips) and 60..64 (upper inner lip); the
     eyebrows (17..26) and the lower lip (55..59, 65..67) are ignored.
  2. ``find_similarity_transform`` (Umeyama's least-squares similarity, with
     the reflection fix) maps the template (chip coordinates) onto the detected
     points (image coordinates).
  3. A ``chip_details`` is built from it: angle and scale of that similarity,
     and a rectangle of side ``size * scale`` centred on the image point of
     chip point ``(size/2, size/2)``. dlib's ``centered_drect`` makes the
     rectangle ``size * scale - 1`` pixels from its first to its last pixel
     centre.
  4. ``extract_image_chip`` maps the (rotated) rectangle's corner pixel centres
     onto the chip's corner pixel centres ``0`` and ``size - 1``. The chip is
     therefore NOT exactly the similarity of step 2: its scale is
     ``(size * scale - 1) / (size - 1)`` and it is shifted by half a pixel; we
     build exactly this final mapping.

  Pixel centres lie on integer coordinates in dlib and in OpenCV, so the same
  matrix works with :func:`cv2.warpAffine`. dlib samples bilinearly and leaves
  pixels that fall outside the image black; we use a constant black border.
  When the face is much larger than the chip, dlib samples from a level of a
  2:1 Gaussian image pyramid (5-tap [1 4 6 4 1] filter) instead of the full
  image, so that the chip is not aliased; :func:`warp_chips` does the same with
  :func:`cv2.pyrDown` (the same filter) on a crop around the face, choosing the
  pyramid level with dlib's rule. (dlib's ``pyramid_down<2>::point_down`` uses
  an offset of (1.25, 0.75) level pixels that differs from where its filter
  really centres its output pixels (offset 1, 1); its pyramid chips are hence
  shifted by a fraction of a chip pixel. We use the exact level geometry.)

* **ArcFace / InsightFace chips**: :func:`arcface_transforms` maps five
  keypoints onto the standard 112x112 template by a least-squares similarity
  (Umeyama, image -> template, as InsightFace's ``norm_crop`` does); for other
  sizes the template is scaled by ``size / 112``.

All ``*_transforms`` functions return ``(N, 2, 3)`` float64 affine matrices that
map image pixel coordinates ``(x, y, 1)`` to chip pixel coordinates.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# dlib's mean face shape for landmarks 17..67 in a unit square
# (interpolation.h, get_face_chip_details).
_DLIB_MEAN_FACE_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
])
_DLIB_MEAN_FACE_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
])
#: the 68-point landmarks dlib fits its template to: nose, eyes, outer lips
#: 27..54 and the upper inner lip 60..64.
DLIB_TEMPLATE_INDICES = np.r_[27:55, 60:65]

#: InsightFace's 112x112 ArcFace template: image-left eye, image-right eye,
#: nose tip, image-left and image-right mouth corner.
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])


# ---------------------------------------------------------------------------
# Least-squares similarity
# ---------------------------------------------------------------------------

def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarities mapping ``src`` onto ``dst``, batched.

    src, dst: (N, K, 2) or (K, 2) corresponding points (K >= 2). Returns
    (N, 2, 3) matrices ``[c R | t]`` minimising ``sum |c R src + t - dst|^2``
    (Umeyama 1991, eqs. 34-43; a reflection is never returned). Degenerate
    ``src`` (all points equal) gives scale 1, as in dlib.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src, dst = np.broadcast_arrays(src, dst)
    if src.ndim == 2:
        src, dst = src[None], dst[None]
    mean_src = src.mean(axis=1, keepdims=True)
    mean_dst = dst.mean(axis=1, keepdims=True)
    d_src = src - mean_src
    d_dst = dst - mean_dst
    var_src = (d_src ** 2).sum(axis=(1, 2)) / src.shape[1]
    cov = np.einsum("nki,nkj->nij", d_dst, d_src) / src.shape[1]
    u, sing, vt = np.linalg.svd(cov)
    # Flip the smaller singular direction when the best orthogonal matrix
    # would be a reflection (det(U) det(V) < 0).
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    sign[sign == 0] = 1.0
    s = np.stack([np.ones_like(sign), sign], axis=1)
    rot = u @ (s[:, :, None] * vt)
    safe_var = np.where(var_src > 0, var_src, 1.0)
    scale = np.where(var_src > 0, (sing * s).sum(axis=1) / safe_var, 1.0)
    lin = scale[:, None, None] * rot
    trans = mean_dst[:, 0] - np.einsum("nij,nj->ni", lin, mean_src[:, 0])
    return np.concatenate([lin, trans[:, :, None]], axis=2)


def invert_affine(matrices: np.ndarray) -> np.ndarray:
    """Inverse of (N, 2, 3) affine matrices."""
    matrices = np.asarray(matrices, np.float64)
    lin_inv = np.linalg.inv(matrices[:, :, :2])
    trans = -np.einsum("nij,nj->ni", lin_inv, matrices[:, :, 2])
    return np.concatenate([lin_inv, trans[:, :, None]], axis=2)


def transform_points(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (N, 2, 3) matrices to (N, K, 2) points -> (N, K, 2) float64."""
    matrices = np.asarray(matrices, np.float64)
    points = np.asarray(points, np.float64)
    return np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


# ---------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------

def _check_points(points: np.ndarray, count: int, name: str) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.ndim != 3 or points.shape[1:] != (count, 2):
        raise ValueError(f"{name} must have shape (N, {count}, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} has NaN or infinite coordinates")
    return points


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")
    return int(size)


def dlib_template(size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib's chip template: (33, 2) chip coordinates of DLIB_TEMPLATE_INDICES."""
    mean = np.stack([_DLIB_MEAN_FACE_X, _DLIB_MEAN_FACE_Y], axis=1)[DLIB_TEMPLATE_INDICES - 17]
    return (padding + mean) / (2 * padding + 1) * size


def dlib_chip_transforms(landmarks68: np.ndarray, size: int = 150,
                         padding: float = 0.25) -> np.ndarray:
    """Image -> chip matrices (N, 2, 3) of ``dlib.get_face_chip(img, shape, size, padding)``.

    landmarks68: (N, 68, 2) iBUG 300-W points in image pixels. See the module
    docstring for the steps; the result is the exact mapping dlib's
    ``extract_image_chip`` applies (chip pixel (0, 0) and (size-1, size-1) are
    the rotated rectangle's first and last pixel centres).
    """
    points = _check_points(landmarks68, 68, "landmarks68")
    size = _check_size(size)
    if not np.isfinite(padding) or padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    n = len(points)
    if n == 0:
        return np.zeros((0, 2, 3))
    template = np.broadcast_to(dlib_template(size, padding), (n, len(DLIB_TEMPLATE_INDICES), 2))
    chip_to_image = similarity_transforms(template, points[:, DLIB_TEMPLATE_INDICES])
    lin = chip_to_image[:, :, :2]
    step = lin[:, :, 0]  # image displacement of one chip pixel along x
    scale = np.hypot(step[:, 0], step[:, 1])
    angle = np.arctan2(step[:, 1], step[:, 0])
    # Rectangle centre: the image point of chip point (size/2, size/2).
    centre = lin @ np.full(2, size / 2.0) + chip_to_image[:, :, 2]
    # Image pixels per chip pixel between the rectangle's corner pixel centres.
    step_len = (size * scale - 1.0) / (size - 1.0)
    cos, sin = np.cos(angle), np.sin(angle)
    # chip = R(-angle) (x - centre) / step_len + (size - 1) / 2
    inv_rot = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)
    lin_out = inv_rot / step_len[:, None, None]
    trans = (size - 1) / 2.0 - np.einsum("nij,nj->ni", lin_out, centre)
    return np.concatenate([lin_out, trans[:, :, None]], axis=2)


def arcface_template(size: int = 112) -> np.ndarray:
    """The ArcFace 5-point template for a ``size`` x ``size`` chip, (5, 2)."""
    return ARCFACE_TEMPLATE_112 * (_check_size(size) / 112.0)


def arcface_transforms(kps5: np.ndarray, size: int = 112) -> np.ndarray:
    """Image -> chip matrices (N, 2, 3) putting 5 keypoints on the ArcFace template.

    kps5: (N, 5, 2): image-left eye, image-right eye, nose, image-left and
    image-right mouth corner (the order of ``Faces.kps5``). The least-squares
    similarity is estimated from image to template, as InsightFace does.
    """
    points = _check_points(kps5, 5, "kps5")
    template = arcface_template(size)
    if len(points) == 0:
        return np.zeros((0, 2, 3))
    return similarity_transforms(points, np.broadcast_to(template, points.shape))


# ---------------------------------------------------------------------------
# Warping
# ---------------------------------------------------------------------------

def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be a non-empty (H, W) or (H, W, C) array, got {shape}")
    return image


def _check_matrices(matrices: np.ndarray) -> np.ndarray:
    matrices = np.asarray(matrices, np.float64)
    if matrices.ndim != 3 or matrices.shape[1:] != (2, 3):
        raise ValueError(f"matrices must have shape (N, 2, 3), got {matrices.shape}")
    if not np.isfinite(matrices).all():
        raise ValueError("matrices have NaN or infinite entries")
    if np.any(np.abs(np.linalg.det(matrices[:, :, :2])) < 1e-12):
        raise ValueError("matrices must be invertible")
    return matrices


def pyramid_levels(matrices: np.ndarray, size: int) -> np.ndarray:
    """How many 2:1 pyramid halvings dlib's extract_image_chip would apply, (N,) int.

    dlib halves the chip's source rectangle (side ``size * scale`` image pixels,
    ``scale`` = image pixels per chip pixel) while the halved rectangle is
    still larger than the chip; a halved dlib rectangle of side ``w`` has side
    ``(w - 1) / 2 + 1``.
    """
    scale = 1.0 / np.sqrt(np.abs(np.linalg.det(np.asarray(matrices)[:, :, :2])))
    side = size * scale
    levels = np.zeros(len(side), int)
    while True:
        halved = (side - 1) / 2 + 1
        grow = halved > size
        if not grow.any():
            return levels
        side = np.where(grow, halved, side)
        levels += grow


def _source_box(matrix: np.ndarray, size: int, margin: float, shape: tuple) -> tuple:
    """Integer image box (x0, y0, x1, y1), clipped, covering the chip plus a margin."""
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5],
                        [size - 0.5, size - 0.5]])
    src = transform_points(invert_affine(matrix[None]), corners[None])[0]
    x0, y0 = np.floor(src.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(src.max(axis=0) + margin).astype(int) + 1
    return max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])


def _warp_one(image: np.ndarray, matrix: np.ndarray, size: int, levels: int) -> np.ndarray:
    import cv2

    flags = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if levels == 0:
        return cv2.warpAffine(image, matrix, (size, size), **flags)
    factor = 2 ** levels
    # The blur of `levels` pyrDowns plus bilinear sampling reaches < 3 * factor
    # image pixels from a sample; a wider crop leaves the chip unchanged.
    x0, y0, x1, y1 = _source_box(matrix, size, 3 * factor + 2, image.shape)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((size, size) + image.shape[2:], image.dtype)
    level = image[y0:y1, x0:x1]
    factor = 1
    for _ in range(levels):
        if min(level.shape[:2]) < 2:
            break
        level = cv2.pyrDown(level)
        factor *= 2
    # pyrDown centres output pixel u on input pixel 2u: image x = x0 + factor * u.
    to_image = np.array([[factor, 0.0, x0], [0.0, factor, y0], [0.0, 0.0, 1.0]])
    return cv2.warpAffine(level, matrix @ to_image, (size, size), **flags)


def warp_chips(image_bgr: np.ndarray, matrices: np.ndarray, size: int,
               antialias: bool = True) -> np.ndarray:
    """Warp one chip per matrix: (N, size, size, C) with the image's dtype.

    image_bgr: (H, W, 3) uint8 BGR frame ((H, W) and other channel counts work
    too). matrices: (N, 2, 3) image -> chip maps. Bilinear sampling; pixels
    outside the image are black, as in dlib. With ``antialias`` (default), a
    face much larger than the chip is sampled from a 2:1 Gaussian pyramid level
    of a crop around it (dlib's rule for the level, see
    :func:`pyramid_levels`).
    """
    image = _check_image(image_bgr)
    matrices = _check_matrices(matrices)
    size = _check_size(size)
    out = np.zeros((len(matrices), size, size) + image.shape[2:], image.dtype)
    if len(matrices) == 0:
        return out
    levels = pyramid_levels(matrices, size) if antialias else np.zeros(len(matrices), int)
    for i, (matrix, level) in enumerate(zip(matrices, levels)):
        out[i] = _warp_one(image, matrix, size, int(level))
    return out


def dlib_chips(image: np.ndarray, landmarks68: np.ndarray, size: int = 150,
               padding: float = 0.25) -> np.ndarray:
    """dlib face chips (N, size, size, C), like ``dlib.get_face_chip`` per face."""
    return warp_chips(image, dlib_chip_transforms(landmarks68, size, padding), size)
