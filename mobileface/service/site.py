"""The site on Ray: one actor per camera, watched, restarted, reported.

:func:`serve` starts a local Ray instance (no address) or joins a cluster
(``--address``, or ``address`` in the config), and starts one
:class:`CameraActor` per camera in the Ray namespace ``mobileface``, named
``camera:NAME``. Each actor holds a :class:`~.camera.CameraWorker`: the camera's
whole pipeline runs inside it, so frames never cross machines.

* **Placement.** Cameras are spread over the nodes (Ray's SPREAD strategy); a
  camera with ``node = "LABEL"`` goes to a node started with that custom
  resource (``ray start --resources='{"LABEL": 1}'``).
* **Failures.** An actor that dies (its process killed, its node lost) is
  started again by Ray (``max_restarts``) and its run is retried
  (``max_task_retries``); the new worker continues the stream (see
  :mod:`.camera`). A camera whose run fails for good is reported and the others
  go on.
* **Status.** Every ``status_every`` seconds the service logs one line per
  camera (fps, dropped frames, queue depth, live tracks, last error, node) and
  publishes the same on MQTT (``PREFIX/stats``) when a broker is configured;
  ``mobileface status`` asks a running site for it.
* **The end.** When every camera's source is a file, :func:`serve` returns once
  the last has ended and its outputs are final. SIGINT and SIGTERM stop every
  camera, which finalise their outputs, before it returns.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import asdict

from mobileface.errors import MobileFaceError
from mobileface.service.config import SiteConfig

log = logging.getLogger(__name__)

NAMESPACE = "mobileface"
#: how often Ray may start a camera's actor again, and retry its run
MAX_RESTARTS = 5
#: how long a stopping camera may take to finalise its outputs, seconds
STOP_TIMEOUT = 60.0


class CameraActor:
    """The Ray actor of one camera (made remote in :func:`actor_class`)."""

    def __init__(self, camera: dict, site: dict):
        import ray

        from mobileface.service.camera import CameraWorker
        from mobileface.service.config import CameraConfig

        context = ray.get_runtime_context()
        restart = 0
        config = CameraConfig(**camera)
        if context.was_current_actor_reconstructed:
            restart = _previous_restart(site, config.name) + 1
            log.warning("camera %s: started again after a failure (restart %d)", config.name,
                        restart)
        self.worker = CameraWorker(config, site, restart)
        self.worker.node = context.get_node_id()

    def run(self) -> dict:
        return self.worker.run()

    def status(self) -> dict:
        return self.worker.status()

    def stop(self) -> None:
        self.worker.stop()

    def pid(self) -> int:
        return os.getpid()


def _previous_restart(site: dict, name: str) -> int:
    import json
    from pathlib import Path

    try:
        progress = json.loads((Path(site["output"]) / name / "progress.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(progress.get("restart", 0)) if progress.get("run_id") == site["run_id"] else 0


def actor_class():
    import ray

    # max_concurrency: status() and stop() are answered while run() works
    return ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                      max_concurrency=4, num_cpus=0)(CameraActor)


def connect(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray instance on this machine."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=True,
                     logging_level=logging.WARNING)
        else:
            ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=True,
                     logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local instance"
        raise MobileFaceError(f"cannot start or join Ray ({where}): "
                              f"{' '.join(str(exc).split())[:300]}") from None


class Site:
    """The running site: its actors, their runs, and their status."""

    def __init__(self, config: SiteConfig, publish_stats=None):
        import ray

        self.config = config
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.publish_stats = publish_stats
        self.stopping = threading.Event()
        shared = {"facebank": config.facebank, "mqtt": config.mqtt, "prefix": config.prefix,
                  "threshold": config.threshold, "output": str(config.output.resolve()),
                  "run_id": self.run_id}
        Actor = actor_class()
        self.actors, self.runs, self.results, self.retries = {}, {}, {}, {}
        self.embedder = None
        if config.shared_embedder:
            from mobileface.service.shared_embed import service_class

            self.embedder = service_class().options(name="embedder",
                                                    namespace=NAMESPACE).remote()
            shared["shared_embedder"] = True
        for camera in config.cameras:
            options = {"name": f"camera:{camera.name}", "namespace": NAMESPACE,
                       "num_cpus": camera.cpus}
            if camera.node:
                options["resources"] = {camera.node: 0.001}
            else:
                options["scheduling_strategy"] = "SPREAD"
            actor = Actor.options(**options).remote(asdict(camera), shared)
            self.actors[camera.name] = actor
            self.runs[camera.name] = actor.run.remote()
        log.info("site %s: %d camera(s) started (run %s)", config.path, len(self.actors),
                 self.run_id)
        self._ray = ray

    def status(self, timeout: float = 5.0) -> list[dict]:
        ray = self._ray
        out = []
        for name, actor in self.actors.items():
            if name in self.results:
                out.append(self.results[name])
                continue
            try:
                out.append(ray.get(actor.status.remote(), timeout=timeout))
            except Exception as exc:     # restarting, or its node is gone
                out.append({"camera": name, "state": "unreachable",
                            "error": " ".join(str(exc).split())[:200]})
        return out

    def wait(self) -> int:
        """Until every run ended (or the site was stopped); 0, or 1 when a camera failed."""
        ray = self._ray
        pending = {ref: name for name, ref in self.runs.items()}
        next_status = time.monotonic() + self.config.status_every
        failed = 0
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in done:
                name = pending.pop(ref)
                try:
                    self.results[name] = ray.get(ref)
                    log.info("camera %s: %s", name, _line(self.results[name]))
                    if self.results[name].get("error"):
                        failed += 1
                    # an ended camera's actor goes, and gives back what it reserved (a
                    # camera moved from a lost node may be waiting for it)
                    ray.kill(self.actors[name], no_restart=True)
                except ray.exceptions.ActorUnavailableError as exc:
                    # its node went away mid-call: Ray starts the actor again (elsewhere),
                    # and the run is asked of it again; the new worker continues the stream
                    self.retries[name] = self.retries.get(name, 0) + 1
                    if self.retries[name] > MAX_RESTARTS or self.stopping.is_set():
                        failed += 1
                        self._failed(name, exc)
                        continue
                    log.warning("camera %s: its actor is unavailable (%s); running it again",
                                name, _reason(exc)[:120])
                    ref = self.actors[name].run.remote()
                    self.runs[name] = ref
                    pending[ref] = name
                except Exception as exc:
                    failed += 1
                    self._failed(name, exc)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.config.status_every
                self.report()
        self.report()
        return 1 if failed else 0

    def _failed(self, name: str, exc: Exception) -> None:
        reason = _reason(exc)
        self.results[name] = {"camera": name, "state": "failed", "error": reason}
        log.error("camera %s failed: %s", name, reason)

    def embedder_stats(self) -> dict | None:
        """The shared embedder's batches (None without one, or when it does not answer)."""
        if self.embedder is None:
            return None
        try:
            return self._ray.get(self.embedder.stats.remote(), timeout=5)
        except Exception:
            return None

    def report(self) -> None:
        status = self.status()
        for entry in status:
            log.info("camera %s: %s", entry["camera"], _line(entry))
        shared = self.embedder_stats()
        if shared is not None:
            log.info("shared embedder: %s", shared)
        if self.publish_stats is not None:
            self.publish_stats({"run_id": self.run_id, "time": time.time(),
                                "cameras": {e["camera"]: e for e in status},
                                "embedder": shared})

    def stop(self) -> None:
        """Ask every camera to finish; their outputs are finalised before wait() returns."""
        self.stopping.set()
        for actor in self.actors.values():
            try:
                actor.stop.remote()
            except Exception:      # an actor being restarted: its run is stopped by wait
                pass


def _line(entry: dict) -> str:
    text = (f"{entry.get('state')}, {entry.get('fps', 0):.1f} fps, {entry.get('frames', 0)} "
            f"frames, {entry.get('dropped', 0)} dropped, queue {entry.get('queue', 0)}, "
            f"{entry.get('tracks', 0)} live tracks, node {str(entry.get('node', '?'))[:12]}")
    if entry.get("error"):
        text += f", error: {entry['error']}"
    return text


def _reason(exc: Exception) -> str:
    """The one line a failed camera's run ended with (Ray wraps it in its own error)."""
    cause = getattr(exc, "cause", None) or exc
    text = " ".join(str(cause).split())
    return text[-300:]
