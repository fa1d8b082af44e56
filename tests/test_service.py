"""The site service: cameras.toml is checked, and cameras run on a real Ray.

The Ray scenarios (tests/site_scenarios.py) run in a private network namespace
made for each of them (``unshare --net``, loopback only), so that nothing Ray
starts can listen on, or send to, any address but 127.0.0.1. The clips are
made here from scikit-image's astronaut photo (no ../shared needed).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from mobileface.service import config as site_config

NAME = "Eileen Collins"
FPS, SIZE, FRAMES = 25, (640, 360), 48
LONG = 480          # frames of the clip whose camera is killed: long enough to be mid-run
ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


# -- cameras.toml -------------------------------------------------------------------------

def _toml(tmp_path, text: str):
    path = tmp_path / "cameras.toml"
    path.write_text(text)
    return path


GOOD = '''
facebank = "facebank"
mqtt = "mqtt://127.0.0.1:1883"
output = "site"
[[cameras]]
name = "stage"
source = "clip.mp4"
[[cameras]]
name = "door"
source = "rtsp://10.0.0.9/stream"
fps = 10
roi = [0, 0, 320, 240]
record = true
'''


def test_the_documented_keys_work_as_written(tmp_path):
    site = site_config.load(_toml(tmp_path, GOOD))
    assert site.facebank == str(tmp_path / "facebank") and site.output == tmp_path / "site"
    assert site.mqtt == "mqtt://127.0.0.1:1883" and site.prefix == "mobileface"
    stage, door = site.cameras
    assert stage.source == str(tmp_path / "clip.mp4") and stage.is_file
    assert door.source == "rtsp://10.0.0.9/stream" and not door.is_file
    assert door.fps == 10 and door.roi == (0, 0, 320, 240) and door.record
    assert stage.detect_every is None     # the pipeline's default
    site = site_config.load(_toml(tmp_path, GOOD.replace("record = true", "detect_every = 1")))
    assert site.cameras[1].detect_every == 1


@pytest.mark.parametrize("text, reason", [
    (GOOD.replace('name = "door"', 'name = "stage"'), ":9: camera 'stage': a second camera"),
    (GOOD.replace('source = "clip.mp4"', 'sourc = "clip.mp4"'), ":7: camera 'stage': unknown key 'sourc'"),
    (GOOD.replace('source = "clip.mp4"', ''), "camera 'stage': no source"),
    (GOOD.replace('output = "site"', 'outptu = "site"'), ":4: unknown key 'outptu'"),
    (GOOD.replace("fps = 10", "fps = -3"), "fps must be a frame rate > 0"),
    (GOOD.replace("roi = [0, 0, 320, 240]", "roi = [0, 0, 320]"), "roi must be [x, y, width, height]"),
    (GOOD.replace('mqtt = "mqtt://127.0.0.1:1883"', 'mqtt = "127.0.0.1"'), "mqtt must be a broker URL"),
    (GOOD.replace("record = true", 'record = "yes"'), "record must be bool"),
    (GOOD.replace('name = "door"', 'name = "front door"'), "a camera name is letters"),
    (GOOD.replace("record = true", 'enhance = "bright"'), "enhance must be one of off, auto, on"),
    (GOOD.replace("record = true", "detect_every = 0"), "detect_every must be >= 1"),
    ('output = "x"\n', "no [[cameras]]"),
    ("[[cameras]\nname = 1", "not valid TOML"),
])
def test_bad_configs_are_refused_with_the_file_line_and_reason(tmp_path, text, reason):
    path = _toml(tmp_path, text)
    with pytest.raises(site_config.ConfigError) as refused:
        site_config.load(path)
    assert str(path) in str(refused.value) and reason in str(refused.value)
    done = subprocess.run([sys.executable, "-m", "mobileface", "serve", str(path)],
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 2 and reason in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "site").exists()          # nothing started


def test_check_prints_the_cameras_and_starts_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mobileface", "serve", "--check",
                           str(_toml(tmp_path, GOOD))], capture_output=True, text=True,
                          timeout=60, env=ENV)
    assert done.returncode == 0 and "2 camera(s): stage, door" in done.stdout
    assert not (tmp_path / "site").exists()


# -- on Ray, in a network namespace of their own ------------------------------------------

def _namespace_command() -> list[str] | None:
    """unshare's command for a new network namespace with loopback up, or None."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    base = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]
    probe = subprocess.run(base + ["ip", "link", "set", "lo", "up"], capture_output=True)
    return base if probe.returncode == 0 else None


NAMESPACE = _namespace_command()
needs_namespace = pytest.mark.skipif(NAMESPACE is None,
                                     reason="cannot make a network namespace (unshare --net)")


def _scenario(name: str, work, timeout: float = 600) -> dict:
    script = f"ip link set lo up && exec {sys.executable} {ROOT / 'tests' / 'site_scenarios.py'} {name} {work}"
    done = subprocess.run(NAMESPACE + ["sh", "-c", script], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "result.json").read_text())


def _clip(path, astronaut_bgr, step: int, frames: int = FRAMES) -> None:
    """Her head sliding ``step`` px a frame, back and forth over the frame."""
    patch = astronaut_bgr[0:256, 96:352]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for i in range(frames):
        frame = np.full((SIZE[1], SIZE[0], 3), (120, 140, 150), np.uint8)
        k = i % (2 * FRAMES)
        k = k if k < FRAMES else 2 * FRAMES - 1 - k
        x = 40 + step * k if step > 0 else 344 + step * k
        frame[50:306, x:x + 256] = patch
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def site_inputs(tmp_path_factory, astronaut_bgr):
    """Two clips of her and a facebank with her in it."""
    from scripts import load_script

    root = tmp_path_factory.mktemp("site-inputs")
    _clip(root / "a.mp4", astronaut_bgr, 6)
    _clip(root / "b.mp4", astronaut_bgr, -6)
    _clip(root / "long.mp4", astronaut_bgr, 6, frames=LONG)
    photo = root / "astronaut.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    take_pic = load_script("apps/take_pic.py")
    assert take_pic.main(["-q", "-n", NAME, "--image", str(photo), "--facebank",
                          str(root / "facebank")]) == 0
    return root


def _work(tmp_path, inputs, cameras: str):
    for name in ("a.mp4", "b.mp4", "long.mp4"):
        shutil.copy(inputs / name, tmp_path / name)
    shutil.copytree(inputs / "facebank", tmp_path / "facebank")
    (tmp_path / "site.toml").write_text(f'facebank = "facebank"\noutput = "site"\n'
                                        f'status_every = 2\n{cameras}')
    return tmp_path


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _alone(work, camera: str) -> list[dict]:
    """The events of the camera's clip run alone through infer_on_video."""
    from scripts import load_script

    alone = work / f"alone-{camera}.jsonl"
    infer = load_script("apps/infer_on_video.py")
    assert infer.main(["-q", "--no-progress", "-f", str(work / f"{camera}.mp4"), "--events",
                       str(alone), "--facebank", str(work / "facebank")]) == 0
    return _events(alone)


def _comparable(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in ("best_shot", "source")}


@needs_namespace
def test_three_cameras_give_the_events_of_three_separate_runs(tmp_path, site_inputs):
    work = _work(tmp_path, site_inputs, '[[cameras]]\nname = "a"\nsource = "a.mp4"\n'
                 '[[cameras]]\nname = "b"\nsource = "b.mp4"\n'
                 '[[cameras]]\nname = "live"\nsource = "MJPEG_URL"\nreconnect = 0\n')
    result = _scenario("three", work)
    assert result["returncode"] == 128 + 15, result["stderr"]     # stopped by SIGTERM
    for camera in ("a", "b"):
        alone = _alone(work, camera)
        served = _events(work / "site" / camera / "events.jsonl")
        assert [_comparable(e) for e in served] == [_comparable(e) for e in alone]
        assert any(e["identity"] == NAME for e in served)
        assert all(os.path.exists(e["best_shot"]) for e in served if e["best_shot"])
    live = _events(work / "site" / "live" / "events.jsonl")    # finalised at SIGTERM
    assert live and any(e["identity"] == NAME for e in live)
    statuses = {json.loads(line)["camera"]: json.loads(line)
                for line in result["stdout"].splitlines() if line.startswith("{")}
    assert statuses["a"]["state"] == "ended" and statuses["live"]["state"] == "stopped"
    # `mobileface status`, asked while the site ran: the cameras still running (the two
    # clips had ended, and their actors were gone), with their figures
    assert result["status_code"] == 0, result["status_stderr"]
    asked = {entry["camera"]: entry for entry in json.loads(result["status"])}
    assert set(asked) == {"live"} and asked["live"]["state"] == "running"
    assert {"fps", "dropped", "queue", "tracks", "error", "node"} <= set(asked["live"])


@needs_namespace
def test_a_killed_camera_is_started_again_and_the_other_goes_on(tmp_path, site_inputs):
    work = _work(tmp_path, site_inputs, '[[cameras]]\nname = "a"\nsource = "long.mp4"\n'
                 '[[cameras]]\nname = "b"\nsource = "b.mp4"\n')
    result = _scenario("kill", work)
    assert result["code"] == 0 and result["after"] != result["killed"]
    status = {s["camera"]: s for s in result["status"]}
    assert status["a"]["restart"] == 1 and status["b"]["restart"] == 0
    assert status["a"]["state"] == status["b"]["state"] == "ended"
    events = _events(work / "site" / "a" / "events.jsonl")
    ids = [e["track_id"] for e in events]
    assert len(ids) == len(set(ids))                    # no track id twice in a run
    assert any(i > 1_000_000 for i in ids)              # the restarted worker's own block
    assert max(e["last_frame"] for e in events) >= LONG - 5      # it went on to the end
    assert any(e["identity"] == NAME for e in _events(work / "site" / "b" / "events.jsonl"))


@needs_namespace
def test_on_two_nodes_cameras_spread_and_move_when_a_node_dies(tmp_path, site_inputs):
    # a core each, on nodes of one core: one camera per node; the moved one waits for it.
    # Long clips, so that both are still running when the node goes.
    work = _work(tmp_path, site_inputs, '[[cameras]]\nname = "a"\nsource = "long.mp4"\n'
                 'cpus = 1\n[[cameras]]\nname = "b"\nsource = "long.mp4"\ncpus = 1\n')
    result = _scenario("cluster", work)
    assert len(set(result["placed"].values())) == 2          # one camera per node
    assert len(result["lost"]) == 1
    assert not any(result["ended_before"].values())     # both were mid-run
    status = {s["camera"]: s for s in result["status"]}
    moved = status[result["lost"][0]]
    assert moved["state"] == "ended" and moved["node"] != result["second"]
    assert moved["restart"] >= 1
    assert result["code"] == 0


@needs_namespace
def test_events_over_mqtt_resume_after_the_broker_restarts(tmp_path, site_inputs):
    pytest.importorskip("paho.mqtt")
    from mobileface.eval.mqtt_broker import mosquitto_binary

    try:
        mosquitto_binary()
    except Exception as exc:
        pytest.skip(str(exc))
    work = _work(tmp_path, site_inputs, '[[cameras]]\nname = "live"\nsource = "MJPEG_URL"\n'
                 'reconnect = 0\n')
    config = work / "site.toml"
    config.write_text('mqtt = "BROKER_URL"\n' + config.read_text())
    result = _scenario("mqtt", work)
    assert result["returncode"] == 128 + 15, result["stderr"]
    received = result["received"]
    tracks = [json.loads(m["payload"]) for m in received if m["topic"] == "mobileface/events"]
    per_camera = [m for m in received if m["topic"] == "mobileface/live/events"]
    assert tracks and len(per_camera) == len(tracks)
    for message in tracks:
        assert {"event_id", "type", "camera", "track_id", "identity"} <= set(message)
        assert message["camera"] == "live" and message["type"] in ("new", "update", "end")
    assert any(t["identity"] == NAME for t in tracks)
    ids = [t["event_id"] for t in tracks]
    assert len(ids) == len(set(ids))                       # no message twice
    after = [m for m in received if m["at"] > result["restarted_at"] and
             m["topic"] in ("mobileface/events", "mobileface/stats")]
    assert after                                           # events resumed after the restart
    stats = [json.loads(m["payload"]) for m in received if m["topic"] == "mobileface/stats"]
    camera = stats[-1]["cameras"]["live"]
    assert {"fps", "dropped", "queue", "tracks", "error", "node"} <= set(camera)
    assert {"dropped", "sent", "queued"} <= set(camera["mqtt"])       # drops are counted
    available = [m["payload"] for m in received if m["topic"] == "mobileface/available"]
    assert available[0] == "online" and available[-1] == "offline"   # a clean stop says so


@needs_namespace
def test_a_shared_embedder_serves_both_cameras_with_the_local_results(tmp_path, site_inputs):
    work = _work(tmp_path, site_inputs, '[[cameras]]\nname = "a"\nsource = "a.mp4"\n'
                 '[[cameras]]\nname = "b"\nsource = "b.mp4"\n')
    config = work / "site.toml"
    config.write_text("shared_embedder = true\n" + config.read_text())
    result = _scenario("shared", work)
    assert result["code"] == 0
    stats = result["embedder"]
    assert stats["chips"] > 0 and 1 <= stats["batches"] <= stats["chips"]
    for camera in ("a", "b"):
        served = _events(work / "site" / camera / "events.jsonl")
        local = _alone(work, camera)
        assert [(e["track_id"], e["identity"]) for e in served] == \
            [(e["track_id"], e["identity"]) for e in local]
        assert any(e["identity"] == NAME for e in served)
        for s, l in zip(served, local):
            assert s["similarity"] == pytest.approx(l["similarity"], abs=1e-3)


def test_a_camera_that_cannot_be_opened_is_retried_and_reported(tmp_path):
    """Without Ray: the camera's worker keeps trying a stream that does not answer, says
    so in its status, and stops when asked (the others of a site are their own actors)."""
    import threading
    import time

    from mobileface.eval.mqtt_broker import free_port
    from mobileface.service.camera import CameraWorker
    from mobileface.service.config import CameraConfig

    camera = CameraConfig(name="gone", source=f"http://127.0.0.1:{free_port()}/stream.mjpg",
                          reconnect=0)
    worker = CameraWorker(camera, {"output": str(tmp_path), "run_id": "t"})
    done = {}
    thread = threading.Thread(target=lambda: done.update(worker.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while worker.open_failures < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    status = worker.status()
    assert status["state"] == "retrying" and status["open_failures"] >= 2
    assert "127.0.0.1" in status["error"]
    worker.stop()
    thread.join(timeout=60)
    assert not thread.is_alive() and done["state"] == "stopped"
