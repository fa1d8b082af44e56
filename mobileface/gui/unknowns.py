"""Best shots of unknown faces, grouped by similarity (no Qt here).

Each unknown track contributes one shot: its best-quality crop and the
embedding of that crop (:class:`mobileface.pipeline.video.TrackSummary`). Shots of
tracks still going are replaced as the track improves; once a track has ended
its shot is final. Track ids restart with every run, so a shot is keyed by
(run, track id). A track still going is shown once it has lasted
``live_min_frames`` frames (an enrolled person's new track is usually named
by then). Only shots good enough to enrol are kept (quality at least
``min_quality``, by default the enrolment minimum): dark, blurred or tiny
faces would be refused at enrolment anyway, and their embeddings are all
alike, so that they would pull unrelated faces into one group.

Grouping is complete-linkage and greedy: shots are taken best quality first,
and each joins the group whose *least* similar member is most similar to it,
when that similarity reaches ``threshold`` (the pipeline's recognition
threshold: the cosine similarity from which two faces are taken for the same
person); otherwise it starts a new group. Complete linkage does not chain
(A like B and B like C does not put A with C). With dlib's embeddings of small
video faces, strangers can still reach the threshold: the groups are
suggestions, which the facebank's outlier flags check after enrolment. The
number of shots kept is bounded: the lowest-quality ones go first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mobileface.identity.enrol import MIN_ENROL_QUALITY
from mobileface.identity.gallery import UNKNOWN, normalise

Key = tuple[int, int]   # (run, track id)


@dataclass
class Shot:
    key: Key
    image: np.ndarray        # BGR crop of the face with a margin
    embedding: np.ndarray    # (D,) normalised
    quality: float
    frames: int
    final: bool = False      # the track has ended


@dataclass
class Group:
    shots: list[Shot] = field(default_factory=list)

    @property
    def keys(self) -> list[Key]:
        return [s.key for s in self.shots]

    @property
    def best(self) -> Shot:
        return max(self.shots, key=lambda s: s.quality)


class UnknownFaces:
    """The unknown faces seen so far, by (run, track id)."""

    def __init__(self, threshold: float, limit: int = 200,
                 min_quality: float = MIN_ENROL_QUALITY, live_min_frames: int = 15):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.threshold = float(threshold)
        self.limit = int(limit)
        self.min_quality = float(min_quality)
        self.live_min_frames = int(live_min_frames)
        self.shots: dict[Key, Shot] = {}

    def __len__(self) -> int:
        return len(self.shots)

    def update(self, run: int, summaries, final: bool) -> bool:
        """Take in track summaries (final: the tracks have ended); True if anything changed.

        A track that is no longer unknown (it was recognised, or enrolled)
        leaves the gallery.
        """
        changed = False
        for summary in summaries:
            key = (int(run), int(summary.track_id))
            known = self.shots.get(key)
            if known is not None and known.final:
                continue
            usable = (summary.identity == UNKNOWN and summary.embedding is not None
                      and summary.best_shot is not None and summary.best_shot.size
                      and summary.best_quality >= self.min_quality
                      and (final or summary.frames >= self.live_min_frames))
            if not usable:
                if known is not None and summary.identity not in (None, UNKNOWN):
                    del self.shots[key]
                    changed = True
                continue
            if known is not None and not final and summary.best_quality <= known.quality:
                known.frames = int(summary.frames)      # no better shot: nothing to redraw
                continue
            self.shots[key] = Shot(key, summary.best_shot,
                                   normalise(np.asarray(summary.embedding, np.float32)),
                                   float(summary.best_quality), int(summary.frames), final)
            changed = True
        if len(self.shots) > self.limit:
            for shot in sorted(self.shots.values(), key=lambda s: s.quality)[
                    :len(self.shots) - self.limit]:
                del self.shots[shot.key]
        return changed

    def end_run(self, run: int) -> None:
        """A run is over: shots of its tracks that never ended (re-identified into another
        track, or dropped) go; the others are final."""
        for key in [k for k, s in self.shots.items() if k[0] == run and not s.final]:
            del self.shots[key]

    def remove(self, keys) -> None:
        for key in keys:
            self.shots.pop(tuple(key), None)

    def clear(self) -> None:
        self.shots.clear()

    def groups(self) -> list[Group]:
        """Groups of shots of the same face, the largest first."""
        shots = sorted(self.shots.values(), key=lambda s: (-s.quality, s.key))
        groups: list[Group] = []
        members: list[np.ndarray] = []     # per group, (k, D) embeddings
        for shot in shots:
            best, best_sim = None, -np.inf
            for g, vectors in enumerate(members):
                if vectors.shape[1] != shot.embedding.shape[0]:
                    continue
                sim = float((vectors @ shot.embedding).min())
                if sim > best_sim:
                    best, best_sim = g, sim
            if best is not None and best_sim >= self.threshold:
                groups[best].shots.append(shot)
                members[best] = np.vstack([members[best], shot.embedding])
            else:
                groups.append(Group([shot]))
                members.append(shot.embedding[None, :])
        groups.sort(key=lambda g: (-len(g.shots), -g.best.quality))
        return groups
