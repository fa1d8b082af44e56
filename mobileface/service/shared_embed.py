"""One embedder for many cameras: a Ray actor that embeds aligned faces in batches.

With ``shared_embedder = true`` in ``cameras.toml`` the site starts one
:class:`EmbedderService` actor (named ``embedder``), and each camera's pipeline
uses a :class:`RemoteEmbedder` in place of its own embedding model. A camera
still aligns its faces itself (the 68 points are in its process); only the
150x150 chips travel to the service, which gathers what several cameras send
within a few milliseconds into one batch for onnxruntime. That is what a GPU
wants (one large batch instead of many small ones), and on a CPU it keeps one
copy of the model instead of one per camera.

The stage interface is the engine's own: :class:`RemoteEmbedder` is a
:class:`~mobileface.stages.base.Stage` named ``embed`` with the local
embedder's ``model_id`` and thresholds, so the facebank and the votes cannot
tell it from the local one (``FacePipeline.from_config(..., embedder=...)``).
"""
from __future__ import annotations

import asyncio
import time

import numpy as np

from mobileface.stages.base import Stage

#: the most chips in one batch, and how long a batch waits for more, seconds
MAX_BATCH, MAX_WAIT = 32, 0.005


class EmbedderService:
    """The shared embedder (an async Ray actor; see :func:`service_class`)."""

    def __init__(self, max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT):
        from mobileface.stages.embed import create_embedder

        self.stage = create_embedder(None)
        self.max_batch, self.max_wait = int(max_batch), float(max_wait)
        self._queue: asyncio.Queue | None = None
        self._worker = None
        self.batches, self.chips, self.largest = 0, 0, 0

    def describe(self) -> dict:
        """What a camera's stage needs to pass for the local embedder."""
        return {"model_id": self.stage.model_id, "threshold": self.stage.threshold,
                "distance_threshold": self.stage.distance_threshold}

    async def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 128) embeddings of these chips, computed in a batch with other callers'."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._batches())
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((np.asarray(chips), done))
        return await done

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self._queue.get()]
            count = len(waiting[0][0])
            deadline = time.monotonic() + self.max_wait
            while count < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
                waiting.append(item)
                count += len(item[0])
            chips = np.concatenate([c for c, _ in waiting])
            try:
                out = await loop.run_in_executor(None, self.stage.embed_chips, chips)
            except Exception as exc:          # every caller of the batch hears it
                for _, done in waiting:
                    done.set_exception(exc)
                continue
            self.batches += 1
            self.chips += len(chips)
            self.largest = max(self.largest, len(chips))
            start = 0
            for part, done in waiting:
                done.set_result(out[start:start + len(part)])
                start += len(part)

    def stats(self) -> dict:
        return {"batches": self.batches, "chips": self.chips, "largest_batch": self.largest,
                "mean_batch": round(self.chips / self.batches, 2) if self.batches else 0.0}


def service_class():
    import ray

    return ray.remote(max_restarts=5, max_task_retries=5, num_cpus=0,
                      max_concurrency=64)(EmbedderService)


class RemoteEmbedder(Stage):
    """The ``embed`` stage of a camera whose embeddings the shared service makes."""

    name = "embed"
    requires = ("landmarks68",)
    provides = ("embedding",)
    per_track = True

    def __init__(self, handle, timeout: float = 60.0):
        import ray

        from mobileface.stages.embed.dlib_resnet import EMBEDDING_SIZE

        self.handle = handle
        self.timeout = timeout
        described = ray.get(handle.describe.remote(), timeout=timeout)
        self.model_id = described["model_id"]
        self.threshold = described["threshold"]
        self.distance_threshold = described["distance_threshold"]
        self.size = EMBEDDING_SIZE

    def process(self, image: np.ndarray, faces) -> None:
        import ray

        from mobileface.stages.embed.dlib_resnet import DlibEmbedder

        chips = DlibEmbedder.chips(image, faces)
        faces.embedding = np.asarray(ray.get(self.handle.embed.remote(chips),
                                             timeout=self.timeout), np.float32)

    def fill_empty(self, faces) -> None:
        faces.embedding = np.zeros((0, self.size), np.float32)
