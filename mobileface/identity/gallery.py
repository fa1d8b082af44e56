"""Who is this face? Matching embeddings against enrolled people, and a per-track vote.

Scores are cosine similarities of L2-normalised embeddings (higher is more
alike). A face is a person only when

* its best similarity to that person reaches ``threshold``, AND
* it beats the best similarity to any *other* person by ``margin``;

otherwise it is unknown. A person's similarity is the best over their
enrolment images (``mode="best"``) or the similarity to the normalised mean of
their images (``mode="mean"``, the prototype).

On video, each track collects decisions from its best frames; the name shown
for the track changes only when another name leads the vote by
``hysteresis`` decisions, so names do not flicker.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from mobileface.vectors import normalise

MATCH_MODES = ("best", "mean")
UNKNOWN = "Unknown"


@dataclass
class Matches:
    """Best and runner-up people for N faces (indices into the gallery's people)."""

    person: np.ndarray   # (N,) int, -1 when the gallery is empty
    best: np.ndarray     # (N,) similarity to that person
    second: np.ndarray   # (N,) best similarity to anyone else (-1 when nobody else)

    def decide(self, threshold: float, margin: float) -> np.ndarray:
        """(N,) person index, or -1 where the threshold or the margin is not met."""
        ok = (self.person >= 0) & (self.best >= threshold) & (self.best - self.second >= margin)
        return np.where(ok, self.person, -1)


class Gallery:
    """Enrolled embeddings grouped by person, ready to match.

    person_ids: (P,) database ids of the people; names: their P names;
    embeddings: (M, D) one row per enrolment image; owners: (M,) index into
    the people of each row. Rows are normalised here.
    """

    def __init__(self, person_ids, names, embeddings, owners, model_id: str = ""):
        self.person_ids = np.asarray(person_ids, np.int64).reshape(-1)
        self.names = list(names)
        self.embeddings = normalise(np.asarray(embeddings, np.float32).reshape(len(owners), -1)
                                    if len(owners) else np.zeros((0, 0), np.float32))
        self.owners = np.asarray(owners, np.int64).reshape(-1)
        self.model_id = model_id
        if len(self.names) != len(self.person_ids):
            raise ValueError("one name per person id is needed")
        if len(self.owners) and (self.owners.min() < 0 or self.owners.max() >= len(self.names)):
            raise ValueError("owners must index the people")
        dim = self.embeddings.shape[1] if len(self.embeddings) else 0
        prototypes = np.zeros((len(self.names), dim), np.float32)
        if len(self.owners):
            np.add.at(prototypes, self.owners, self.embeddings)
        self.prototypes = normalise(prototypes)

    @classmethod
    def empty(cls) -> "Gallery":
        return cls([], [], np.zeros((0, 0), np.float32), [])

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1] if len(self.embeddings) else 0

    def name_of(self, person_id: int) -> str | None:
        hits = np.flatnonzero(self.person_ids == person_id)
        return self.names[int(hits[0])] if len(hits) else None

    def person_similarities(self, embeddings: np.ndarray, mode: str = "best") -> np.ndarray:
        """(N, P) similarity of each face to each person."""
        if mode not in MATCH_MODES:
            raise ValueError(f"mode must be one of {MATCH_MODES}, got {mode!r}")
        queries = normalise(np.atleast_2d(embeddings))
        if len(self.names) == 0:
            return np.zeros((len(queries), 0), np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"embeddings have {queries.shape[1]} dimensions, "
                             f"the gallery has {self.dim}")
        if mode == "mean":
            return queries @ self.prototypes.T
        per_image = queries @ self.embeddings.T
        out = np.full((len(queries), len(self.names)), -1.0, np.float32)
        for person in range(len(self.names)):
            columns = self.owners == person
            if columns.any():
                out[:, person] = per_image[:, columns].max(1)
        return out

    def match(self, embeddings: np.ndarray, mode: str = "best") -> Matches:
        sims = self.person_similarities(embeddings, mode)
        n = len(sims)
        if sims.shape[1] == 0:
            return Matches(np.full(n, -1), np.full(n, -1.0, np.float32),
                           np.full(n, -1.0, np.float32))
        order = np.argsort(-sims, axis=1)
        best = sims[np.arange(n), order[:, 0]]
        second = sims[np.arange(n), order[:, 1]] if sims.shape[1] > 1 else np.full(n, -1.0)
        return Matches(order[:, 0], best.astype(np.float32), np.asarray(second, np.float32))


class IdentityVote:
    """The name of one track, from a bounded window of its recognition decisions.

    Each decision is a person id (or None for unknown) with its similarity.
    The shown identity starts as unknown and switches to another one only
    when that one has ``hysteresis`` more decisions in the window than the
    shown one. It is *confirmed* once it has ``confirm`` decisions and leads.
    """

    def __init__(self, window: int = 9, hysteresis: int = 2, confirm: int = 3):
        if window < 1 or hysteresis < 1 or confirm < 1:
            raise ValueError("window, hysteresis and confirm must be >= 1")
        self.window, self.hysteresis, self.confirm = window, hysteresis, confirm
        self.history: deque[tuple[int | None, float]] = deque(maxlen=window)
        self.current: int | None = None

    def add(self, person_id: int | None, similarity: float) -> None:
        self.history.append((person_id, float(similarity)))
        counts = Counter(key for key, _ in self.history)
        leader, votes = max(counts.items(), key=lambda kv: (kv[1], self._mean(kv[0])))
        if leader != self.current and votes - counts.get(self.current, 0) >= self.hysteresis:
            self.current = leader

    def replay(self, decisions) -> None:
        """Start again from these (person_id, similarity) decisions, oldest first."""
        self.history.clear()
        self.current = None
        for person_id, similarity in decisions:
            self.add(person_id, similarity)

    def _mean(self, key) -> float:
        values = [s for k, s in self.history if k == key]
        return float(np.mean(values)) if values else -1.0

    @property
    def similarity(self) -> float:
        """Mean similarity of the decisions for the shown identity (NaN if none)."""
        values = [s for k, s in self.history if k == self.current]
        return float(np.mean(values)) if values else float("nan")

    @property
    def confirmed(self) -> bool:
        counts = Counter(key for key, _ in self.history)
        votes = counts.get(self.current, 0)
        return votes >= self.confirm and votes == max(counts.values())
