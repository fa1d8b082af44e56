"""dlib's ERT shape predictor (Kazemi & Sullivan 2014) in numpy, batched over faces.

``load_shape_predictor`` reads dlib's ``shape_predictor`` .dat file (dlib's own
serialisation, no dlib needed) and ``ShapePredictor.predict`` reproduces
``dlib.shape_predictor`` for a batch of faces at once.

How dlib predicts (dlib/image_processing/shape_predictor.h), and what we copy:

* The shape starts as the model's mean shape, in a frame where the face box
  maps to the unit square. Each of the cascade levels (15 for the 68-point
  model) then adds the leaf vectors of its regression trees (500 per level).
* Before a level, the level's feature pixels (500) are placed relative to the
  current shape: each pixel is an anchor landmark plus an offset, the offset
  turned by the similarity transform from the mean shape to the current shape
  (Umeyama least squares in double, here in closed form, then cast to
  float32; the offset is turned in float32). The point is
  mapped to the image with the box (x = left + (right-left)*u, in double),
  rounded to the nearest pixel (floor(x + 0.5)) and read as a grey intensity:
  0 outside the image, the integer mean (r+g+b)//3 of a colour pixel (so BGR
  and RGB give the same result).
* Each tree is complete: split nodes first, then leaves. A node goes left
  when ``pixel[idx1] - pixel[idx2] > thresh`` (float32). We evaluate all 15
  split nodes of every tree with a few large gathers and turn the 15 outcomes
  into the leaf index with a lookup table (cheaper in numpy than a walk).
* dlib adds the leaf vectors one tree after another in float32; we add them in
  the same order (numpy reduces over a non-contiguous axis sequentially), so
  the points match dlib's exactly (tested on real photos and random boxes;
  only a double-rounding tie in the similarity transform could differ).
* The final points are mapped through the box and rounded to whole pixels as
  dlib does (``round=False`` keeps the sub-pixel positions).

Boxes: dlib takes ``dlib.rectangle(left, top, right, bottom)`` with integer
corners and maps the unit square onto (left, top)-(right, bottom), i.e. the
box width is ``right - left``. ``predict`` takes float xyxy boxes and uses
``x1, y1, x2, y2`` as ``left, top, right, bottom`` after rounding them to the
nearest integer (``np.round``), which is what passing the rounded ints to
``dlib.rectangle(x1, y1, x2, y2)`` does.

File format (dlib/serialize.h): every number is an integer written as a control
byte (low 4 bits: number of bytes that follow, bit 0x80: negative) and then the
magnitude, little-endian. A float is two such integers, an int64 mantissa and
an int16 exponent, value = mantissa * 2**exponent. A std::vector is its size
then its elements; a dlib matrix is -rows, -cols (negated in the current
format) then its elements row by row. The shape predictor is: version (1),
initial_shape (matrix), forests (vector of levels, each a vector of trees; a
tree is a vector of splits (idx1, idx2, thresh) then a vector of leaf
matrices), anchor_idx (per level, per pixel) and deltas (per level, per pixel,
an (x, y) pair of floats). Parsing is vectorised: every leaf matrix header
is found with one regex scan, the float positions inside all leaf matrices are
followed in lockstep and decoded at once (about 1.5 s for the 99 MB file).
:func:`cached_shape_predictor` keeps the decoded arrays in the model cache
(plain ``.npz``, no pickle, with a sha256 record like the converted models),
so that later processes load them in a few tens of milliseconds.

Speed (2-core CPU, benchmark/landmarks_ert.py): batched over 8 faces about
1.3-1.5 ms per face against dlib's 2.4-2.5 ms; a single face costs about 4.4 ms
(numpy call overhead: ~45 array operations per cascade level).
"""
from __future__ import annotations

import math
import re
import io
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from mobileface.errors import ModelError

log = logging.getLogger(__name__)

#: bumped whenever the cached arrays change meaning, so that older caches are redone
ARRAYS_VERSION = 1

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class _Corrupt(Exception):
    """Internal: the file does not follow the expected layout."""


# ----------------------------------------------------------------------------
# dlib serialisation


class _Reader:
    """Sequential reader of dlib-serialised integers and floats (for the small parts)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def int(self) -> int:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise _Corrupt(f"unexpected end of file at byte {pos}")
        control = data[pos]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise _Corrupt(f"bad integer control byte 0x{control:02x} at byte {pos}")
        end = pos + 1 + size
        if end > len(data):
            raise _Corrupt(f"unexpected end of file at byte {len(data)}")
        value = int.from_bytes(data[pos + 1:end], "little")
        self.pos = end
        return -value if control & 0x80 else value

    def uint(self) -> int:
        value = self.int()
        if value < 0:
            raise _Corrupt(f"negative size or index {value} before byte {self.pos}")
        return value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def matrix_shape(self) -> tuple[int, int]:
        rows, cols = self.int(), self.int()
        if rows < 0 or cols < 0:        # the current format stores -rows, -cols
            return -rows, -cols
        return cols, rows               # the old format stored cols first


def _decode_many(buf: np.ndarray, starts: np.ndarray, count: int):
    """Decode ``count`` consecutive integers from each start position at once.

    ``buf`` is the file's bytes followed by at least 16 zero bytes. Returns
    (values (W, count) int64, ends (W,) int64, ok (W,) bool); ``ok`` is False
    where a control byte was bad or the read ran past the end of the file.
    """
    limit = len(buf) - 16
    pos = starts.astype(np.int64)
    ok = pos <= limit
    pos = np.where(ok, pos, 0)
    values = np.empty((count, len(pos)), np.int64)
    for k in range(count):
        control = buf[pos]
        size = (control & 0x0F).astype(np.int64)
        ok &= (size <= 8) & ((control & 0x70) == 0)
        size = np.minimum(size, 8)
        magnitude = np.zeros(len(pos), np.int64)
        for j in range(int(size.max(initial=0))):
            byte = buf[pos + 1 + j].astype(np.int64)
            magnitude |= np.where(j < size, byte, 0) << (8 * j)
        values[k] = np.where(control & 0x80, -magnitude, magnitude)
        pos = pos + 1 + size
        ok &= pos <= limit
        pos = np.minimum(pos, limit)
    return values.T, pos, ok


def _float_positions(buf: np.ndarray, starts: np.ndarray, count: int, block: int = 4096):
    """Where each of ``count`` consecutive floats starts, from each start position.

    Only follows the control bytes (a float is two integers). Returns
    (positions (W, count) int64, ends (W,) int64); positions past the end of the
    file are clamped to it (the caller checks the ends).
    """
    limit = len(buf) - 16
    positions = np.empty((len(starts), count), np.int64)
    ends = np.empty(len(starts), np.int64)
    for a in range(0, len(starts), block):
        pos = np.minimum(starts[a:a + block], limit).astype(np.intp)
        rows = np.empty((count, len(pos)), np.intp)
        for k in range(count):
            rows[k] = pos
            pos = pos + (np.take(buf, pos) & 0x0F) + 1
            pos = np.minimum(pos + (np.take(buf, pos) & 0x0F) + 1, limit)
        positions[a:a + block] = rows.T
        ends[a:a + block] = pos
    return positions, ends


def _byte_tables():
    codes = np.arange(256)
    size = codes & 0x0F
    valid = (codes & 0x70) == 0
    mask = np.where(size >= 4, -1, (1 << (8 * np.minimum(size, 3))) - 1).astype(np.int32)
    sign = np.where(codes & 0x80, -1, 1)
    return {
        "mask": mask,
        "sign": sign.astype(np.float64),
        "isign": sign.astype(np.int32),
        # a float32 mantissa has at most 3 bytes and an int16 exponent at most 2
        "bad_mantissa": ~valid | (size > 3),
        "bad_exponent": ~valid | (size > 2),
    }


_TABLES = _byte_tables()
_POW2_OFFSET = 1000
_POW2 = np.ldexp(1.0, np.arange(-_POW2_OFFSET, _POW2_OFFSET + 1))


def _floats_at(data: bytes, buf: np.ndarray, positions: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """Decode the floats that start at ``positions`` (any shape) -> float32, same shape.

    Vectorised for encodings of at most 3 mantissa and 2 exponent bytes (every
    float32); any other float is decoded one by one.
    """
    t = _TABLES
    take = np.take
    flat = positions.ravel()
    out = np.empty(flat.shape, np.float32)
    for a in range(0, len(flat), block):
        pos = flat[a:a + block].astype(np.intp)
        control = take(buf, pos).astype(np.intp)
        exp_pos = pos + 1 + (control & 0x0F)
        exp_control = take(buf, exp_pos).astype(np.intp)
        magnitude = take(buf, pos + 1).astype(np.int32)
        magnitude |= take(buf, pos + 2).astype(np.int32) << 8
        magnitude |= take(buf, pos + 3).astype(np.int32) << 16
        magnitude &= take(t["mask"], control)
        exponent = take(buf, exp_pos + 1).astype(np.int32)
        exponent |= take(buf, exp_pos + 2).astype(np.int32) << 8
        exponent &= take(t["mask"], exp_control)
        exponent *= take(t["isign"], exp_control)
        np.clip(exponent, -_POW2_OFFSET, _POW2_OFFSET, out=exponent)
        scale = take(_POW2, exponent + _POW2_OFFSET)
        chunk = out[a:a + block]
        chunk[:] = magnitude * take(t["sign"], control) * scale
        odd = take(t["bad_mantissa"], control) | take(t["bad_exponent"], exp_control)
        odd |= np.abs(exponent) == _POW2_OFFSET
        for i in np.flatnonzero(odd):           # long encodings, specials: one by one
            chunk[i] = _Reader(data, int(pos[i])).float()
    return out.reshape(positions.shape)


def _floats(pairs: np.ndarray) -> np.ndarray:
    """(..., 2k) int64 mantissa/exponent pairs -> (..., k) float32 values."""
    mantissa = pairs[..., 0::2].astype(np.float64)
    exponent = pairs[..., 1::2]
    out = np.ldexp(mantissa, np.clip(exponent, -2000, 2000).astype(np.int32))
    out[exponent == 32000] = np.inf
    out[exponent == 32001] = -np.inf
    out[exponent == 32002] = np.nan
    return out.astype(np.float32)


@dataclass
class _Model:
    initial_shape: np.ndarray        # (P*2,) float32, x0 y0 x1 y1 ...
    split_idx1: np.ndarray           # (L, T, S) int64 feature index
    split_idx2: np.ndarray           # (L, T, S)
    split_thresh: np.ndarray         # (L, T, S) float32
    leaf_values: np.ndarray          # (L, T, S+1, P*2) float32
    anchor_idx: np.ndarray           # (L, K) int64
    deltas: np.ndarray               # (L, K, 2) float32


def _parse(data: bytes) -> _Model:
    r = _Reader(data)
    version = r.int()
    if version != 1:
        raise _Corrupt(f"unexpected shape_predictor version {version}")
    header_start = r.pos
    rows, cols = r.matrix_shape()
    if cols != 1 or rows == 0 or rows % 2:
        raise _Corrupt(f"initial shape is {rows}x{cols}, expected (2*parts)x1")
    header = data[header_start:r.pos]        # how a leaf matrix of this size starts
    dim = rows
    initial_shape = np.array([r.float() for _ in range(dim)], np.float32)

    buf = np.frombuffer(data + bytes(16), np.uint8)

    # Leaf matrices are the bulk of the file (136 floats each). Find every place
    # that looks like a leaf matrix header and follow all of them at once; the
    # walk over the trees below then only uses the ones it really reaches.
    candidates = np.array([m.start() for m in re.finditer(re.escape(header), data)], np.int64)
    leaf_positions, leaf_end = _float_positions(buf, candidates + len(header), dim)

    levels = r.uint()
    trees_per_level = None
    tree_starts, first_leaf = [], []
    splits = None
    for _level in range(levels):
        trees = r.uint()
        if trees_per_level is None:
            trees_per_level = trees
        elif trees != trees_per_level:
            raise _Corrupt("cascade levels have different numbers of trees")
        for _tree in range(trees):
            tree_starts.append(r.pos)
            n = r.uint()
            if splits is None:
                splits = n
                if n == 0 or (n + 1) & n:
                    raise _Corrupt(f"a tree with {n} splits is not complete")
            elif n != splits:
                raise _Corrupt("trees have different depths")
            # the splits end where the first leaf matrix starts (checked below)
            i = int(np.searchsorted(candidates, r.pos))
            if i + splits >= len(candidates):
                raise _Corrupt(f"missing leaf matrices after byte {r.pos}")
            first_leaf.append(i)
            r.pos = int(leaf_end[i + splits])
    if not tree_starts:
        raise _Corrupt("the model has no regression trees")
    if r.pos >= len(data):
        raise _Corrupt("unexpected end of file in the regression trees")

    # Check the walk: each tree's splits end at its first leaf matrix and its
    # leaf matrices follow one another; decode the splits of all trees at once.
    leaves = splits + 1
    leaf_rows = (np.asarray(first_leaf)[:, None] + np.arange(leaves)).ravel()
    starts = np.asarray(tree_starts, np.int64)
    values, ends, ok = _decode_many(buf, starts, 2 + 4 * splits)
    chained = candidates[leaf_rows].reshape(-1, leaves)
    if (not ok.all() or np.any(ends != chained[:, 0])
            or np.any(values[:, -1] != leaves)
            or np.any(leaf_end[leaf_rows].reshape(-1, leaves)[:, :-1] != chained[:, 1:])
            or np.any(leaf_end[leaf_rows] > len(data))):
        raise _Corrupt("the regression trees do not follow dlib's layout")
    split_fields = values[:, 1:-1].reshape(-1, splits, 4)
    shape3 = (levels, trees_per_level, splits)
    idx1 = split_fields[..., 0].reshape(shape3)
    idx2 = split_fields[..., 1].reshape(shape3)
    thresh = _floats(split_fields[..., 2:4]).reshape(shape3)
    leaf_values = _floats_at(data, buf, leaf_positions[leaf_rows])
    leaf_values = leaf_values.reshape(levels, trees_per_level, leaves, dim)

    # Feature pixels: anchor landmark and offset from it, per level.
    if r.uint() != levels:
        raise _Corrupt("anchor_idx does not have one entry per level")
    anchors = []
    for _level in range(levels):
        anchors.append([r.uint() for _ in range(r.uint())])
    if r.uint() != levels:
        raise _Corrupt("deltas do not have one entry per level")
    deltas = []
    for level in range(levels):
        n = r.uint()
        if n != len(anchors[level]) or n != len(anchors[0]):
            raise _Corrupt("deltas and anchor_idx disagree")
        deltas.append([r.float() for _ in range(2 * n)])
    if r.pos != len(data):
        raise _Corrupt(f"{len(data) - r.pos} unexpected bytes after the model")

    anchor_idx = np.asarray(anchors, np.int64)
    features = anchor_idx.shape[1]
    if anchor_idx.size and anchor_idx.max() >= dim // 2:
        raise _Corrupt("anchor index out of range")
    if max(idx1.max(), idx2.max()) >= features or min(idx1.min(), idx2.min()) < 0:
        raise _Corrupt("split feature index out of range")
    return _Model(initial_shape, idx1, idx2, thresh, leaf_values, anchor_idx,
                  np.asarray(deltas, np.float32).reshape(levels, features, 2))


def load_shape_predictor(path: str | Path) -> "ShapePredictor":
    """Read a dlib ``shape_predictor`` .dat file; raise ModelError if it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read shape predictor {path}: {exc.strerror or exc}") from None
    try:
        return ShapePredictor(_parse(data))
    except (_Corrupt, ValueError, IndexError, OverflowError) as exc:
        raise ModelError(f"shape predictor {path} is truncated or corrupt: {exc}") from None


def cached_shape_predictor(name: str = "dlib_shape_predictor_68") -> "ShapePredictor":
    """The registry's shape predictor ``name`` (its sha256 checked), from the decoded arrays
    in the model cache; the first call decodes the .dat file and writes them.

    The arrays file is checked against its sha256 record on every call: one damaged
    or replaced is decoded again, never used. A cache that cannot be written only costs
    the decoding next time.
    """
    from mobileface.models import registry

    source = registry.verified_path(name)
    digest = registry.get_spec(name).sha256          # what verified_path just checked
    cache = registry.cache_dir()
    target = cache / f"{name}-{digest[:16]}.npz"
    facts = {"source_sha256": digest, "arrays": ARRAYS_VERSION}
    state = registry.check_cached(target, **facts)
    if state == "ok":
        try:
            with np.load(target, allow_pickle=False) as arrays:
                return ShapePredictor(_Model(**{f.name: arrays[f.name] for f in fields(_Model)}))
        except (OSError, ValueError, KeyError) as exc:
            state = f"unreadable ({exc})"
    if state != "missing":
        log.warning("the cached arrays %s cannot be trusted (%s); decoding %s again",
                    target, state, source.name)
    predictor = load_shape_predictor(source)
    buffer = io.BytesIO()
    np.savez(buffer, **asdict(predictor._model))
    try:
        registry.write_cached(buffer.getvalue(), target, **facts)
    except OSError as exc:
        log.warning("cannot keep the decoded shape predictor in %s (%s)", cache,
                    exc.strerror or exc)
    return predictor


# ----------------------------------------------------------------------------
# prediction


class ShapePredictor:
    """dlib's ERT landmark model, evaluated for a batch of faces with numpy."""

    def __init__(self, model: _Model):
        levels, trees, splits = model.split_idx1.shape
        leaves = splits + 1
        self.num_levels = levels
        self.num_trees = trees
        self.depth = int(round(math.log2(leaves)))
        self.num_parts = model.initial_shape.size // 2
        self.num_features = model.anchor_idx.shape[1]
        self._model = model
        dim = model.initial_shape.size
        self.initial_shape = model.initial_shape.copy()                    # (2P,)

        # Similarity transform from the mean shape to the current shape, in
        # closed form: with the mean shape centred (u, v), the least-squares
        # rotation-and-scale [[a, -b], [b, a]] has a = sum(u x + v y) / s and
        # b = sum(u y - v x) / s, s = sum(u^2 + v^2); the centring of the
        # current shape drops out because sum(u) = sum(v) = 0.
        mean = model.initial_shape.astype(np.float64).reshape(-1, 2)
        centred = mean - mean.mean(0)
        u, v = centred[:, 0], centred[:, 1]
        s = float(np.sum(u * u + v * v))
        gram = np.zeros((dim, 2))
        gram[0::2, 0], gram[1::2, 0] = u / s, v / s        # a
        gram[0::2, 1], gram[1::2, 1] = -v / s, u / s       # b
        self._similarity = gram

        anchor_x = 2 * model.anchor_idx                                    # (L, K)
        self._anchor_xy = np.concatenate([anchor_x, anchor_x + 1], 1).astype(np.intp)  # (L, 2K)
        self._dx = np.ascontiguousarray(model.deltas[..., 0])              # (L, K) float32
        self._dy = np.ascontiguousarray(model.deltas[..., 1])
        # Splits: every node of every tree is evaluated (a few large gathers
        # instead of a walk of small ones), node-major: row s*T + t is node s
        # of tree t. The outcomes of a tree's nodes, as bits of an integer,
        # index a table giving the leaf that the walk from the root reaches.
        self._idx1 = model.split_idx1.transpose(0, 2, 1).reshape(levels, -1).astype(np.intp)
        self._idx2 = model.split_idx2.transpose(0, 2, 1).reshape(levels, -1).astype(np.intp)
        # pixel differences are integers: d > t  <=>  d >= floor(t) + 1
        thresh = np.floor(model.split_thresh.astype(np.float64)) + 1
        thresh[np.isnan(thresh)] = 512                 # d > nan is never true
        thresh = np.clip(thresh, -512, 512).astype(np.int16).transpose(0, 2, 1)
        self._thresh = np.ascontiguousarray(thresh.reshape(levels, -1, 1))    # (L, S*T, 1)
        self._thresh_cache: dict[int, np.ndarray] = {}
        self._bit_values = (2.0 ** np.arange(splits)).astype(np.float32)
        self._leaf_of_bits = _leaf_table(splits)
        self._tree_offset = (np.arange(trees) * leaves).astype(np.intp)[:, None]
        # one leaf vector as one opaque item: np.take copies it with one memcpy
        self._leaves = np.ascontiguousarray(model.leaf_values).reshape(levels, trees * leaves, dim)
        self._leaf_items = self._leaves.view(f"V{dim * 4}").reshape(levels, trees * leaves)

    def predict(self, image: np.ndarray, boxes: np.ndarray, round: bool = True,
                start: np.ndarray | None = None, first_level: int = 0) -> np.ndarray:
        """Landmarks (N, P, 2) float32 for each box (N, 4 xyxy) of ``image``.

        ``image`` is (H, W, 3) uint8 (BGR or RGB: the intensity is the channel
        mean either way) or (H, W) uint8 grey. Each box is rounded to integer
        corners (left, top, right, bottom) as dlib.rectangle holds them. With
        ``round`` (the default) the points are whole pixels like dlib's.

        start, first_level: begin from these points (N, P, 2, image pixels) instead of the
        mean shape, and run only the cascade levels from ``first_level`` on: a face seen a
        frame before needs only the fine levels (tracking; dlib always starts from the mean
        shape at level 0, which is the default).
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected an (H, W, 3) or (H, W) uint8 image, got {image.dtype} {image.shape}")
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = len(boxes)
        if n == 0:
            return np.zeros((0, self.num_parts, 2), np.float32)
        height, width = image.shape[:2]
        pixels = image.reshape(-1)
        colour = image.ndim == 3

        rect = np.round(boxes)
        left, top = rect[:, 0:1], rect[:, 1:2]
        box_w, box_h = rect[:, 2:3] - left, rect[:, 3:4] - top

        take = np.take
        trees, dim = self.num_trees, self.initial_shape.size
        if start is None:
            shape = np.tile(self.initial_shape, (n, 1))                   # (N, 2P) float32
        else:                   # the points in the frame where the box is the unit square
            start = np.asarray(start, np.float64).reshape(n, -1, 2)
            unit = (start - np.stack([left, top], 2)) / np.stack([box_w, box_h], 2)
            shape = unit.reshape(n, -1).astype(np.float32)
        box_size = np.stack([box_w, box_h], 1)                            # (N, 2, 1) double
        box_corner = np.stack([left, top], 1) + 0.5
        limits = np.array([[width], [height]], np.uintp)
        value_item = f"V{2 * n}"                                           # one feature, all faces
        thresholds = self._thresholds(n)
        gathered = np.empty((trees, n), f"V{dim * 4}")
        summed = gathered.view(np.float32).reshape(trees, n, dim)
        for level in range(int(first_level), self.num_levels):
            # similarity (double, then float32 like dlib's matrix_cast<float>)
            ab = (shape.astype(np.float64) @ self._similarity).astype(np.float32)
            # feature points, x and y rows at once: [[a, -b], [b, a]] @ (dx, dy) + anchor,
            # i.e. (a, b) * dx + (-b, a) * dy + anchor, in float32 like dlib
            points = ab[:, :, None] * self._dx[level]                    # (N, 2, K)
            turned = ab[:, ::-1].copy()                                  # (-b, a)
            turned[:, 0] *= -1
            points += turned[:, :, None] * self._dy[level]
            points += take(shape, self._anchor_xy[level], axis=1).reshape(n, 2, -1)
            # to image pixels (double), rounded to the nearest pixel
            pixel = points * box_size
            pixel += box_corner
            pixel = np.floor(pixel, out=pixel).astype(np.intp)
            inside = pixel.astype(np.uintp) < limits
            inside = inside[:, 0] & inside[:, 1]
            index = pixel[:, 1] * width
            index += pixel[:, 0]
            index *= inside
            if colour:
                index *= 3
                value = take(pixels, index).astype(np.int16)
                value += take(pixels, index + 1)
                value += take(pixels, index + 2)
                value //= 3
            else:
                value = take(pixels, index).astype(np.int16)
            value *= inside
            # every split node: left when pixel[idx1] - pixel[idx2] > thresh
            items = np.ascontiguousarray(value.T).view(value_item).ravel()     # (K,)
            diff = take(items, self._idx1[level]).view(np.int16).reshape(-1, n)
            diff -= take(items, self._idx2[level]).view(np.int16).reshape(-1, n)
            goes_left = (diff >= thresholds[level]).reshape(-1, trees * n)    # (S, T*N)
            code = (self._bit_values @ goes_left.astype(np.float32)).astype(np.intp)
            leaf = take(self._leaf_of_bits, code.reshape(trees, n)) + self._tree_offset
            # add the leaves tree after tree in float32, as dlib does
            take(self._leaf_items[level], leaf, out=gathered, mode="clip")
            summed[0] += shape
            shape = np.add.reduce(summed, axis=0)

        points = shape.reshape(n, -1, 2).astype(np.float64)
        points = points * np.stack([box_w, box_h], 2) + np.stack([left, top], 2)
        if round:
            points = np.floor(points + 0.5)
        return points.astype(np.float32)

    __call__ = predict

    def _thresholds(self, n: int) -> np.ndarray:
        """Split thresholds repeated for n faces (L, S*T, n): a plain compare, no broadcast."""
        if n > 8:                   # bounded cache: 15 levels x 7500 nodes x n int16
            return self._thresh
        cached = self._thresh_cache.get(n)
        if cached is None:
            cached = np.ascontiguousarray(np.repeat(self._thresh, n, axis=2))
            self._thresh_cache[n] = cached
        return cached


def _leaf_table(splits: int) -> np.ndarray:
    """Leaf reached from the root, for every pattern of split outcomes (bit i: node i goes left)."""
    if splits > 16:
        raise _Corrupt(f"trees of {splits} splits are deeper than supported")
    codes = np.arange(1 << splits)
    node = np.zeros_like(codes)
    while True:
        internal = node < splits
        if not internal.any():
            break
        left = (codes >> np.minimum(node, splits - 1)) & 1
        node = np.where(internal, np.where(left == 1, 2 * node + 1, 2 * node + 2), node)
    return (node - splits).astype(np.intp)
