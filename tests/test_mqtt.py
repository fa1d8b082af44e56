"""Track events over MQTT: the messages of each track, and their delivery by a real broker.

TrackEvents is tested on hand-made frames and on the engine made of fake parts;
MqttEvents and MqttSink against a real Mosquitto on 127.0.0.1 (``broker``
fixture, :mod:`mobileface.eval.mqtt_broker`), read by a real paho subscriber. Every wait is
bounded in time; every broker, client and process started is stopped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as paho
import pytest

from conftest import ROOT
from fakes import box_at, fake_pipeline, make_frame, run_frames
from mobileface.errors import MobileFaceError
from mobileface.eval.mqtt_broker import Mosquitto, mosquitto_binary
from mobileface.eval.mqtt_broker import self_signed as make_certificate
from mobileface.io.video import Frame
from mobileface.outputs.mqtt import MqttError, MqttEvents, MqttSink, parse_url
from mobileface.outputs.sinks import EventsSink
from mobileface.outputs.track_events import STATE_FIELDS, TrackEvents
from mobileface.pipeline.video import FrameResult
from mobileface.track.memory import TrackSummary
from mobileface.types import Faces

REQUIRED = {"event_id", "type", "frame_time", "before", "after", *STATE_FIELDS}
WAIT = 20.0          # seconds any one wait may take, at most (a loaded 2-core machine)


def wait_until(predicate, timeout: float = WAIT, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# -- a real broker and a real subscriber ---------------------------------------------------

def _missing_broker() -> str | None:
    try:
        mosquitto_binary()
    except MobileFaceError as exc:
        return str(exc)
    return None


needs_broker = pytest.mark.skipif(_missing_broker() is not None,
                                  reason=_missing_broker() or "")


@pytest.fixture
def broker(tmp_path):
    if _missing_broker():
        pytest.skip(_missing_broker())
    with Mosquitto(tmp_path / "broker") as server:
        yield server


class Subscriber:
    """A paho client that records every message under ``topic`` (QoS 1), subscribing
    again after each reconnection; ``client_id`` with ``persistent``: a session the
    broker keeps while it is away."""

    def __init__(self, broker: Mosquitto, topic: str = "mobileface/#",
                 client_id: str = "", persistent: bool = False):
        self.topic = topic
        self.messages: list[paho.MQTTMessage] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=not persistent)
        client.reconnect_delay_set(0.1, 0.5)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        client.on_subscribe = lambda *args: self.subscribed.set()
        client.on_message = self._on_message
        client.on_disconnect = lambda *args: self.subscribed.clear()
        self.client = client
        client.connect_async("127.0.0.1", broker.port, keepalive=10)
        client.loop_start()
        assert self.subscribed.wait(WAIT), "the test subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[paho.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def payloads(self, topic: str) -> list:
        return [json.loads(m.payload) for m in self.on(topic)]

    def texts(self, topic: str) -> list[str]:
        return [m.payload.decode() for m in self.on(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe(broker):
    made = []

    def make(**kwargs) -> Subscriber:
        made.append(Subscriber(broker, **kwargs))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


@pytest.fixture
def connect():
    """MqttEvents that reconnect quickly, closed at the end."""
    made = []

    def make(url: str, **kwargs) -> MqttEvents:
        kwargs.setdefault("reconnect_delay", (0.1, 0.5))
        made.append(MqttEvents(url, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close(timeout=2.0)


# -- hand-made frames ------------------------------------------------------------------------


def frame(index: int, rows: list[dict], fps: float = 10.0,
          finished: list[TrackSummary] | None = None) -> FrameResult:
    """A processed frame with one row per dict: track_id, and optionally predicted,
    identity ("" = nobody), similarity, age, male, quality, pose."""
    n = len(rows)

    def column(key, default, dtype):
        return np.array([r.get(key, default) for r in rows], dtype).reshape(n)

    faces = Faces(np.array([box_at(10 + 90 * k) for k in range(n)], np.float32).reshape(n, 4),
                  np.full(n, 0.99, np.float32),
                  pose=np.array([r.get("pose", (0.0, 0.0, 0.0)) for r in rows],
                                np.float32).reshape(n, 3),
                  quality=column("quality", 0.8, np.float32),
                  track_id=column("track_id", -1, np.int64),
                  predicted=column("predicted", False, bool),
                  identity=column("identity", "", object),
                  similarity=column("similarity", np.nan, np.float32),
                  track_age=column("age", np.nan, np.float32),
                  track_gender=column("male", np.nan, np.float32),
                  frame_index=index, timestamp=index / fps)
    return FrameResult(faces, finished or [])


def summary(track_id: int, identity: str | None = "Unknown", best_shot: bool = True,
            **changes) -> TrackSummary:
    values = dict(track_id=track_id, identity=identity, similarity=0.81, first_frame=0,
                  last_frame=9, first_time=0.0, last_time=0.9, frames=10, age=36.4,
                  gender="female", gender_confidence=0.9, best_quality=0.85,
                  pose_range={"yaw": [-5.0, 7.5], "pitch": [0.0, 2.0], "roll": [-1.0, 1.0]},
                  best_shot=np.zeros((8, 8, 3), np.uint8) if best_shot else None,
                  best_shot_frame=4)
    values.update(changes)
    return TrackSummary(**values)


def strict_json(message: dict) -> dict:
    """The message through JSON that refuses NaN (what a consumer gets)."""
    return json.loads(json.dumps(message, allow_nan=False))


# -- TrackEvents ------------------------------------------------------------------------------


def test_a_track_starts_with_new_only_when_detected():
    events = TrackEvents("door", "run1")
    assert events.messages(frame(0, [{"track_id": 3, "predicted": True}]), 100.0) == []
    first = events.messages(frame(1, [{"track_id": 3}, {"track_id": -1}]), 100.1)
    assert [m["type"] for m in first] == ["new"]
    new = first[0]
    assert REQUIRED <= new.keys()
    assert new["event_id"] == "door:run1:3:new:0" and new["id"] == "door:run1:3"
    assert (new["camera"], new["track_id"], new["identity"], new["label"]) == \
        ("door", 3, None, "face")
    assert new["before"] is None and new["after"]["track_id"] == 3
    assert new["frame_time"] == 100.1 and new["first_time"] == 0.1
    assert events.present() == (1, [])
    # the same track again within the interval: nothing new to say
    assert events.messages(frame(2, [{"track_id": 3}]), 100.2) == []


def test_update_when_the_identity_changes_and_as_a_heartbeat():
    events = TrackEvents("door", "run1", update_interval=1.0)
    sent = []
    names = ["", "", "ada", "ada", "ada", "bob"] + ["bob"] * 14
    for i, name in enumerate(names):               # 10 fps: 2 s of frames
        sent += events.messages(frame(i, [{"track_id": 1, "identity": name,
                                           "similarity": 0.7 if name else np.nan}]), 50 + i / 10)
    kinds = [(m["type"], m["identity"], m["last_frame"]) for m in sent]
    assert kinds == [("new", None, 0), ("update", "ada", 2), ("update", "bob", 5),
                     ("update", "bob", 15)]       # 1 s after the last message
    assert events.present() == (1, ["bob"])
    assert [m["event_id"] for m in sent] == [f"door:run1:1:{t}:{n}" for n, t in
                                             enumerate(["new", "update", "update", "update"])]
    for earlier, later in zip(sent, sent[1:]):      # Frigate's before/after chain
        assert later["before"] == earlier["after"]
        assert later["before"]["identity"] == earlier["identity"]

    quiet = TrackEvents("door", "run1", update_interval=None)
    quiet_kinds = [m["type"] for i in range(40)
                   for m in quiet.messages(frame(i, [{"track_id": 1}]), 50 + i / 10)]
    assert quiet_kinds == ["new"]


def test_end_is_the_events_file_record_with_the_best_shot_reference():
    events = TrackEvents("door", "run1", best_shot=lambda s: f"crops/track_{s.track_id}.jpg")
    events.messages(frame(0, [{"track_id": 7}, {"track_id": 8}]), 10.0)
    ended = events.messages(frame(1, [{"track_id": 8}], finished=[summary(7, "ada")]), 10.1)
    assert [m["type"] for m in ended] == ["end"]
    end = ended[0]
    record = summary(7, "ada").to_record()
    for key in ("similarity", "first_frame", "last_frame", "first_time", "last_time",
                "frames", "age", "gender", "gender_confidence", "best_shot_frame",
                "pose_range", "identity"):
        assert end[key] == record[key], key
    assert end["quality"] == record["best_quality"]
    assert end["best_shot"] == "crops/track_7.jpg"
    assert end["event_id"] == "door:run1:7:end:1" and end["id"] == "door:run1:7"
    assert end["before"]["track_id"] == 7 and end["after"]["best_shot"] == "crops/track_7.jpg"
    assert events.present() == (1, [])

    # an unknown person ends with identity null; no crop, no reference
    last = events.finish([summary(8, "Unknown", best_shot=False)], frame_time=11.0)
    assert [(m["type"], m["identity"], m["best_shot"]) for m in last] == [("end", None, None)]
    with pytest.raises(ValueError, match="new TrackEvents"):
        events.messages(frame(2, [{"track_id": 9}]), 12.0)


def test_no_nan_in_any_message():
    events = TrackEvents("door", "run1", update_interval=0.1)
    rows = [{"track_id": 1, "identity": "ada", "similarity": np.nan, "age": np.nan,
             "male": np.nan, "quality": np.nan, "pose": (np.nan, np.nan, np.nan)}]
    messages = events.messages(frame(0, rows), 1.0) + events.messages(frame(2, rows), 1.2)
    messages += events.finish([summary(1, "ada", similarity=float("nan"), age=None,
                                       gender=None, gender_confidence=None)])
    assert [m["type"] for m in messages] == ["new", "update", "end"]
    for message in messages:
        plain = strict_json(message)
        assert plain["similarity"] is None and plain["age"] is None
    assert messages[0]["pose_range"] == {"yaw": None, "pitch": None, "roll": None}
    assert messages[0]["quality"] is None and messages[0]["gender"] is None


def test_a_track_the_engine_never_finishes_ends_after_a_while():
    """A re-identified track's id is retired without a summary; its messages end anyway."""
    events = TrackEvents("door", "run1", update_interval=None, forget_after=2.0)
    events.messages(frame(0, [{"track_id": 5, "identity": "ada"}]), 1.0)
    out = []
    for i in range(1, 40):                       # track 6 goes on; 5 is gone after frame 0
        out += events.messages(frame(i, [{"track_id": 6}]), 1 + i / 10)
    ends = [m for m in out if m["type"] == "end"]
    assert [(m["track_id"], m["identity"], m["last_frame"]) for m in ends] == [(5, "ada", 0)]
    assert ends[0]["frame_time"] == pytest.approx(1 + 2.1, abs=0.11)
    assert events.present() == (1, [])
    # a row the tracker predicts keeps a track alive
    events.messages(frame(40, [{"track_id": 6, "predicted": True}]), 5.0)
    assert all(m["track_id"] != 6 for m in events.messages(frame(41, []), 5.1))


def test_the_engine_tracks_give_new_update_end_with_unique_ids():
    """The fake engine: ada (enrolled) and a stranger walk in, leave, and their tracks end
    (after the tracker's re-identification window of 3 s)."""
    script = {i: [(box_at(20), "ada", 0.9)] + ([(box_at(200), "stranger", 0.9)] if i >= 5 else [])
              for i in range(30)}
    parts = fake_pipeline(script, max_age=2, recheck_frames=2)
    events = TrackEvents("hall", "r7", update_interval=0.5)
    messages = []
    for i, result in run_frames(parts.pipeline, range(80), fps=10.0).items():
        messages += events.messages(result, 1000 + i / 10)
    assert events.finish(parts.pipeline.finish(), frame_time=1008.0) == []

    ids = [m["event_id"] for m in messages]
    assert len(ids) == len(set(ids))
    by_track = {}
    for m in messages:
        by_track.setdefault(m["id"], []).append(strict_json(m))
    assert sorted(by_track) == ["hall:r7:1", "hall:r7:2"]
    ada, stranger = by_track["hall:r7:1"], by_track["hall:r7:2"]
    for track in (ada, stranger):
        kinds = [m["type"] for m in track]
        assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) == {"update"}
        assert len(kinds) >= 6                       # heartbeats every 0.5 s of 2.3 s or more
        assert {m["track_id"] for m in track} == {track[0]["track_id"]}
        assert track[-1]["frame_time"] > 1003.0      # ended by the engine, not by finish()
    # ada is unknown on her first frame, recognised two frames later
    assert [(m["type"], m["identity"], m["last_frame"]) for m in ada[:2]] == \
        [("new", None, 0), ("update", "ada", 2)]
    assert ada[-1]["identity"] == "ada" and ada[-1]["best_shot_frame"] >= 0
    assert ada[-1]["age"] == 36.0 and ada[-1]["gender"] == "female"
    assert {m["identity"] for m in stranger} == {None}
    assert stranger[0]["first_frame"] == stranger[-1]["first_frame"] >= 5
    assert ada[-1]["last_frame"] == stranger[-1]["last_frame"] == 29


# -- URLs and names ----------------------------------------------------------------------------


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:1883", "mqtt://"),
    ("mqtt://", "no host"),
    ("mqtt://127.0.0.1:port", "port"),
    ("mqtt://127.0.0.1:99999", "port"),
    ("mqtt://[::1:1883", "IPv6"),
    ("mqtt://127.0.0.1:1883/site?x=1", "no path"),
    ("mqtt://user:s3cret@127.0.0.1:1883/x", "no path"),
])
def test_a_bad_url_is_refused_in_one_line(url, reason):
    with pytest.raises(MqttError) as caught:
        MqttEvents(url)
    message = str(caught.value)
    assert isinstance(caught.value, MobileFaceError)
    assert "\n" not in message and reason in message and "MQTT broker URL" in message
    assert "s3cret" not in message


def test_urls_that_work():
    assert parse_url("mqtt://127.0.0.1") == {"host": "127.0.0.1", "port": 1883, "tls": False,
                                             "username": None, "password": None}
    assert parse_url("mqtts://ha:p%40ss@broker.local:8884/") == {
        "host": "broker.local", "port": 8884, "tls": True, "username": "ha", "password": "p@ss"}
    assert parse_url("mqtts://broker.local")["port"] == 8883


def test_names_that_cannot_be_topics_are_refused(broker, connect):
    with pytest.raises(MqttError, match="prefix"):
        MqttEvents(broker.url, prefix="site/#")
    events = connect(broker.url, prefix="site/a")
    with pytest.raises(MqttError, match="camera name 'a/b'"):
        events.publish("a/b", {"type": "new"})
    assert events.topic("events") == "site/a/events"


# -- delivery by a real broker ----------------------------------------------------------------


def test_messages_arrive_on_both_topics_with_qos_1(broker, connect, subscribe):
    subscriber = subscribe()
    mqtt = connect(broker.url)
    events = TrackEvents("door", "run1")
    sent = events.messages(frame(0, [{"track_id": 1}, {"track_id": 2, "identity": "ada"}]), 5.0)
    for message in sent:
        mqtt.publish("door", message)
    assert wait_until(lambda: len(subscriber.on("mobileface/door/events")) == 2)
    assert wait_until(lambda: len(subscriber.on("mobileface/events")) == 2)
    assert wait_until(lambda: mqtt.sent == 2 and mqtt.queued == 0)
    for topic in ("mobileface/events", "mobileface/door/events"):
        received = subscriber.payloads(topic)
        assert received == [strict_json(m) for m in sent]
        assert {m.qos for m in subscriber.on(topic)} == {1}
        assert not any(m.retain for m in subscriber.on(topic))
    assert [(m["track_id"], m["identity"]) for m in received] == [(1, None), (2, "ada")]
    assert mqtt.counters() == {"connected": True, "queued": 0, "sent": 2, "dropped": 0,
                               "last_error": None}


def test_available_online_retained_and_offline_on_close(broker, connect, subscribe):
    mqtt = connect(broker.url)
    assert wait_until(lambda: mqtt.connected)
    late = subscribe(topic="mobileface/available")      # after the fact: the retained one
    assert wait_until(lambda: late.texts("mobileface/available") == ["online"])
    assert late.on("mobileface/available")[0].retain
    mqtt.publish("door", {"type": "new", "track_id": 1})
    assert mqtt.close(timeout=5.0) == 0
    assert mqtt.sent == 1 and not mqtt.connected
    assert wait_until(lambda: late.texts("mobileface/available") == ["online", "offline"])
    after = subscribe(topic="mobileface/available")
    assert wait_until(lambda: after.texts("mobileface/available") == ["offline"])


def test_a_camera_process_speaks_on_its_own_availability_topic(broker, connect, subscribe):
    subscriber = subscribe()
    service = connect(broker.url, client_id="service")
    camera = connect(broker.url, client_id="door", availability="door/available")
    silent = connect(broker.url, client_id="silent", availability=None)
    assert wait_until(lambda: all(c.connected and c.flushed for c in (service, camera, silent)))
    camera.close()
    silent.close()
    assert wait_until(lambda: subscriber.texts("mobileface/door/available") == ["online",
                                                                               "offline"])
    assert subscriber.texts("mobileface/available") == ["online"]
    with pytest.raises(MqttError, match="availability"):
        MqttEvents(broker.url, availability="#")


DYING = """
import sys, time
from mobileface.outputs.mqtt import MqttEvents
events = MqttEvents(sys.argv[1], client_id="dying", reconnect_delay=(0.1, 0.5))
deadline = time.monotonic() + 30
while not events.connected and time.monotonic() < deadline:
    time.sleep(0.05)
print("connected" if events.connected else "not connected", flush=True)
time.sleep(60)
"""


def test_the_last_will_says_offline_when_the_process_dies(broker, subscribe):
    subscriber = subscribe(topic="mobileface/available")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    process = subprocess.Popen([sys.executable, "-c", DYING, broker.url], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "connected", process.stderr.read()
        assert wait_until(lambda: subscriber.texts("mobileface/available") == ["online"])
        process.kill()                        # no clean close: only the broker can tell
        process.wait(WAIT)
        assert wait_until(lambda: subscriber.texts("mobileface/available") == ["online",
                                                                              "offline"])
        assert subscriber.on("mobileface/available")[-1].qos == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
        process.stdout.close()
        process.stderr.close()


def test_stats_are_retained_newest_only(broker, connect, subscribe):
    mqtt = connect(broker.url)
    mqtt.publish_stats({"cameras": {"door": {"fps": 9.5, "latency": float("nan")}}})
    assert wait_until(lambda: mqtt.connected)
    mqtt.publish_stats({"cameras": {"door": {"fps": 10.0, "latency": np.float32(0.25)}},
                        "mqtt": mqtt.counters()})
    assert wait_until(lambda: mqtt.connected and mqtt.flushed)
    late = subscribe(topic="mobileface/stats")
    assert wait_until(lambda: len(late.on("mobileface/stats")) == 1)
    time.sleep(0.2)                              # nothing else is retained there
    [stats] = late.on("mobileface/stats")
    assert stats.retain and stats.qos == 1
    assert json.loads(stats.payload)["cameras"] == {"door": {"fps": 10.0, "latency": 0.25}}
    assert json.loads(stats.payload)["mqtt"]["connected"] is True


def test_retained_topics_come_back_after_a_broker_restart(broker, connect, subscribe):
    """A broker restarted without persistence forgets retained messages: availability
    and the last stats are published again when the connection comes back."""
    mqtt = connect(broker.url)
    mqtt.publish_stats({"fps": 10.0})
    assert wait_until(lambda: mqtt.connected and mqtt.flushed)
    broker.stop()
    assert wait_until(lambda: not mqtt.connected)
    broker.start()
    assert wait_until(lambda: mqtt.connected and mqtt.flushed)
    late = subscribe()
    assert wait_until(lambda: late.texts("mobileface/available") == ["online"])
    assert wait_until(lambda: late.payloads("mobileface/stats") == [{"fps": 10.0}])


def _seq(messages) -> list[int]:
    return sorted({m["seq"] for m in messages})


@needs_broker
def test_broker_restart_publish_never_blocks_and_drops_the_oldest(tmp_path, connect):
    """The broker goes away with 200 events to send and room for 50: publishing goes on
    at once, the 150 oldest are dropped and counted, the 50 newest arrive after the
    restart (a subscriber with a persistent session gets them), and events resume."""
    server = Mosquitto(tmp_path / "persistent", persistence=True).start()
    subscriber = None
    try:
        subscriber = Subscriber(server, topic="mobileface/events", client_id="consumer",
                                persistent=True)
        mqtt = connect(server.url, queue_size=50)
        for seq in range(10):
            mqtt.publish("door", {"phase": "before", "seq": seq})
        assert wait_until(lambda: mqtt.sent == 10)
        assert wait_until(lambda: len(subscriber.on("mobileface/events")) >= 10)

        server.stop()
        assert wait_until(lambda: not mqtt.connected)
        start = time.monotonic()
        for seq in range(200):
            mqtt.publish("door", {"phase": "down", "seq": seq})
        took = time.monotonic() - start
        assert took < 5.0, f"200 publishes took {took:.1f} s with the broker down"
        assert not mqtt.connected and mqtt.dropped == 150 and mqtt.queued == 50
        assert mqtt.last_error is not None and "lost" in mqtt.last_error

        server.start()
        assert wait_until(lambda: mqtt.sent == 60 and mqtt.queued == 0)
        assert wait_until(lambda: subscriber.subscribed.is_set())
        down = lambda: [json.loads(m.payload) for m in subscriber.on("mobileface/events")
                        if json.loads(m.payload)["phase"] == "down"]
        assert wait_until(lambda: _seq(down()) == list(range(150, 200)))
        for seq in range(5):
            mqtt.publish("door", {"phase": "after", "seq": seq})
        after = lambda: [json.loads(m.payload) for m in subscriber.on("mobileface/events")
                         if json.loads(m.payload)["phase"] == "after"]
        assert wait_until(lambda: _seq(after()) == list(range(5)))
        assert mqtt.dropped == 150 and mqtt.connected
    finally:
        if subscriber is not None:
            subscriber.close()
        server.stop()


@needs_broker
def test_a_broker_that_is_not_up_yet(tmp_path, connect):
    """A service may start before its broker: events wait in the queue."""
    late = Mosquitto(tmp_path / "late")
    mqtt = connect(late.url)
    for seq in range(3):
        mqtt.publish("door", {"seq": seq})
    assert not mqtt.connected and mqtt.queued == 3 and mqtt.sent == 0
    assert wait_until(lambda: mqtt.last_error == f"cannot connect to 127.0.0.1:{late.port}")
    with late:
        assert wait_until(lambda: mqtt.sent == 3 and mqtt.connected)
        assert mqtt.dropped == 0


@needs_broker
def test_tls_with_the_brokers_certificate(tmp_path, connect):
    """mqtts:// checks the broker's certificate: with its CA the events go through; with
    the system's CAs the connection is refused and publishing still never blocks."""
    cert, key = self_signed(tmp_path)
    with Mosquitto(tmp_path / "tls", tls=(cert, key)) as server:
        subscriber = Subscriber(server, topic="mobileface/door/events")
        try:
            trusted = connect(server.tls_url, ca_file=cert)
            untrusted = connect(server.tls_url, client_id="untrusted")
            for client in (trusted, untrusted):
                client.publish("door", {"type": "new", "track_id": 1})
            assert wait_until(lambda: subscriber.payloads("mobileface/door/events") ==
                              [{"type": "new", "track_id": 1}])
            # the broker's acknowledgement may come after the subscriber's copy
            assert wait_until(lambda: trusted.sent == 1) and trusted.connected
            assert wait_until(lambda: untrusted.last_error is not None)
            assert not untrusted.connected and untrusted.queued == 1
        finally:
            subscriber.close()


# -- the sink -------------------------------------------------------------------------------


def test_the_sink_publishes_each_camera_beside_the_events_file(tmp_path, broker, connect,
                                                              subscribe):
    subscriber = subscribe()
    mqtt = connect(broker.url)
    script = {i: [(box_at(20), "ada", 0.9)] for i in range(12)}
    parts = fake_pipeline(script, max_age=2)
    jsonl = EventsSink(tmp_path / "events.jsonl", source="door.mp4")
    crop = lambda s: str(jsonl.crops_dir / f"track_{s.track_id:05d}.jpg")
    sink = MqttSink(mqtt, TrackEvents("door", "run1", best_shot=crop))
    for i in range(20):
        image = make_frame(i)
        result = parts.pipeline.process(image, i, i / 10)
        shot = Frame(i, i / 10, image, time.perf_counter())
        jsonl.write(shot, result)
        sink.write(shot, result)
    final = parts.pipeline.finish()
    jsonl.finish(final)
    sink.finish(final)
    jsonl.close()
    sink.close()
    assert mqtt.connected                           # the service closes the shared client

    assert wait_until(lambda: any(m["type"] == "end"
                                  for m in subscriber.payloads("mobileface/door/events")))
    messages = subscriber.payloads("mobileface/door/events")
    assert [m["type"] for m in messages][0] == "new"
    [end] = [m for m in messages if m["type"] == "end"]
    [line] = [json.loads(s) for s in (tmp_path / "events.jsonl").read_text().splitlines()]
    for key in ("track_id", "identity", "similarity", "first_time", "last_time", "frames",
                "age", "gender", "pose_range", "best_shot"):
        assert end[key] == line[key], key
    assert os.path.isfile(end["best_shot"])
    assert end["frame_time"] == pytest.approx(time.time(), abs=60)

    identity = lambda: [json.loads(m.payload) for m in subscriber.on("mobileface/door/identity")]
    assert wait_until(lambda: identity() and identity()[-1]["faces"] == 0)
    seen = [(s["faces"], s["identities"]) for s in identity()]
    assert (1, ["ada"]) in seen and seen[-1] == (0, [])
    assert "door" in sink.outcome() and "0 dropped" in sink.outcome()


def self_signed(folder):
    try:
        return make_certificate(folder)
    except MobileFaceError as exc:
        pytest.skip(str(exc))
