"""Many cameras on Ray: aggregate and per-camera fps against one process, event latency.

    python benchmark/streams.py [--cameras 1 2 4] [--frames 400] [--capped 4 --cap 10]
                                [--json-out results.json]

On friends1.mp4 (720p, every stage; the clip looped to --frames frames in a
temporary file made here):

* **one process**: the engine in this process, as ``infer_on_video`` runs it;
* **N cameras under Ray**: ``mobileface serve``'s Site with N cameras of the same
  clip, each an actor, all at once; aggregate fps is the sum of the cameras' fps;
* **capped**: --capped cameras at --cap fps each, as live cameras (an MJPEG server
  here serves the clip at 25 fps per camera): does each hold its cap, and does any
  queue grow?

Event latency is from a frame's read time to the arrival of its MQTT message at a
subscriber (a Mosquitto broker started here on 127.0.0.1), p50/p95. The whole
run happens in a private network namespace when this machine allows one, so Ray
binds only to 127.0.0.1. Prints a table, then a last line of JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from mobileface.cli.common import emit_json
from mobileface.eval.bench import DATA, write_looped

DEFAULT_VIDEO = DATA / "mobileface" / "friends1.mp4"
INSIDE = "MOBILEFACE_STREAMS_NAMESPACE"


def one_process(path: Path) -> float:
    from mobileface.io.video import VideoSource
    from mobileface.pipeline import FacePipeline, PipelineConfig
    from mobileface.pipeline.runner import VideoRunner

    pipeline = FacePipeline.from_config(PipelineConfig(det_size=480))
    stats = VideoRunner(VideoSource(str(path)), pipeline, []).run()
    return stats.fps


class Listener:
    """A subscriber recording each track message's latency (arrival - frame_time)."""

    def __init__(self, port: int):
        import paho.mqtt.client as paho

        self.latencies: list[float] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-sub")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("mobileface/events", qos=1)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client, userdata, message) -> None:
        payload = json.loads(message.payload)
        if payload.get("frame_time"):
            self.latencies.append(time.time() - payload["frame_time"])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_site(work: Path, cameras: list[str], mqtt: str | None, cap: float | None = None,
             seconds: float | None = None) -> list[dict]:
    """The cameras (sources) as one site; until the files end, or for ``seconds``."""
    from mobileface.service import config as site_config
    from mobileface.service.site import Site

    lines = [f'output = "{work / "site"}"', "status_every = 2"]
    if mqtt:
        lines.append(f'mqtt = "{mqtt}"')
    for i, source in enumerate(cameras):
        lines += ["[[cameras]]", f'name = "cam{i}"', f'source = "{source}"', "det_size = 480"]
        if cap:
            lines.append(f"fps = {cap}")
    (work / "site.toml").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work / "site", ignore_errors=True)
    site = Site(site_config.load(work / "site.toml"))
    queues: dict[str, list[int]] = {}
    if seconds:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(2.0)
            for entry in site.status():
                queues.setdefault(entry["camera"], []).append(entry.get("queue", 0))
        site.stop()
    site.wait()
    status = site.status()
    for entry in status:
        entry["queues"] = queues.get(entry["camera"], [])
    return status


def measure(args) -> dict:
    import ray

    from mobileface.eval.mqtt_broker import Mosquitto
    from mobileface.service.site import connect

    work = Path(tempfile.mkdtemp(prefix="mobileface-streams-"))
    rows, latencies = [], []
    try:
        clip = write_looped(Path(args.video), args.frames, work / "clip.mp4", fps=25)
        single = one_process(clip)
        rows.append({"setup": "one process", "cameras": 1, "aggregate_fps": round(single, 2),
                     "per_camera_fps": [round(single, 2)]})
        broker = Mosquitto(work / "broker").start()
        listener = Listener(broker.port)
        connect(None)
        try:
            for n in args.cameras:
                status = run_site(work, [str(clip)] * n, broker.url)
                fps = [s.get("fps", 0.0) for s in status]
                rows.append({"setup": "ray", "cameras": n, "aggregate_fps": round(sum(fps), 2),
                             "per_camera_fps": fps, "ratio_to_one_process":
                             round(sum(fps) / single, 3) if single else None})
            if args.capped:
                frames = [cv2.resize(f, (1280, 720)) for f in _frames(clip, 100)]
                from mobileface.eval.mjpeg_server import MjpegServer

                servers = [MjpegServer(frames, 100_000, 1, interval=1 / 25).__enter__()
                           for _ in range(args.capped)]
                try:
                    status = run_site(work, [s.url for s in servers], broker.url, cap=args.cap,
                                      seconds=args.seconds)
                finally:
                    for server in servers:
                        server.__exit__(None, None, None)
                fps = [s.get("fps", 0.0) for s in status]
                rows.append({"setup": f"ray, live, {args.cap:g} fps cap", "cameras": args.capped,
                             "aggregate_fps": round(sum(fps), 2), "per_camera_fps": fps,
                             "held_cap": all(f >= 0.9 * args.cap for f in fps),
                             "max_queue": max((max(s["queues"] or [0]) for s in status),
                                              default=0),
                             "queues_last": [s["queues"][-3:] for s in status]})
            latencies = list(listener.latencies)
        finally:
            ray.shutdown()
            listener.close()
            broker.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lat = np.array(latencies) * 1e3
    return {"rows": rows, "event_latency_ms": {
        "p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "messages": int(len(lat))}}


def _frames(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    out = []
    while len(out) < count:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(frame)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=400, help="frames per camera")
    parser.add_argument("--capped", type=int, default=4, help="live cameras at --cap fps "
                                                              "(0: skip)")
    parser.add_argument("--cap", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the capped run lasts")
    parser.add_argument("--no-namespace", action="store_true",
                        help="run here, not in a private network namespace")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if not Path(args.video).is_file():
        parser.error(f"no video {args.video} (give --video)")
    if not args.no_namespace and not os.environ.get(INSIDE) and shutil.which("unshare"):
        command = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        inner = " ".join([sys.executable, *map(str, sys.argv)])
        probe = subprocess.run(command + ["true"], capture_output=True)
        if probe.returncode == 0:
            return subprocess.call(command + ["sh", "-c", f"ip link set lo up && exec {inner}"],
                                   env={**os.environ, INSIDE: "1"})
    result = measure(args)
    flags = sorted({f for line in open("/proc/cpuinfo") if line.startswith("flags")
                    for f in line.split()[2:]} & {"avx2", "avx512f", "avx512_vnni", "amx_int8"})
    print(f"{os.cpu_count()} cores, {' '.join(flags)}; {args.frames} frames of "
          f"{Path(args.video).name} per camera")
    print(f"{'setup':<26} {'cameras':>7} {'aggregate fps':>14} {'per camera':>30} {'x one':>6}")
    for row in result["rows"]:
        per = ", ".join(f"{f:.1f}" for f in row["per_camera_fps"])
        ratio = row.get("ratio_to_one_process")
        print(f"{row['setup']:<26} {row['cameras']:>7} {row['aggregate_fps']:>14.1f} {per:>30} "
              f"{ratio if ratio is not None else '':>6}")
        if "held_cap" in row:
            print(f"{'':<26} held the cap: {row['held_cap']}; largest queue {row['max_queue']}")
    lat = result["event_latency_ms"]
    print(f"event latency, frame to MQTT delivery: p50 {lat['p50']} ms, p95 {lat['p95']} ms "
          f"({lat['messages']} messages)")
    emit_json({"benchmark": "streams", "cpu_count": os.cpu_count(), "cpu_flags": flags,
               **result}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
