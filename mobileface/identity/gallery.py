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


@dataclass
class GalleryRows:
    """What a facebank holds for one model, without the embeddings: one entry per
    enrolment row (its database id, when it was last written, its person), in the
    order of the people. How :meth:`Gallery.assemble` tells what changed."""

    image_ids: np.ndarray    # (M,) int64
    versions: np.ndarray     # (M,) float64: the row's ``added`` time
    person_ids: np.ndarray   # (M,) int64
    names: list[str]         # (M,) the person's name for each row


class Gallery:
    """Enrolled embeddings grouped by person, ready to match.

    person_ids: (P,) database ids of the people; names: their P names;
    embeddings: (M, D) one row per enrolment image; owners: (M,) index into
    the people of each row. Rows are normalised here. image_ids and versions
    (M,) identify the rows in their facebank (row numbers when not given), so
    that a later :meth:`assemble` reuses what did not change.

    From ``exact_below`` people on, the photos' 1-bit codes (``search``, a
    :class:`~mobileface.identity.search.SignCodes` in the order of the rows given,
    made here when not given) pick the candidates whose people are then compared
    exactly.
    """

    def __init__(self, person_ids, names, embeddings, owners, model_id: str = "",
                 image_ids=None, versions=None, search=None, exact_below: int | None = None,
                 normalised: bool = False):
        from mobileface.identity.search import EXACT_BELOW

        self.person_ids = np.asarray(person_ids, np.int64).reshape(-1)
        self.names = list(names)
        embeddings = (np.asarray(embeddings, np.float32).reshape(len(owners), -1)
                      if len(owners) else np.zeros((0, 0), np.float32))
        # normalised: the rows are unit length already (assemble's), not scaled again
        self.embeddings = embeddings if normalised else normalise(embeddings)
        self.owners = np.asarray(owners, np.int64).reshape(-1)
        self.model_id = model_id
        if len(self.names) != len(self.person_ids):
            raise ValueError("one name per person id is needed")
        if len(self.owners) and (self.owners.min() < 0 or self.owners.max() >= len(self.names)):
            raise ValueError("owners must index the people")
        rows = len(self.owners)
        self.image_ids = (np.arange(rows, dtype=np.int64) if image_ids is None
                          else np.asarray(image_ids, np.int64).reshape(-1))
        self.versions = (np.zeros(rows) if versions is None
                         else np.asarray(versions, np.float64).reshape(-1))
        if len(self.image_ids) != rows or len(self.versions) != rows:
            raise ValueError("one image id and version per row is needed")
        order = None
        if len(self.owners) and np.any(np.diff(self.owners) < 0):
            # each person's rows together (a facebank gives them so): person p's rows
            # are starts[p]:starts[p + 1], compared by one product and one reduceat
            order = np.argsort(self.owners, kind="stable")
            self.embeddings, self.owners = self.embeddings[order], self.owners[order]
            self.image_ids, self.versions = self.image_ids[order], self.versions[order]
        self._starts = np.concatenate([[0], np.cumsum(np.bincount(self.owners,
                                                                  minlength=len(self.names)))])
        self._image_order = np.argsort(self.image_ids, kind="stable")
        self._person_order = np.argsort(self.person_ids, kind="stable")
        self._sorted_image_ids = self.image_ids[self._image_order]
        self._sorted_person_ids = self.person_ids[self._person_order]
        self._prototypes: np.ndarray | None = None
        #: (facebank location, outliers included, change log position) when read from a
        #: facebank (see store.gallery): what a later read of it starts from
        self.source: tuple | None = None
        self.exact_below = EXACT_BELOW if exact_below is None else int(exact_below)
        self.search = None
        if len(self.names) >= self.exact_below:
            from mobileface.identity.search import SignCodes

            if search is not None and len(search) == rows and len(search.centre) == self.dim:
                self.search = search if order is None else search.with_codes(
                    search.codes[:, order])
            else:
                self.search = SignCodes.of(self.embeddings)

    @classmethod
    def empty(cls) -> "Gallery":
        return cls([], [], np.zeros((0, 0), np.float32), [])

    @classmethod
    def assemble(cls, rows: GalleryRows, fetch, model_id: str, previous: "Gallery | None" = None,
                 exact_below: int | None = None) -> "Gallery":
        """The gallery of ``rows``, fetching (``fetch(image_ids) -> (M, D) embeddings``,
        in the order asked) only the rows that ``previous`` does not hold as they are
        now: a change to a large gallery updates its index instead of rebuilding it."""
        ids = np.asarray(rows.image_ids, np.int64)
        person_of_row = np.asarray(rows.person_ids, np.int64)
        people, first, inverse = np.unique(person_of_row, return_index=True,
                                           return_inverse=True)
        order = np.argsort(first)            # the people in the order of their rows
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        person_ids, owners = people[order], rank[inverse.reshape(-1)]
        names = [rows.names[i] for i in first[order]]
        reuse = previous if (previous is not None and previous.model_id == model_id
                             and len(previous.image_ids)) else None
        known = reuse.rows_of(ids, rows.versions) if reuse is not None else np.full(len(ids), -1)
        fresh = np.flatnonzero(known < 0)
        fetched = np.asarray(fetch(ids[fresh]), np.float32) if len(fresh) else None
        if fetched is not None and reuse is not None and fetched.shape[1] != reuse.dim:
            reuse, known, fresh = None, np.full(len(ids), -1), np.arange(len(ids))
            fetched = np.asarray(fetch(ids), np.float32)
        dim = fetched.shape[1] if fetched is not None else (reuse.dim if reuse else 0)
        vectors = np.empty((len(ids), dim), np.float32)
        if fetched is not None:
            vectors[fresh] = normalise(fetched)
        kept = known >= 0
        if kept.any():
            vectors[kept] = reuse.embeddings[known[kept]]
        search = None
        if reuse is not None and reuse.search is not None:
            # the kept rows' codes as they are, new codes for the rest only
            codes = np.empty((reuse.search.codes.shape[0], len(ids)), np.uint64)
            codes[:, kept] = reuse.search.codes[:, known[kept]]
            codes[:, fresh] = reuse.search.encode(vectors[fresh])
            search = reuse.search.with_codes(codes)
        return cls(person_ids, names, vectors, owners, model_id, ids, rows.versions,
                   search, exact_below, normalised=True)

    def rows_of(self, image_ids: np.ndarray, versions: np.ndarray) -> np.ndarray:
        """(M,) this gallery's row holding each (image id, version), -1 where none does."""
        rows = _lookup(self._sorted_image_ids, self._image_order, image_ids)
        same = rows >= 0
        same[same] = self.versions[rows[same]] == np.asarray(versions)[same]
        return np.where(same, rows, -1)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1] if len(self.embeddings) else 0

    @property
    def prototypes(self) -> np.ndarray:
        """(P, D) each person's normalised mean embedding (made when first asked for:
        ``mode="mean"``; the index asks for them a part at a time)."""
        if self._prototypes is None:
            self._prototypes = self.prototypes_of(np.arange(len(self.names)))
        return self._prototypes

    def prototypes_of(self, people: np.ndarray) -> np.ndarray:
        """The prototypes of these people (indices); a person of one picture is that
        picture, and a person without any is a zero vector."""
        people = np.asarray(people, np.int64)
        if self._prototypes is not None:
            return self._prototypes[people]
        starts, ends = self._starts[people], self._starts[people + 1]
        out = np.zeros((len(people), self.dim), np.float32)
        single = ends - starts == 1
        out[single] = self.embeddings[starts[single]]
        for i in np.flatnonzero(~single & (ends > starts)):
            out[i] = self.embeddings[starts[i]:ends[i]].sum(0)
        return normalise(out)

    def name_of(self, person_id: int) -> str | None:
        at = int(_lookup(self._sorted_person_ids, self._person_order, [person_id])[0])
        return self.names[at] if at >= 0 else None

    def _queries(self, embeddings: np.ndarray, mode: str) -> np.ndarray:
        if mode not in MATCH_MODES:
            raise ValueError(f"mode must be one of {MATCH_MODES}, got {mode!r}")
        queries = normalise(np.atleast_2d(np.asarray(embeddings, np.float32)))
        if len(self.names) and queries.shape[1] != self.dim:
            raise ValueError(f"embeddings have {queries.shape[1]} dimensions, "
                             f"the gallery has {self.dim}")
        return queries

    def _candidates(self, queries: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) the people of the photos the codes find nearest (indices, -1 to pad)
        and each one's exact similarity (-inf to pad)."""
        people = [np.unique(self.owners[rows]) for rows in self.search.nearest(queries)]
        width = max(len(p) for p in people)
        candidates = np.full((len(queries), width), -1, np.int64)
        sims = np.full(candidates.shape, -np.inf, np.float32)
        for i, found in enumerate(people):
            candidates[i, :len(found)] = found
            sims[i, :len(found)] = self._people_similarities(queries[i:i + 1], found, mode)[0]
        return candidates, sims

    def _people_similarities(self, queries: np.ndarray, people: np.ndarray | None,
                             mode: str) -> np.ndarray:
        """(N, len(people)) similarity to each of these people (indices; None: all of
        them), exactly: a person without pictures is -1."""
        if mode == "mean":
            prototypes = self.prototypes if people is None else self.prototypes_of(people)
            return queries @ prototypes.T
        if people is None:
            people, sims = np.arange(len(self.names)), queries @ self.embeddings.T
            counts = np.diff(self._starts)
        else:
            counts = self._starts[people + 1] - self._starts[people]
            offsets = np.repeat(self._starts[people] - np.concatenate([[0], np.cumsum(counts)[:-1]]),
                                counts)
            sims = queries @ self.embeddings[offsets + np.arange(int(counts.sum()))].T
        out = np.full((len(queries), len(people)), -1.0, np.float32)
        has = counts > 0
        if has.any():
            starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
            out[:, has] = np.maximum.reduceat(sims, starts[has], axis=1)
        return out

    def person_similarities(self, embeddings: np.ndarray, mode: str = "best") -> np.ndarray:
        """(N, P) similarity of each face to each person (exact, whatever the size)."""
        queries = self._queries(embeddings, mode)
        return self._people_similarities(queries, None, mode)

    def match(self, embeddings: np.ndarray, mode: str = "best") -> Matches:
        """Each face's most similar person and the best similarity to anyone else.

        Below ``exact_below`` people every person is compared; above, the people of
        the :data:`~mobileface.identity.search.CANDIDATES` photos whose codes are
        nearest are, by all their photos, so the threshold-and-margin rule sees the
        similarities of an exact search whenever the right people are among them.
        """
        queries = self._queries(embeddings, mode)
        n = len(queries)
        person = np.full(n, -1)
        best, second = np.full(n, -1.0, np.float32), np.full(n, -1.0, np.float32)
        if len(self.names) == 0 or n == 0:
            return Matches(person, best, second)
        if self.search is None:
            candidates = np.broadcast_to(np.arange(len(self.names)), (n, len(self.names)))
            sims = self._people_similarities(queries, None, mode)
        else:
            candidates, sims = self._candidates(queries, mode)
        rows = np.arange(n)
        first = np.argmax(sims, axis=1)
        person = np.take_along_axis(candidates, first[:, None], 1)[:, 0]
        best = sims[rows, first].astype(np.float32)
        if sims.shape[1] > 1:
            others = sims.copy()
            others[rows, first] = -np.inf
            runner = others.max(1)
            second = np.where(np.isfinite(runner), runner, -1.0).astype(np.float32)
        return Matches(person, best, second)


def _lookup(sorted_values: np.ndarray, order: np.ndarray, wanted) -> np.ndarray:
    """Where each of ``wanted`` is among the values that ``order`` sorts into
    ``sorted_values`` (their index before sorting), -1 if absent."""
    wanted = np.asarray(wanted, np.int64)
    if not len(sorted_values):
        return np.full(wanted.shape, -1, np.int64)
    at = np.clip(np.searchsorted(sorted_values, wanted), 0, len(sorted_values) - 1)
    return np.where(sorted_values[at] == wanted, order[at], -1)


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
