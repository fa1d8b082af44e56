"""Unit-length vectors: embeddings are compared by cosine similarity everywhere."""
from __future__ import annotations

import numpy as np


def normalise(vectors: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Rows (or one vector) scaled to unit length, as ``dtype``; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
