"""Finding the people nearest to a face in a large gallery: an HNSW index of prototypes.

Below :data:`EXACT_BELOW` people a :class:`~mobileface.identity.gallery.Gallery`
compares each face with every enrolled picture (one matrix product). Above, it
asks :class:`HnswSearch` for the :data:`TOP_K` people whose prototypes (the
normalised mean of their pictures) are nearest, then compares the face with
every picture of those people exactly, and applies the threshold-and-margin
rule to those similarities: the rule and the per-track vote see what they see
on a small gallery.

Why prototypes rather than every picture: one point per person keeps the graph
well spread. A graph of every picture holds tight clusters (a person's
near-identical pictures), and HNSW's neighbour pruning can cut such a cluster
off: on a test gallery of 300 people with 3 pictures each, a graph of the
pictures missed the right person for 1 face in 50; the prototype graph does not.

The index is keyed by person ids, so that an enrolment, a removal or a
re-embedding changes a few keys (their prototypes) instead of rebuilding the
graph; the gallery that follows a facebank keeps it across reloads (see
:meth:`Gallery.assemble <mobileface.identity.gallery.Gallery.assemble>`).

The index lives in the process's memory and is built from the store when the
gallery is first read: after a crash it is built again from what the store
holds, so it cannot disagree with it.

Why usearch rather than FAISS: its index removes keys in place (FAISS's HNSW
cannot remove), stores half-precision or int8 vectors, can be memory-mapped
from its file, and is a small wheel with no BLAS of its own.
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

log = logging.getLogger(__name__)

#: galleries of fewer people than this are searched exactly
EXACT_BELOW = 20_000
#: the people the index proposes for the exact comparison
TOP_K = 16
#: the breadth of the second search, for a face the first found nobody for (see
#: Gallery.match): a stranger costs that second search, a known face seldom does
EXPANSION_WIDE = 512
#: a batch of this many keys or more is inserted by several threads
PARALLEL_ADD = 50_000
#: the graph's parameters: links per node, and the breadth of insertion and search. With 16
#: links a 200,000-person gallery of random vectors found the right person among the 16
#: candidates for 96.3 % of faces at search breadth 128 (99.7 % at 256, for twice the time);
#: with 32 links, 100 % at 128 (benchmark/gallery.py measures it at every size)
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 32, 64, 128


class HnswSearch:
    """An approximate nearest-neighbour index (usearch HNSW, cosine, half precision),
    keyed by the ids given to :meth:`add` (the gallery gives person ids)."""

    kind = "hnsw"

    def __init__(self, dim: int, index=None, threads: int = 0):
        from usearch.index import Index

        self.dim = int(dim)
        self.threads = threads or min(os.cpu_count() or 1, 8)
        self._lock = threading.Lock()
        self.index = index if index is not None else Index(
            ndim=self.dim, metric="cos", dtype="f16", connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or, for a key already there, replace) these vectors. Only a bulk build
        uses several threads: usearch's concurrent insertion links a small graph worse
        (on 300 points, 12 nearest neighbours missed in 1000 searches with 2 threads,
        none with 1)."""
        if len(keys):
            keys = np.asarray(keys, np.uint64)
            present = keys[self.index.contains(keys)] if len(self.index) else keys[:0]
            if len(present):
                self.index.remove(present)
            threads = self.threads if len(keys) >= PARALLEL_ADD else 1
            self.index.add(keys, np.asarray(vectors, np.float32), threads=threads)

    def remove(self, keys) -> None:
        keys = np.asarray(list(keys), np.uint64)
        if len(keys):
            self.index.remove(keys)

    def keys(self) -> np.ndarray:
        return np.asarray(self.index.keys, np.int64) if len(self.index) else np.zeros(0, np.int64)

    def search(self, queries: np.ndarray, k: int,
               expansion: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) keys (-1 where fewer were found) and similarities, most similar first;
        ``expansion``: a wider search than the index's own (slower, finds more)."""
        k = max(1, min(k, len(self.index)))
        with self._lock:
            if expansion:
                self.index.expansion_search = int(expansion)
            try:
                found = self.index.search(np.asarray(queries, np.float32), k, threads=1)
            finally:
                if expansion:
                    self.index.expansion_search = EXPANSION_SEARCH
        keys = np.asarray(found.keys, np.int64).reshape(len(queries), -1)
        sims = 1.0 - np.asarray(found.distances, np.float32).reshape(len(queries), -1)
        # one query answers a Matches (no counts), several a BatchMatches
        counts = np.asarray(getattr(found, "counts", [len(np.atleast_1d(found.keys))]))
        counts = counts.reshape(-1)
        missing = np.arange(keys.shape[1])[None, :] >= counts[:, None]
        keys[missing], sims[missing] = -1, -np.inf
        return keys, sims
