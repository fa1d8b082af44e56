"""What the video engine does, and how it is fed: the running modes and the settings."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mobileface.enhance import check_mode
from mobileface.identity.gallery import MATCH_MODES
from mobileface.models.precision import check_precision
from mobileface.track.refind import DETECT_EVERY, MAX_ERROR


class RunningMode(Enum):
    """How frames reach the engine (MediaPipe's running modes).

    IMAGE: independent images (:class:`~mobileface.pipeline.image.FaceAnalyzer`);
    VIDEO: the frames of a file, every one, with timestamps that increase;
    STREAM: a live source, whose frames may be dropped; a frame without a
    timestamp is stamped with the clock.
    """

    IMAGE = "image"
    VIDEO = "video"
    STREAM = "stream"

    @classmethod
    def parse(cls, value) -> "RunningMode":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"running mode must be one of {', '.join(m.value for m in cls)}, "
                             f"got {value!r}") from None


@dataclass
class PipelineConfig:
    """Everything that changes what the pipeline does (defaults suit 720p video).

    Each setting has this one owner: a running pipeline changes its threshold
    and margin through :meth:`FacePipeline.set_threshold`, which re-votes.
    """

    #: VIDEO (a file: every frame, increasing timestamps) or STREAM (a live source)
    mode: RunningMode = RunningMode.VIDEO
    detector: str = "retinaface"
    det_size: int = 640
    det_threshold: float | None = None
    providers: tuple[str, ...] = ("cpu",)
    #: onnxruntime threads per model: 1, because the runner detects the next frame while
    #: it analyses this one, so both cores are busy already (0: onnxruntime decides)
    threads: int = 1
    #: "auto" (int8 for each model whose accuracy gate passed, on a CPU with VNNI or AMX),
    #: "fp32" or "int8" (see mobileface.models.precision)
    precision: str = "auto"
    embedder: object = None
    #: embed and name faces (off: attributes only, no facebank needed)
    recognition: bool = True
    #: age and gender
    attributes: bool = True
    #: low-light enhancement before detection: "auto" (dark frames only, with hysteresis),
    #: "on" (every frame) or "off" (see mobileface.enhance)
    enhance: str = "auto"
    #: cosine similarity a match must reach (None: the embedder's own threshold)
    threshold: float | None = None
    #: ... and by how much it must beat the best other person
    margin: float = 0.03
    #: a person's similarity: the best of their images or their mean ("mean")
    match_mode: str = "best"
    #: recognition decisions (and periodic re-checks) only from faces this good
    min_quality: float = 0.3
    recheck_frames: int = 5
    quality_gain: float = 0.05
    #: a track missed for this many frames in a row gets per-track work when it is seen again
    reappear_frames: int = 5
    #: at most this many tracks get per-track work in one frame (the rest wait)
    max_per_frame: int = 8
    vote_window: int = 9
    hysteresis: int = 2
    confirm_votes: int = 3
    #: age and gender samples kept per track
    attribute_samples: int = 15
    max_age: int = 15
    min_hits: int = 2
    iou_threshold: float = 0.3
    reid_seconds: float = 3.0
    #: cosine similarity for re-identification (None: threshold + 0.01)
    reid_similarity: float | None = None
    #: the longer side of the kept best-shot crop, pixels
    best_shot_size: int = 192
    #: how often the facebank is checked for changes by other processes and machines,
    #: seconds (a change reaches the pipeline within this and the reload's time)
    facebank_poll: float = 0.25
    #: thumbnail difference that counts as a scene cut (0: never cut)
    scene_cut: float = 20.0
    #: the detector runs at least on every this many frames; in between, tracked faces
    #: are re-found from their 68 points (1: detect on every frame; see
    #: mobileface.track.refind)
    detect_every: int = DETECT_EVERY
    #: ... and on the next frame too when a re-found face moved by more than this share
    #: of its size away from its forecast
    refind_error: float = MAX_ERROR

    def __post_init__(self) -> None:
        self.mode = RunningMode.parse(self.mode)
        check_precision(self.precision)
        check_mode(self.enhance)
        if self.match_mode not in MATCH_MODES:
            raise ValueError(f"match_mode must be one of {MATCH_MODES}, got {self.match_mode!r}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if not self.refind_error > 0:
            raise ValueError(f"refind_error must be > 0, got {self.refind_error}")
        if not 0.0 <= self.margin < 2.0:
            raise ValueError(f"margin must be in [0, 2), got {self.margin}")
        for name in ("recheck_frames", "reappear_frames", "max_per_frame", "vote_window", "hysteresis",
                     "confirm_votes", "attribute_samples", "best_shot_size", "detect_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
