"""Turning enrolment photos into embeddings: one face per photo, with its quality.

Photos may be ordinary pictures or face crops that are already aligned (the
chips ``take_pic`` saves, or crops such as LFW-Aligned's 100x100 faces): faces
are found as :mod:`mobileface.detect.locate` finds them (a small picture is first
searched with a border around it), except that a picture is never taken whole
as a face: enrolment needs a face the detector sees.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mobileface.stages.align import dlib_chips
from mobileface.errors import MobileFaceError
from mobileface.io.image import read_image, to_bgr8
from mobileface.detect.locate import complete_faces, locate_faces

log = logging.getLogger(__name__)

#: the aligned face saved by enrolment: a dlib chip with room around the face
#: so that the detector finds it again when the facebank is imported
SAVED_CHIP_SIZE = 256
SAVED_CHIP_PADDING = 0.6


class EnrolError(MobileFaceError):
    """A picture cannot be enrolled (no face, several faces, unreadable)."""


#: the least quality an enrolment photo should have (see quality.py)
MIN_ENROL_QUALITY = 0.35
#: the least each quality part may be for enrolment (frontal 0.4: yaw within about 35 degrees)
PART_MINIMUMS = {"sharpness": 0.25, "frontal": 0.4, "size": 0.3, "brightness": 0.3,
                 "eyes_open": 0.3}
#: why a part of the quality score is low, for messages
_PROBLEMS = {"sharpness": "blurred", "frontal": "turned away from the camera",
             "size": "too small", "eyes_open": "eyes closed", "brightness": "too dark or too bright",
             "mouth_closed": "mouth wide open"}


@dataclass
class EnrolFace:
    embedding: np.ndarray  # (D,) float32, as the embedder made it
    quality: float
    score: float
    box: np.ndarray        # (4,) in the picture's pixels
    chip: np.ndarray       # the aligned face to save (SAVED_CHIP_SIZE square, BGR)
    parts: dict[str, float] = field(default_factory=dict)  # quality parts (quality.py)
    pose: np.ndarray | None = None  # yaw, pitch, roll in degrees

    def jpeg(self) -> bytes:
        """The aligned face as JPEG bytes, as enrolment saves it in the facebank folder."""
        ok, data = cv2.imencode(".jpg", self.chip, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise EnrolError("cannot encode the aligned face")
        return data.tobytes()

    def enrolment(self, stem: str, photo: bytes | None = None, suffix: str = ".jpg"):
        """What :meth:`Facebank.add <mobileface.identity.facebank.Facebank.add>` stores of
        this face (an :class:`~mobileface.identity.store.Enrolment`): the ``photo`` it was
        found in (file bytes, named ``stem`` + ``suffix``; the aligned face as a JPEG when
        not given), its embedding and quality, and the aligned face."""
        from mobileface.identity.store import Enrolment

        chip = self.jpeg()
        return Enrolment(chip if photo is None else photo, suffix if photo is not None else ".jpg",
                         stem, self.embedding, self.quality, chip)

    def problem(self, min_quality: float = MIN_ENROL_QUALITY) -> str | None:
        """Why this face is not good enough to enrol (None when it is).

        The quality score must reach ``min_quality`` and no part may be
        below its own minimum (:data:`PART_MINIMUMS`): a sharp, frontal face
        with a badly blurred copy beside it must not pass on its other merits.
        """
        low = {k: v for k, v in self.parts.items() if v < PART_MINIMUMS.get(k, 0.0)}
        if not low and self.quality >= min_quality:
            return None
        part = min(low or self.parts, key=(low or self.parts).get) if self.parts else None
        if part is None:
            return f"quality {self.quality:.2f} is below {min_quality:.2f}"
        reason = _PROBLEMS.get(part, part)
        if part == "frontal" and self.pose is not None:
            reason += f" (yaw {self.pose[0]:+.0f}, pitch {self.pose[1]:+.0f} degrees)"
        return f"the face is {reason} ({part} {self.parts[part]:.2f}, quality {self.quality:.2f})"


def store(bank, name: str, enrolments: list, model_id: str, warn=log.warning) -> list[str]:
    """Enrol pictures of ``name`` in one transaction (see ``Facebank.add``) and ``warn``
    about each that looks unlike the person's other pictures; returns the files."""
    files = bank.add(name, enrolments, model_id)
    flagged = {f for p in bank.people() if p.name == name for f in p.outliers}
    for file in files:
        if file in flagged:
            warn(f"{file} looks unlike the other pictures of {name}: check that it is them")
    return files


class FaceEnroller:
    """Embeds enrolment pictures with an analyzer that runs quality and embed.

    analyzer: a FaceAnalyzer (a pipeline's ``analyzer`` shares its models);
    without one, a FaceAnalyzer is built from ``options`` (detector, det_size,
    providers, threads, embedder ...: FaceAnalyzer's keyword arguments).
    """

    def __init__(self, analyzer=None, **options):
        if analyzer is None:
            from mobileface.pipeline.image import FaceAnalyzer
            analyzer = FaceAnalyzer(stages=("quality", "embed"), **options)
        elif options:
            raise ValueError("give an analyzer or its options, not both")
        embedders = [s for s in analyzer.stages if s.name == "embed"]
        if not embedders:
            raise ValueError("the analyzer must run the embed stage")
        self.analyzer = analyzer
        self._embedder = embedders[0]
        self.model_id: str = embedders[0].model_id
        #: the embedder's recognition threshold (cosine similarity)
        self.threshold: float = embedders[0].threshold

    def embed_image(self, image: np.ndarray, label: str = "image",
                    several: str = "refuse") -> EnrolFace:
        """The one face of a picture.

        several: what to do when the picture shows more than one face:
            "refuse" raises EnrolError, "best" keeps the most confident one.
        """
        if several not in ("refuse", "best"):
            raise ValueError(f"several must be 'refuse' or 'best', got {several!r}")
        # The analyzer's low-light step (a camera's dark frame): the face is found, embedded
        # and saved from the enhanced picture.
        image = self.analyzer.enhance(to_bgr8(image, label)).image
        faces, how = locate_faces(self.analyzer.detector, image)
        if how in ("none", "whole"):
            raise EnrolError(f"{label}: no face found")
        if len(faces) > 1 and several == "refuse":
            raise EnrolError(f"{label}: {len(faces)} faces found, expected one")
        best = int(np.argmax(faces.scores))
        faces = complete_faces(self.analyzer, image, faces[[best]], how)
        # Outside the picture the chip is black, as it was for the padded detection.
        return self._enrol_face(image, faces, 0)

    def embed_row(self, image: np.ndarray, faces, row: int) -> EnrolFace:
        """The face in ``row`` of a frame that was already analysed (by a pipeline).

        ``faces`` must have landmarks68, pose and quality (with its parts in
        ``extra``) filled, as :class:`mobileface.pipeline.video.FacePipeline` fills
        them on every frame; the face is embedded here with this enroller's
        embedder, without detecting it again.
        """
        if not 0 <= row < len(faces):
            raise ValueError(f"row {row} is not a face of this frame ({len(faces)} faces)")
        if faces.landmarks68 is None or faces.pose is None or faces.quality is None:
            raise ValueError("the faces need landmarks68, pose and quality filled")
        image = to_bgr8(image, "frame")
        one = faces[[row]]
        self._embedder(image, one)
        return self._enrol_face(image, one, 0)

    def _enrol_face(self, image: np.ndarray, faces, row: int) -> EnrolFace:
        chip = dlib_chips(image, faces.landmarks68[row:row + 1], SAVED_CHIP_SIZE,
                          SAVED_CHIP_PADDING)[0]
        parts = {k: float(v[row]) for k, v in faces.extra.items() if np.ndim(v) == 1}
        return EnrolFace(embedding=faces.embedding[row].astype(np.float32),
                         quality=float(faces.quality[row]), score=float(faces.scores[row]),
                         box=faces.boxes[row].copy(), chip=chip, parts=parts,
                         pose=faces.pose[row].copy())

    def embed_file(self, path: str | Path, several: str = "refuse") -> EnrolFace:
        return self.embed_image(read_image(path), str(path), several)

    def embedding_and_quality(self, path: str | Path) -> tuple[np.ndarray, float, bytes]:
        """What :meth:`Facebank.import_folder` asks of each photo (one face, or EnrolError):
        its embedding, quality and aligned face (JPEG)."""
        face = self.embed_file(path)
        return face.embedding, face.quality, face.jpeg()
