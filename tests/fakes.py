"""Fake parts for the engine and the runner: no models, no ../shared, every loop bounded.

* frames: solid-colour BGR images whose top-left pixel carries the frame index
  (:func:`make_frame`, :func:`frame_index_of`), so that a fake detector knows
  which frame it sees even when the runner detects in another thread or a live
  source drops frames;
* :class:`FakeDetector`: the faces of each frame from a script,
  ``frame index -> [(box, who) or (box, who, quality), ...]``; "who" names a
  vector of :data:`VECTORS` (it travels with the face in ``extra``);
* :class:`FakeFrameStage`: 68 points, pose and quality (the scripted one) on
  every frame; optionally slow, or failing at one frame;
* :class:`FakeEmbedder`: a per-track stage giving each face its person's unit
  vector (optional noise); it records every face it embedded;
* :class:`FakeAttributes`: a per-track age and gender stage that records calls;
* :class:`FakeSource`: a file or live source with VideoSource's attributes;
* :class:`RecordingSink`: what a runner handed to its sinks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mobileface.identity.gallery import Gallery
from mobileface.io.video import Frame
from mobileface.outputs.sinks import Sink
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.stages.base import Stage
from mobileface.types import Faces

DIM = 8


def _unit(i: int) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[i] = 1.0
    return vector


#: what each "who" of a script looks like to the fake embedder
VECTORS: dict[str, np.ndarray] = {
    "ada": _unit(0),
    "bob": _unit(1),
    "cyd": _unit(2),
    "stranger": _unit(3),                                        # enrolled nowhere
    "ada_or_bob": (_unit(0) + _unit(1)) / np.sqrt(2.0),          # 0.707 like both of them
    "faint_ada": 0.5 * _unit(0) + np.sqrt(0.75) * _unit(4),      # 0.5 like ada
}
WHO = list(VECTORS)
#: the recognition threshold of the fake embedder (cosine)
THRESHOLD = 0.6
#: probability of male given by the fake attributes stage
MALE = {"ada": 0.05, "bob": 0.95, "cyd": 0.1}
AGE = {"ada": 36.0, "bob": 52.0, "cyd": 23.0}


def gallery(*names: str) -> Gallery:
    """A gallery enrolling each of ``names`` with its vector (person ids 1, 2, ...)."""
    return Gallery(list(range(1, len(names) + 1)), list(names),
                   np.stack([VECTORS[n] for n in names]), list(range(len(names))))


def box_at(x: float, y: float = 60.0, size: float = 80.0) -> tuple[float, float, float, float]:
    return (float(x), float(y), float(x + size), float(y + size))


# -- frames ------------------------------------------------------------------------


def make_frame(index: int, colour=(90, 90, 90), size=(320, 240)) -> np.ndarray:
    """A solid-colour BGR frame (width, height = size) with ``index`` in its top-left pixel."""
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colour
    image[0, 0] = ((index >> 16) & 255, (index >> 8) & 255, index & 255)
    return image


def frame_index_of(image: np.ndarray) -> int:
    b, g, r = (int(v) for v in image[0, 0])
    return (b << 16) | (g << 8) | r


# -- parts -------------------------------------------------------------------------


Script = Callable[[int], list] | dict


class FakeDetector:
    """The scripted faces of each frame; ``fail_at``: raise on that frame."""

    def __init__(self, script: Script, fail_at: int | None = None):
        self.script = script
        self.fail_at = fail_at
        self.calls: list[int] = []

    def entries(self, index: int) -> list[tuple]:
        raw = self.script(index) if callable(self.script) else self.script.get(index, [])
        return [tuple(e) + (0.9,) * (3 - len(e)) for e in raw]

    def detect(self, image: np.ndarray) -> Faces:
        index = frame_index_of(image)
        self.calls.append(index)
        if self.fail_at is not None and index == self.fail_at:
            raise RuntimeError("the fake detector broke")
        entries = self.entries(index)
        if not entries:
            return Faces.empty()
        boxes = np.array([e[0] for e in entries], np.float32)
        x1, y1, x2, y2 = boxes.T
        w, h = x2 - x1, y2 - y1
        rel = np.array([(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8)], np.float32)
        kps5 = np.stack([x1[:, None] + w[:, None] * rel[None, :, 0],
                         y1[:, None] + h[:, None] * rel[None, :, 1]], -1).astype(np.float32)
        return Faces(boxes, np.full(len(entries), 0.99, np.float32), kps5=kps5,
                     extra={"fake_who": np.array([WHO.index(e[1]) for e in entries], np.float32),
                            "fake_quality": np.array([e[2] for e in entries], np.float32)})


def who_of(faces: Faces) -> list[str]:
    return [WHO[int(code)] for code in faces.extra["fake_who"]]


class FakeFrameStage(Stage):
    """68 points spread over the box, a frontal pose and the scripted quality, every frame."""

    name = "fake_frame"
    provides = ("landmarks68", "pose", "quality")

    def __init__(self, delay: float = 0.0, fail_at: int | None = None):
        self.delay = delay
        self.fail_at = fail_at
        self.calls: list[int] = []     # frame index of each call with faces

    def process(self, image, faces):
        self.calls.append(faces.frame_index)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_at is not None and faces.frame_index == self.fail_at:
            raise RuntimeError("the model crashed")
        grid = np.stack(np.meshgrid(np.linspace(0.1, 0.9, 17), np.linspace(0.2, 0.8, 4)),
                        -1).reshape(68, 2).astype(np.float32)
        x1, y1, x2, y2 = faces.boxes.T
        size = np.stack([x2 - x1, y2 - y1], -1)[:, None, :]
        faces.landmarks68 = (faces.boxes[:, None, :2] + grid[None] * size).astype(np.float32)
        faces.pose = np.zeros((len(faces), 3), np.float32)
        faces.quality = faces.extra["fake_quality"].astype(np.float32).copy()

    def fill_empty(self, faces):
        faces.landmarks68 = np.zeros((0, 68, 2), np.float32)
        faces.pose = np.zeros((0, 3), np.float32)
        faces.quality = np.zeros(0, np.float32)


class FakeEmbedder(Stage):
    """Each face's person vector (plus Gaussian ``noise``), per track; records
    ``(frame_index, track_id, who)`` of every face it embedded."""

    name = "fake_embed"
    requires = ("landmarks68",)
    provides = ("embedding",)
    per_track = True
    model_id = "fake-embedder"

    def __init__(self, noise: float = 0.0, threshold: float | None = THRESHOLD, seed: int = 0):
        self.noise = noise
        self.threshold = threshold
        self.rng = np.random.default_rng(seed)
        self.calls: list[tuple[int, int, str]] = []

    def process(self, image, faces):
        names = who_of(faces)
        for tid, who in zip(faces.track_id, names):
            self.calls.append((faces.frame_index, int(tid), who))
        vectors = np.stack([VECTORS[w] for w in names]).astype(np.float32)
        if self.noise:
            vectors = vectors + self.rng.normal(0, self.noise, vectors.shape).astype(np.float32)
        faces.embedding = vectors

    def fill_empty(self, faces):
        faces.embedding = np.zeros((0, DIM), np.float32)

    def frames_of(self, track_id: int) -> list[int]:
        return [f for f, t, _ in self.calls if t == track_id]


class FakeAttributes(Stage):
    """Age and gender per track (from :data:`AGE` and :data:`MALE`); records calls."""

    name = "fake_attributes"
    requires = ("landmarks68",)
    provides = ("age", "gender")
    per_track = True

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def process(self, image, faces):
        names = who_of(faces)
        for tid in faces.track_id:
            self.calls.append((faces.frame_index, int(tid)))
        faces.age = np.array([AGE.get(w, 40.0) for w in names], np.float32)
        faces.gender = np.array([MALE.get(w, 0.5) for w in names], np.float32)

    def frames_of(self, track_id: int) -> list[int]:
        return [f for f, t in self.calls if t == track_id]


@dataclass
class Parts:
    pipeline: FacePipeline
    detector: FakeDetector
    frame_stage: FakeFrameStage
    embedder: FakeEmbedder | None
    attributes: FakeAttributes | None


def fake_pipeline(script: Script, enrolled=("ada", "bob"), embed: bool = True,
                  attributes: bool = True, frame_stage: FakeFrameStage | None = None,
                  detector: FakeDetector | None = None, noise: float = 0.0,
                  **config) -> Parts:
    """A FacePipeline of fake parts (per-track stages given first: the order must not
    matter), matching against a gallery of ``enrolled``."""
    detector = detector or FakeDetector(script)
    frame_stage = frame_stage or FakeFrameStage()
    embedder = FakeEmbedder(noise) if embed else None
    attrs = FakeAttributes() if attributes else None
    stages = [s for s in (embedder, attrs) if s is not None] + [frame_stage]
    pipeline = FacePipeline(detector, stages, config=PipelineConfig(**config),
                            facebank=gallery(*enrolled) if embed and enrolled else None)
    return Parts(pipeline, detector, frame_stage, embedder, attrs)


def run_frames(pipeline: FacePipeline, indices, fps: float = 30.0,
               colour: Callable[[int], tuple] | None = None, size=(320, 240)) -> dict:
    """Process the frames ``indices`` (timestamps index / fps); {index: FrameResult}."""
    results = {}
    for i in indices:
        image = make_frame(i, colour(i) if colour else (90, 90, 90), size)
        results[i] = pipeline.process(image, i, i / fps)
    return results


def names_by_track(result) -> dict[int, str]:
    faces = result.faces
    return {int(t): str(n) for t, n in zip(faces.track_id, faces.identity) if t > 0}


# -- the runner's side ---------------------------------------------------------------


class FakeSource:
    """A video source: ``frames`` frames (None: until closed, at most ``cap``), each
    ``interval`` seconds apart; ``fail_at``: reading that frame raises."""

    def __init__(self, frames: int | None = 30, live: bool = False, fps: float = 25.0,
                 size=(320, 240), interval: float = 0.0,
                 colour: Callable[[int], tuple] | None = None, fail_at: int | None = None,
                 cap: int = 20000):
        self.limit = cap if frames is None else frames
        self.live = live
        self.label = "fake camera" if live else "fake.mp4"
        self.fps = fps
        self.width, self.height = size
        self.size = size
        self.interval = interval
        self.colour = colour
        self.fail_at = fail_at
        self.reconnects = 0
        self.truncated = False
        self.next_index = 0
        self.closed = False
        self.read_times: list[float] = []

    @property
    def expected_frames(self) -> int | None:
        return None if self.live else self.limit

    @property
    def latest(self) -> int:
        """The index of the newest frame read so far."""
        return self.next_index - 1

    def read(self) -> Frame | None:
        if self.closed or self.next_index >= self.limit:
            return None
        if self.interval:
            time.sleep(self.interval)
        index = self.next_index
        if self.fail_at is not None and index == self.fail_at:
            raise RuntimeError("the fake source broke")
        image = make_frame(index, self.colour(index) if self.colour else (90, 90, 90), self.size)
        self.next_index += 1
        self.read_times.append(time.perf_counter())
        return Frame(index, index / self.fps, image, time.perf_counter())

    def close(self) -> None:
        self.closed = True


@dataclass
class RecordingSink(Sink):
    """Everything a runner handed over, in order; ``fail_at``: raise on that frame."""

    fail_at: int | None = None
    delay: float = 0.0
    indices: list[int] = field(default_factory=list)
    finished: list = field(default_factory=list)
    final: list = field(default_factory=list)
    closed: int = 0

    def write(self, frame, result):
        if self.delay:
            time.sleep(self.delay)
        if self.fail_at is not None and frame.index == self.fail_at:
            raise OSError(28, "No space left on device")
        self.indices.append(frame.index)
        self.finished += result.finished

    def finish(self, summaries):
        self.final += summaries

    def close(self):
        self.closed += 1
