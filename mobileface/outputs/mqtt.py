"""Track events over MQTT (paho-mqtt 2, QoS 1), in Frigate's topic layout.

Topics, under a prefix (``mobileface`` by default):

* ``{prefix}/events``: every track message (:mod:`mobileface.outputs.track_events`);
* ``{prefix}/{camera}/events``: the same messages, one topic per camera;
* ``{prefix}/{camera}/identity``: retained, who is in front of that camera now;
* ``{prefix}/available``: retained ``online`` while connected; the broker
  publishes the last will ``offline`` when the connection dies, and a clean
  :meth:`MqttEvents.close` publishes ``offline`` itself;
* ``{prefix}/stats``: retained JSON, the last :meth:`MqttEvents.publish_stats`.

Recognition must never wait for a broker. :meth:`MqttEvents.publish` only
puts the message in a bounded queue; a background thread hands it to paho
when connected, with at most ``inflight`` messages not yet acknowledged
(PUBACK). paho reconnects with exponential backoff and sends the
unacknowledged ones again (at-least-once: a consumer drops repeats by
``event_id``). When the queue is full, the oldest message is dropped and
counted (:attr:`MqttEvents.dropped`). Retained topics are not queued: only the
last payload of each is kept, and it is sent again on every connection (a
broker restarted without persistence has forgotten it).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from urllib.parse import unquote, urlsplit

from mobileface.errors import MobileFaceError
from mobileface.outputs.sinks import Sink
from mobileface.outputs.track_events import TrackEvents, finite

log = logging.getLogger(__name__)

PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttError(MobileFaceError, ValueError):
    """A broker URL or an MQTT setting that cannot work (the message is one line)."""


class _Entry:
    """One queued track message: its payload goes to two topics, each acknowledged."""

    __slots__ = ("topics", "payload", "acks")

    def __init__(self, topics: tuple[str, ...], payload: bytes):
        self.topics, self.payload, self.acks = topics, payload, len(topics)


def parse_url(url: str) -> dict:
    """``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS) as connection
    settings; MqttError, with the password hidden, for anything else."""
    try:
        parts = urlsplit(str(url))
    except ValueError as exc:        # an unclosed [ of an IPv6 address
        raise MqttError(f"bad MQTT broker URL {_hidden(url)}: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    problem = None
    if port == 0:
        problem = "the port must be a number from 1 to 65535"
    elif parts.scheme not in PORTS:
        problem = "it must start with mqtt:// or mqtts://"
    elif not parts.hostname:
        problem = "it names no host"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "it must be mqtt://host:port, with no path or query"
    if problem:
        raise MqttError(f"bad MQTT broker URL {_hidden(url)}: {problem}")
    return {"host": parts.hostname, "port": port or PORTS[parts.scheme],
            "tls": parts.scheme == "mqtts",
            "username": unquote(parts.username) if parts.username is not None else None,
            "password": unquote(parts.password) if parts.password is not None else None}


def _hidden(url) -> str:
    """The URL as it may be shown: without its password."""
    text = str(url)
    try:
        parts = urlsplit(text)
        if parts.password is not None:
            return text.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return text


def _levels(topic: str, what: str) -> str:
    """A topic of one or more levels, each checked."""
    return "/".join(check_topic_level(level, what) for level in str(topic).split("/"))


def check_topic_level(name: str, what: str) -> str:
    """A name usable as one level of a topic (no '/', '+', '#', not empty)."""
    if not name or any(c in name for c in "/+#\0"):
        raise MqttError(f"the {what} {name!r} cannot be part of an MQTT topic "
                        "(it must be non-empty, without '/', '+' or '#')")
    return name


def to_json(data) -> bytes:
    """Compact JSON with every non-finite number as null (NaN is not JSON)."""
    return json.dumps(_plain(data), separators=(",", ":"), allow_nan=False).encode("utf-8")


def _plain(data):
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if isinstance(data, float):
        return finite(data)
    if hasattr(data, "item") and not isinstance(data, (str, bytes)):   # numpy scalars
        return _plain(data.item())
    return data


class MqttEvents:
    """A connection to one broker that publishes track messages without ever blocking.

    url: ``mqtt://[user:password@]host[:port]`` (``mqtts://``: TLS, checked against
    the system's certificates, or ``ca_file``). prefix: the first level of every topic.
    client_id: the MQTT client id (unique per broker: two clients with one id
    throw each other off); by default from the host name and process id.
    queue_size: the track messages kept while the broker cannot take them.
    inflight: messages handed to the broker and not yet acknowledged, at most.
    reconnect_delay: (first, longest) seconds between connection attempts.
    availability: the topic, under the prefix, of ``online``/``offline`` and the last
    will; None for none. One process speaks for the service on ``available``: a
    camera's own process should use its own topic (``"door/available"``), else its
    last will would say the whole service is offline.
    """

    def __init__(self, url: str, prefix: str = "mobileface", client_id: str | None = None,
                 queue_size: int = 1000, inflight: int = 20, keepalive: int = 30,
                 reconnect_delay: tuple[float, float] = (1.0, 30.0),
                 ca_file: str | os.PathLike | None = None,
                 availability: str | None = "available"):
        import paho.mqtt.client as paho

        settings = parse_url(url)
        if queue_size < 1 or inflight < 1:
            raise MqttError(f"the MQTT queue size and inflight count must be >= 1, "
                            f"got {queue_size} and {inflight}")
        self.prefix = _levels(prefix, "MQTT topic prefix")
        self.availability = None if availability is None else \
            self.topic(_levels(availability, "MQTT availability topic"))
        self.url = _hidden(url)
        self.queue_size, self.inflight = int(queue_size), int(inflight)
        self._queue: deque[_Entry] = deque()
        self._pending: dict[int, _Entry | None] = {}   # mid -> entry (None: a retained topic)
        self._early: set[int] = set()                  # acknowledged before being recorded
        self._retained: dict[str, bytes] = {}          # the last payload of each retained topic
        self._due: list[str] = []                      # retained topics to send
        self._cond = threading.Condition()
        self._connected = False
        self._closing = False
        self._stopped = False
        self.sent = self.dropped = 0
        #: why the last connection attempt failed or the connection was lost (None: fine)
        self.last_error: str | None = None

        client_id = client_id or f"mobileface-{socket.gethostname()}-{os.getpid()}"
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv311, clean_session=True)
        if settings["username"] is not None:
            client.username_pw_set(settings["username"], settings["password"])
        if settings["tls"]:
            client.tls_set(ca_certs=str(ca_file) if ca_file else None)
        first, longest = reconnect_delay
        client.reconnect_delay_set(first, longest)
        client.max_inflight_messages_set(2 * self.inflight + 8)
        client.max_queued_messages_set(0)
        if self.availability is not None:
            client.will_set(self.availability, b"offline", qos=1, retain=True)
            self._retained[self.availability] = b"online"
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._address = f"{settings['host']}:{settings['port']}"
        client.connect_async(settings["host"], settings["port"], keepalive)
        client.loop_start()
        self._thread = threading.Thread(target=self._drain, name="mqtt-events", daemon=True)
        self._thread.start()

    # -- what callers use -----------------------------------------------------------------

    def topic(self, *levels: str) -> str:
        return "/".join((self.prefix, *levels))

    def publish(self, camera: str, message: dict) -> None:
        """Queue one track message for ``{prefix}/events`` and ``{prefix}/{camera}/events``;
        returns at once. When the queue is full the oldest queued message is dropped;
        after :meth:`close` began, the message itself is (both are counted in ``dropped``)."""
        check_topic_level(camera, "camera name")
        entry = _Entry((self.topic("events"), self.topic(camera, "events")), to_json(message))
        with self._cond:
            if self._closing:        # a camera still going while the service shuts down
                self.dropped += 1
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("MQTT queue full (%d messages, broker %s): %d events dropped "
                                "so far", self.queue_size, self.url, self.dropped)
            self._queue.append(entry)
            self._cond.notify_all()

    def publish_stats(self, stats: dict) -> None:
        """``stats`` as retained JSON on ``{prefix}/stats`` (only the newest is kept)."""
        self.publish_retained(self.topic("stats"), to_json(stats))

    def publish_identity(self, camera: str, state: dict) -> None:
        """Who is in front of ``camera`` now, retained on ``{prefix}/{camera}/identity``."""
        check_topic_level(camera, "camera name")
        self.publish_retained(self.topic(camera, "identity"), to_json(state))

    def publish_retained(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self._retained[topic] = payload
            if topic not in self._due:
                self._due.append(topic)
            self._cond.notify_all()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queued(self) -> int:
        """Track messages not yet acknowledged by the broker (queued or in flight)."""
        with self._cond:
            return self._unacknowledged()

    @property
    def flushed(self) -> bool:
        """Everything published so far (track messages, stats, availability) has been
        acknowledged by the broker."""
        with self._cond:
            return not (self._queue or self._due or self._pending)

    def counters(self) -> dict:
        """What a status line or the stats topic shows of this connection."""
        return {"connected": self.connected, "queued": self.queued, "sent": self.sent,
                "dropped": self.dropped, "last_error": self.last_error}

    def close(self, timeout: float = 5.0) -> int:
        """Send what can be sent within ``timeout`` seconds, publish ``offline`` (given
        half a second at least), disconnect.

        Returns how many track messages were not delivered (also logged).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._stopped:
                return 0
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._due or self._pending) and self._connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            if self.availability is not None:
                self.publish_retained(self.availability, b"offline")
            # the last word gets a moment even when the events used up the time
            grace = time.monotonic() + max(0.5, deadline - time.monotonic())
            while self._connected and self._retained_pending():
                left = grace - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            undelivered = self._unacknowledged()
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False
        if undelivered:
            log.warning("MQTT: %d events were not delivered to %s", undelivered, self.url)
        return undelivered

    def __enter__(self) -> "MqttEvents":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the background thread --------------------------------------------------------------

    def _unacknowledged(self) -> int:
        return len(self._queue) + len({id(e) for e in self._pending.values() if e})

    def _retained_pending(self) -> bool:
        return bool(self._due) or any(e is None for e in self._pending.values())

    def _drain(self) -> None:
        """Hand queued messages to paho while connected, within the inflight limit."""
        while True:
            with self._cond:
                while not self._stopped and not self._ready():
                    self._cond.wait(0.5)
                if self._stopped:
                    return
                if self._due:
                    topic = self._due.pop(0)
                    work = [(topic, self._retained[topic], True, None)]
                else:
                    entry = self._queue.popleft()
                    work = [(topic, entry.payload, False, entry) for topic in entry.topics]
            for topic, payload, retain, entry in work:
                info = self._client.publish(topic, payload, qos=1, retain=retain)
                with self._cond:
                    if info.mid in self._early:
                        self._early.discard(info.mid)
                        self._acked(entry)
                    else:
                        self._pending[info.mid] = entry

    def _ready(self) -> bool:
        if not self._connected:
            return False
        if self._due:
            return True
        events = sum(1 for e in self._pending.values() if e is not None)
        return bool(self._queue) and events < 2 * self.inflight

    def _acked(self, entry: _Entry | None) -> None:
        if entry is not None:
            entry.acks -= 1
            if entry.acks == 0:
                self.sent += 1
        self._cond.notify_all()

    # -- paho's callbacks (its network thread) -------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            if reason_code.is_failure:
                self.last_error = f"the broker refused the connection: {reason_code}"
                log.warning("MQTT broker %s: %s", self.url, self.last_error)
                return
            log.info("MQTT connected to %s", self.url)
            self._connected = True
            self.last_error = None
            self._due = list(self._retained)       # a restarted broker forgot them
            self._cond.notify_all()

    def _on_connect_fail(self, client, userdata) -> None:
        with self._cond:
            first = self.last_error is None
            self.last_error = f"cannot connect to {self._address}"
        if first:
            log.warning("MQTT broker %s: %s; retrying", self.url, self.last_error)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            if self._connected and not self._stopped:
                self.last_error = f"connection lost: {reason_code}"
                log.warning("MQTT broker %s: %s; reconnecting", self.url, self.last_error)
            self._connected = False
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            if mid in self._pending:
                self._acked(self._pending.pop(mid))
            else:
                self._early.add(mid)


class MqttSink(Sink):
    """Feeds one camera's frames to a :class:`TrackEvents` and its messages to
    :class:`MqttEvents`, beside the events file (:class:`~mobileface.outputs.sinks.EventsSink`).

    The MqttEvents is usually shared by the cameras of a service and closed by it;
    ``close_client`` makes :meth:`close` close it too. Who is in front of the camera
    is published (retained) whenever it changes.
    """

    def __init__(self, mqtt: MqttEvents, events: TrackEvents, close_client: bool = False):
        check_topic_level(events.camera, "camera name")
        self.mqtt, self.events = mqtt, events
        self.close_client = close_client
        self._present = None

    def write(self, frame, result) -> None:
        frame_time = _wall_time(getattr(frame, "read_at", 0.0))
        self._send(self.events.messages(result, frame_time), frame_time)

    def finish(self, summaries) -> None:
        self._send(self.events.finish(summaries), time.time())

    def close(self) -> None:
        if self.close_client:
            self.mqtt.close()

    def outcome(self) -> str | None:
        c = self.mqtt.counters()
        return (f"MQTT events of {self.events.camera} to {self.mqtt.url}: {c['sent']} delivered "
                f"in all, {c['queued']} waiting, {c['dropped']} dropped")

    def _send(self, messages: list[dict], frame_time: float) -> None:
        camera = self.events.camera
        for message in messages:
            self.mqtt.publish(camera, message)
        present = self.events.present()
        if present != self._present:
            self._present = present
            faces, names = present
            self.mqtt.publish_identity(camera, {"camera": camera, "faces": faces,
                                                "identities": names,
                                                "frame_time": round(frame_time, 3)})


def _wall_time(read_at: float) -> float:
    """Unix time of a ``time.perf_counter()`` reading (now when there is none)."""
    now = time.time()
    return now - (time.perf_counter() - read_at) if read_at else now
