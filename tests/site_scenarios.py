"""Site-service scenarios that need Ray, run inside a private network namespace.

``python tests/site_scenarios.py NAME WORKDIR`` runs one scenario and writes
``WORKDIR/result.json``; tests/test_service.py runs it with ``unshare --net``,
so that Ray, the MJPEG camera and the MQTT broker it starts can only ever reach
this namespace's own loopback (Ray binds every port to 127.0.0.1 there; on the
machine's own network it would pick the machine's address). WORKDIR holds what
the test prepared: ``site.toml`` and the clips and facebank it names.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2


#: every wait here is bounded
DEADLINE = 400.0


def _progress(folder: Path, camera: str) -> dict:
    try:
        return json.loads((folder / camera / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def _frames(path: Path) -> list:
    """Every frame of a clip (what the MJPEG camera serves)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def _wait(condition, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def three(work: Path) -> dict:
    """Two clips and an MJPEG camera through ``mobileface serve``; SIGTERM once the files
    ended and the camera served its frames: every output is finalised."""
    from mobileface.eval.mjpeg_server import MjpegServer

    frames = _frames(work / "a.mp4")
    # the clip three times over, at 20 fps, then the camera is gone
    server = MjpegServer(frames, frames_per_connection=3 * len(frames), connections=1,
                         interval=0.05).__enter__()
    config = (work / "site.toml").read_text().replace("MJPEG_URL", server.url)
    (work / "site.toml").write_text(config)
    serve = subprocess.Popen([sys.executable, "-m", "mobileface", "serve", str(work / "site.toml"),
                              ], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = work / "site"
        _wait(lambda: all(_progress(out, c).get("finished") for c in ("a", "b")) or
              serve.poll() is not None, "the two clips to end")
        _wait(lambda: (_progress(out, "live").get("frame") or 0) >= len(frames)
              or serve.poll() is not None, "the camera's frames")
        status = subprocess.run([sys.executable, "-m", "mobileface", "status", "--json"],
                                capture_output=True, text=True, timeout=120)
        serve.send_signal(signal.SIGTERM)
        stdout, stderr = serve.communicate(timeout=120)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
        server.__exit__(None, None, None)
    return {"returncode": serve.returncode, "stdout": stdout, "stderr": stderr[-4000:],
            "status": status.stdout, "status_code": status.returncode,
            "status_stderr": status.stderr[-2000:]}


def _site(work: Path, address: str | None = None):
    from mobileface.service import config as site_config
    from mobileface.service.site import Site, connect

    site = site_config.load(work / "site.toml")
    connect(address)
    return site, Site(site)


def kill(work: Path) -> dict:
    """Two cameras; one camera's actor process is killed mid-run: Ray starts it again, it
    continues, and the other camera goes on."""
    import ray

    site, running = _site(work)
    try:
        _wait(lambda: (_progress(site.output, "a").get("frame") or 0) >= 15, "camera a's frames")
        victim = ray.get(running.actors["a"].pid.remote(), timeout=30)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: any(s["camera"] == "a" and s.get("restart") == 1
                          for s in running.status()), "camera a started again")
        after = ray.get(running.actors["a"].pid.remote(), timeout=30)
        code = running.wait()
        status = running.status()
    finally:
        ray.shutdown()
    return {"code": code, "status": status, "killed": victim, "after": after}


def cluster(work: Path) -> dict:
    """A two-node cluster: the cameras are spread over both; one node dies and its camera
    moves to the other."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    second = nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    try:
        site, running = _site(work, nodes.address)
        _wait(lambda: all((_progress(site.output, c).get("frame") or 0) >= 5 for c in "ab"),
              "both cameras' frames")
        now = running.status()
        placed = {s["camera"]: s["node"] for s in now}
        ended_before = {s["camera"]: s["state"] == "ended" for s in now}
        lost = [c for c, node in placed.items() if node == second.node_id]
        nodes.remove_node(second, allow_graceful=False)
        code = running.wait()
        status = running.status()
        ray.shutdown()
    finally:
        nodes.shutdown()
    return {"code": code, "placed": placed, "second": second.node_id, "lost": lost,
            "status": status, "ended_before": ended_before}


def mqtt(work: Path) -> dict:
    """A live camera through ``mobileface serve`` with a broker that is stopped for a few
    seconds mid-run and started again; everything that arrives is recorded with its
    arrival time."""
    import paho.mqtt.client as paho

    from mobileface.eval.mjpeg_server import MjpegServer
    from mobileface.eval.mqtt_broker import Mosquitto

    frames = _frames(work / "a.mp4")
    received = []
    broker = Mosquitto(work / "broker").start()
    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="scenario-sub")
    subscriber.on_message = lambda c, u, m: received.append(
        {"topic": m.topic, "at": time.time(), "retain": bool(m.retain),
         "payload": m.payload.decode("utf-8", "replace")})
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe("mobileface/#", qos=1)
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    # the clip over and over for as long as the scenario needs (it stops the service)
    server = MjpegServer(frames, frames_per_connection=100 * len(frames), connections=1,
                         interval=0.05).__enter__()
    config = (work / "site.toml").read_text().replace("MJPEG_URL", server.url).replace(
        "BROKER_URL", broker.url)
    (work / "site.toml").write_text(config)
    serve = subprocess.Popen([sys.executable, "-m", "mobileface", "serve", str(work / "site.toml")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped_at = restarted_at = None
    try:
        _wait(lambda: any(m["topic"] == "mobileface/events" for m in received)
              or serve.poll() is not None, "the first track message")
        broker.stop()
        stopped_at = time.time()
        time.sleep(4.0)
        broker.start()
        restarted_at = time.time()
        for topic in ("mobileface/stats", "mobileface/events"):
            _wait(lambda: any(m["at"] > restarted_at and m["topic"] == topic and not m["retain"]
                              for m in received) or serve.poll() is not None,
                  f"{topic} after the restart")
        serve.send_signal(signal.SIGTERM)
        stdout, stderr = serve.communicate(timeout=120)
        time.sleep(1.0)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
        server.__exit__(None, None, None)
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.stop()
    return {"returncode": serve.returncode, "stdout": stdout, "stderr": stderr[-4000:],
            "received": received, "stopped_at": stopped_at, "restarted_at": restarted_at}


def shared(work: Path) -> dict:
    """Two cameras whose embeddings one shared embedder actor makes."""
    import ray

    site, running = _site(work)
    try:
        code = running.wait()
        status = running.status()
        stats = running.embedder_stats()
    finally:
        ray.shutdown()
    return {"code": code, "status": status, "embedder": stats}


if __name__ == "__main__":
    name, folder = sys.argv[1], Path(sys.argv[2])
    result = {"three": three, "kill": kill, "cluster": cluster, "mqtt": mqtt,
              "shared": shared}[name](folder)
    (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))
