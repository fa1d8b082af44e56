"""Finding the photos nearest to a face in a large gallery: 1-bit codes, then exact.

Below :data:`EXACT_BELOW` people a :class:`~mobileface.identity.gallery.Gallery`
compares each face with every enrolled photo (one matrix product). From there
on it also keeps :class:`SignCodes`: one bit per dimension for each photo, the
signs of its embedding centred on the gallery's mean and turned by a fixed
random rotation. Two vectors at an angle θ differ in each such bit with
probability θ/π (sign random projections), so the Hamming distance between two
codes tracks the angle between their vectors. A face is compared with every
code (XOR and popcount, 16 bytes a photo at 128 dimensions), the
:data:`CANDIDATES` photos nearest in Hamming distance are kept, and the face is
then compared exactly with every photo of their people: the threshold-and-margin
rule and the per-track vote see exact similarities.

Why a scan of codes rather than a graph (HNSW): measured at a million random
128-dimensional vectors on a 2-core AMD EPYC, usearch's HNSW (32 links, half
precision, one thread) found the query's own vector 95.1 % of the time at search
breadth 192 (p99 3.8 ms) and 99.6 % at 512 (p99 9.0 ms), and took 15 minutes to
build. The code scan reads 16 MB for a million photos in about 2 ms, finds the
right photo for every face of the benchmark, builds in under a second, and costs
no extra work to keep up to date: an enrolment adds a code, a removal drops one.
It grows linearly with the gallery; past a few million photos the server-side
search (pgvector's HNSW index, :meth:`~mobileface.identity.postgres.PostgresFacebank.nearest`)
is the one that does not hold the gallery in memory.

The centre matters for embeddings that are not centred (dlib's share a common
direction, and strangers' cosines are high): signs about the origin would then
agree for most bits of everyone. The centre and the rotation are fixed when the
codes are first made and kept when the gallery changes, so old and new codes
stay comparable.

The codes live in the process's memory and are made from the store when the
gallery is first read: after a crash they are made again from what the store
holds, so they cannot disagree with it.
"""
from __future__ import annotations

import threading

import numpy as np

#: galleries of fewer people than this are searched exactly
EXACT_BELOW = 20_000
#: the photos nearest in Hamming distance that are compared exactly (by their people).
#: With dlib's crowded embeddings (100 LFW people among 20,000 strangers drawn like
#: them) 64 let a missed runner-up give 2 faces in 100 a wrong name; 256 gave exact
#: search's decisions for all, among 200,000 strangers too
CANDIDATES = 256
#: the most photos a face is compared with when many codes tie at the last distance
MOST_CANDIDATES = 4 * CANDIDATES
#: the most bits a code has (vectors of more dimensions are projected onto this many)
MOST_BITS = 256
#: the seed of the rotation: every process makes the same codes
SEED = 0
#: the codes scanned at a time: their XOR (1 MB) stays in the core's cache. 2.16 ms
#: instead of 2.57 for a million codes of 128 bits, in one run, one thread. (Scanning
#: the two halves on both cores cut the median too, but lengthened the tail: p99 5.8
#: to 8.9 ms a face at a million, against 4.8 to 5.7 on one)
BLOCK = 131_072
_CHUNK = 100_000


def _planes(dim: int, bits: int) -> np.ndarray:
    """(dim, bits) the hyperplanes' normals: orthonormal columns of a random rotation
    where there are no more bits than dimensions, Gaussian ones beyond."""
    rng = np.random.default_rng(SEED)
    normals = rng.standard_normal((dim, bits))
    if bits <= dim:
        normals = np.linalg.qr(normals)[0]
    return normals.astype(np.float32)


class SignCodes:
    """The 1-bit codes of a gallery's photos, in the gallery's row order.

    ``codes`` is (words, rows) uint64: word ``w`` of every row together, so that one
    XOR and one popcount run over a contiguous column."""

    def __init__(self, centre: np.ndarray, planes: np.ndarray, codes: np.ndarray):
        self.centre = np.asarray(centre, np.float32)
        self.planes = np.asarray(planes, np.float32)
        self.bits = self.planes.shape[1]
        self.codes = np.ascontiguousarray(codes, np.uint64).reshape(self.bits // 64, -1)
        self._lock = threading.Lock()
        self._buffers: tuple[np.ndarray, ...] | None = None

    @classmethod
    def of(cls, vectors: np.ndarray) -> "SignCodes":
        """The codes of these (normalised) vectors, centred on their mean."""
        vectors = np.asarray(vectors, np.float32)
        dim = vectors.shape[1]
        bits = min(-(-dim // 64) * 64, MOST_BITS)
        centre = np.zeros(dim, np.float64)
        for start in range(0, len(vectors), _CHUNK):        # no float64 copy of the gallery
            centre += vectors[start:start + _CHUNK].sum(0, dtype=np.float64)
        empty = cls(centre / max(len(vectors), 1), _planes(dim, bits),
                    np.zeros((bits // 64, 0), np.uint64))
        return empty.with_codes(empty.encode(vectors))

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """(words, N) the codes of these vectors with this centre and rotation."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, len(self.centre))
        out = np.empty((self.bits // 64, len(vectors)), np.uint64)
        for start in range(0, len(vectors), _CHUNK):
            signs = (vectors[start:start + _CHUNK] - self.centre) @ self.planes > 0
            packed = np.packbits(signs, axis=1, bitorder="little")
            out[:, start:start + len(signs)] = packed.view(np.uint64).T
        return out

    def with_codes(self, codes: np.ndarray) -> "SignCodes":
        """The same centre and rotation over other rows' codes (from :meth:`encode`)."""
        return SignCodes(self.centre, self.planes, codes)

    def __len__(self) -> int:
        return self.codes.shape[1]

    def distances(self, query: np.ndarray) -> np.ndarray:
        """(rows,) the Hamming distance of every code to this vector's code (a buffer
        reused by the next call: hold the lock)."""
        code = self.encode(query)[:, 0]
        rows = len(self)
        if self._buffers is None or len(self._buffers[2]) != rows:
            block = min(BLOCK, rows)
            self._buffers = (np.empty(block, np.uint64), np.empty(block, np.uint8),
                             np.empty(rows, np.uint8 if self.bits < 256 else np.uint16))
        xor, count, distances = self._buffers
        for start in range(0, rows, BLOCK):
            end = min(start + BLOCK, rows)
            x, c, total = xor[:end - start], count[:end - start], distances[start:end]
            for word in range(len(code)):                 # XOR and popcount a word at a time
                np.bitwise_xor(self.codes[word, start:end], code[word], out=x)
                np.bitwise_count(x, out=total if word == 0 else c)
                if word:
                    np.add(total, c, out=total)
        return distances

    def nearest(self, queries: np.ndarray, count: int = CANDIDATES) -> list[np.ndarray]:
        """For each query, the rows of the ``count`` codes nearest to its code (more
        where several tie at the last distance, up to :data:`MOST_CANDIDATES`)."""
        out = []
        with self._lock:
            for query in np.atleast_2d(queries):
                if len(self) <= count:
                    out.append(np.arange(len(self)))
                    continue
                distances = self.distances(query)
                rows = self._near(distances, count)
                near = distances[rows]
                rows = rows[near <= np.partition(near, count - 1)[count - 1]]
                if len(rows) > MOST_CANDIDATES:
                    rows = rows[np.argsort(distances[rows], kind="stable")[:MOST_CANDIDATES]]
                out.append(rows)
        return out

    def _near(self, distances: np.ndarray, count: int) -> np.ndarray:
        """The rows within a distance that holds at least ``count`` codes, and not many
        more: the distance is read from a sample of the distances (twice the share
        wanted); every row when the sample was unlucky."""
        sample = np.sort(distances[::max(1, len(distances) // 4096)])
        rank = 2 * -(-count * len(sample) // len(distances))
        rows = np.flatnonzero(distances <= sample[min(len(sample) - 1, rank)])
        return rows if len(rows) >= count else np.arange(len(distances))
