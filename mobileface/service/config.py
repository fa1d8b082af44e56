"""``cameras.toml``: the cameras of a site and its shared settings, read and checked.

Everything is checked before anything starts: an unknown key, a missing source,
a duplicate camera name or a value of the wrong kind is refused with the file,
the line when it can be found, and the reason, as one
:class:`~mobileface.errors.MobileFaceError`. The file is read with the standard
library's ``tomllib``.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mobileface.errors import MobileFaceError

#: the site keys and what each must be
SITE_KEYS = {"facebank": str, "mqtt": str, "output": str, "address": str, "prefix": str,
             "status_every": (int, float), "threshold": (int, float), "enhance": str,
             "shared_embedder": bool, "cameras": list}
#: the keys of one [[cameras]] table
CAMERA_KEYS = {"name": str, "source": (str, int), "det_size": int, "fps": (int, float),
               "roi": list, "record": bool, "events": bool, "crops": bool, "node": str,
               "reconnect": int, "cpus": (int, float), "enhance": str, "detect_every": int}
#: the low-light settings (mobileface.enhance)
ENHANCE_MODES = ("off", "auto", "on")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass
class CameraConfig:
    name: str
    source: str
    det_size: int | None = None
    fps: float | None = None              #: frame-rate cap (frames above it are skipped)
    roi: tuple[int, int, int, int] | None = None   #: x, y, width, height in pixels
    record: bool = False                  #: an annotated recording in the camera's folder
    events: bool = True                   #: events.jsonl in the camera's folder
    crops: bool = True                    #: best-shot crops beside the events
    node: str | None = None               #: a custom resource the camera's node offers
    reconnect: int = 10                   #: reconnection attempts for a stream
    #: Ray CPUs the camera's actor reserves: 0 starts every camera whatever the cluster
    #: has (spread as well as Ray can); 1 gives each camera a core of its own
    cpus: float = 0.0
    #: low-light enhancement before detection: off, auto (dark frames only) or on
    enhance: str | None = None
    #: the detector on at least every this many frames (None: the pipeline's default)
    detect_every: int | None = None

    @property
    def is_file(self) -> bool:
        """A file source ends; a camera index or a URL is live."""
        return not (self.source.isdigit() or "://" in self.source)


@dataclass
class SiteConfig:
    path: Path
    cameras: list[CameraConfig]
    facebank: str | None = None
    mqtt: str | None = None
    output: Path = Path("site")
    address: str | None = None
    prefix: str = "mobileface"
    status_every: float = 10.0
    threshold: float | None = None
    #: every camera's low-light setting unless it has its own
    enhance: str = "auto"
    #: one embedder actor for every camera, batching their faces (see shared_embed)
    shared_embedder: bool = False


class ConfigError(MobileFaceError):
    """cameras.toml cannot be used as it is."""


class _Lines:
    """Where keys sit in the file, so that an error can name its line."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.tables = [i for i, line in enumerate(self.lines)
                       if line.strip().startswith("[[cameras]]")]

    def of(self, key: str, camera: int | None = None) -> int | None:
        if camera is None:
            start, end = 0, self.tables[0] if self.tables else len(self.lines)
        elif camera < len(self.tables):
            start = self.tables[camera]
            end = self.tables[camera + 1] if camera + 1 < len(self.tables) else len(self.lines)
        else:
            return None
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start, end):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1 if camera is not None else None


def load(path: str | Path) -> SiteConfig:
    """The site of ``path``; a ConfigError naming the file (and line) when it is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})"
                          ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    lines = _Lines(text)

    def fail(reason: str, key: str | None = None, camera: int | None = None):
        line = lines.of(key, camera) if key else (
            lines.tables[camera] + 1 if camera is not None and camera < len(lines.tables)
            else None)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {reason}")

    for key, value in data.items():
        if key not in SITE_KEYS:
            fail(f"unknown key {key!r} (known: {', '.join(sorted(SITE_KEYS))})", key)
        _check_type(value, SITE_KEYS[key], key, fail)
    cameras_data = data.get("cameras")
    if not cameras_data:
        fail("no [[cameras]]: a site needs at least one camera")
    cameras, seen = [], {}
    for index, table in enumerate(cameras_data):
        if not isinstance(table, dict):
            fail("cameras must be [[cameras]] tables", "cameras")
        cameras.append(_camera(table, index, fail, seen))
    site = SiteConfig(path=path, cameras=cameras, facebank=data.get("facebank"),
                      mqtt=data.get("mqtt"), output=Path(data.get("output", "site")),
                      address=data.get("address"), prefix=data.get("prefix", "mobileface"),
                      status_every=float(data.get("status_every", 10.0)),
                      threshold=data.get("threshold"), enhance=data.get("enhance", "auto"),
                      shared_embedder=data.get("shared_embedder", False))
    # relative paths are the config file's: the service may be started from anywhere
    base = path.parent
    site.output = base / site.output
    if site.facebank and "://" not in site.facebank:
        site.facebank = str(base / site.facebank)
    for camera in cameras:
        if camera.is_file:
            camera.source = str(base / camera.source)
    if site.enhance not in ENHANCE_MODES:
        fail(f"enhance must be one of {', '.join(ENHANCE_MODES)}, got {site.enhance!r}",
             "enhance")
    for camera in cameras:
        camera.enhance = camera.enhance or site.enhance
    if not math.isfinite(site.status_every) or site.status_every <= 0:
        fail(f"status_every must be a number of seconds > 0, got {site.status_every}",
             "status_every")
    if site.mqtt is not None:
        from mobileface.outputs.mqtt import MqttError, parse_url

        try:
            parse_url(site.mqtt)
        except MqttError as exc:
            fail(f"mqtt must be a broker URL such as mqtt://127.0.0.1:1883 ({exc})", "mqtt")
    if not re.match(r"^[A-Za-z0-9_/-]+$", site.prefix) or site.prefix.endswith("/"):
        fail(f"prefix must be an MQTT topic prefix without wildcards, got {site.prefix!r}",
             "prefix")
    return site


def _check_type(value, kind, key: str, fail, camera: int | None = None) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        fail(f"{key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", key,
             camera)
    if not isinstance(value, kinds):
        fail(f"{key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", key,
             camera)


def _camera(table: dict, index: int, fail, seen: dict) -> CameraConfig:
    label = f"camera {table.get('name', index + 1)!r}"
    for key, value in table.items():
        if key not in CAMERA_KEYS:
            fail(f"{label}: unknown key {key!r} (known: {', '.join(sorted(CAMERA_KEYS))})",
                 key, index)
        _check_type(value, CAMERA_KEYS[key], key, fail, index)
    if "name" not in table:
        fail(f"camera {index + 1} has no name", None, index)
    name = table["name"]
    if not _NAME.match(name):
        fail(f"{label}: a camera name is letters, digits, '-' and '_' (it names MQTT topics "
             "and folders)", "name", index)
    if name in seen:
        fail(f"{label}: a second camera named {name!r} (the first is camera {seen[name] + 1})",
             "name", index)
    seen[name] = index
    if "source" not in table or table["source"] in ("", None):
        fail(f"{label}: no source (a file, a camera index or a URL)", "source", index)
    source = str(table["source"])
    camera = CameraConfig(name=name, source=source, det_size=table.get("det_size"),
                          fps=table.get("fps"), record=table.get("record", False),
                          events=table.get("events", True), crops=table.get("crops", True),
                          node=table.get("node"), reconnect=table.get("reconnect", 10),
                          cpus=float(table.get("cpus", 0.0)), enhance=table.get("enhance"),
                          detect_every=table.get("detect_every"))
    if camera.det_size is not None and not 32 <= camera.det_size <= 4096:
        fail(f"{label}: det_size must be in [32, 4096], got {camera.det_size}", "det_size", index)
    if camera.fps is not None and not (math.isfinite(camera.fps) and camera.fps > 0):
        fail(f"{label}: fps must be a frame rate > 0, got {camera.fps}", "fps", index)
    if camera.enhance is not None and camera.enhance not in ENHANCE_MODES:
        fail(f"{label}: enhance must be one of {', '.join(ENHANCE_MODES)}, got "
             f"{camera.enhance!r}", "enhance", index)
    if not (math.isfinite(camera.cpus) and 0 <= camera.cpus <= 256):
        fail(f"{label}: cpus must be in [0, 256], got {camera.cpus}", "cpus", index)
    if camera.detect_every is not None and camera.detect_every < 1:
        fail(f"{label}: detect_every must be >= 1, got {camera.detect_every}", "detect_every",
             index)
    if camera.reconnect < 0:
        fail(f"{label}: reconnect must be >= 0", "reconnect", index)
    if "roi" in table:
        roi = table["roi"]
        if len(roi) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in roi) \
                or roi[0] < 0 or roi[1] < 0 or roi[2] <= 0 or roi[3] <= 0:
            fail(f"{label}: roi must be [x, y, width, height] in pixels, got {roi}", "roi", index)
        camera.roi = tuple(roi)
    return camera
