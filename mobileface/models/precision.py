"""Which precision each model runs at: fp32, or int8 where its accuracy gate passed.

``python -m mobileface models quantize`` (:mod:`mobileface.eval.quantize`) makes
the int8 models of three groups, runs each group's accuracy gate on real faces
and writes, into the model cache, the int8 files and one JSON report per group
(:func:`report_path`): the sha256 of each source and int8 file, the CPU flags
it was made on, each gate's figure and bound, and whether all passed.

A precision is chosen per group (:func:`model_files`):

* "fp32": the float models, as before int8 existed;
* "int8": the int8 models; a group without a report, with a failed gate or
  with files that are not the ones the report checked is refused with a
  one-line :class:`~mobileface.errors.ModelError` naming the command that makes
  it;
* "auto" (what the pipeline and FaceAnalyzer use by default): int8 for each
  group whose gate passed, on a CPU with int8 dot-product instructions (VNNI or
  AMX, :func:`int8_flags`) that match those of the CPU that ran the gate; fp32
  otherwise. Without those instructions int8 is no faster (1.02x measured on an
  AVX2 CPU), and its rounding differs between CPUs with and without them.
  The choice and its reason are logged once per process at info level.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mobileface.errors import ModelError
from mobileface.models import registry

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "int8")
#: /proc/cpuinfo flags of int8 dot-product instructions onnxruntime's int8 kernels use
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8")
#: the model groups that have int8 versions, and their registry models
GROUPS = {"detect": ("retinaface_mnet025",), "attributes": ("age_v1", "gender_v1"),
          "embed": ("dlib_resnet_v1",)}
REPORT_VERSION = 2
COMMAND = "python -m mobileface models quantize"

_logged: set[tuple] = set()


@dataclass
class Bounds:
    """Each gate's bound (the defaults are the project's)."""

    max_loss: float = 0.005              # embed: 10-fold accuracy lost
    min_cosine: float = 0.99             # embed: mean cosine of int8 to float embeddings
    min_detect_agreement: float = 0.98   # detect: share of images with the same faces
    min_gender_agreement: float = 0.98   # attributes: share of faces with the same gender
    max_age_diff: float = 1.0            # attributes: median |age difference|, years

    def __post_init__(self) -> None:
        for name in ("max_loss", "min_cosine", "min_detect_agreement", "min_gender_agreement"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name.replace('_', '-')} must be in [0, 1], "
                                 f"got {getattr(self, name)}")
        if self.max_age_diff < 0:
            raise ValueError(f"max-age-diff must be >= 0, got {self.max_age_diff}")


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first processor in ``path`` (empty where it cannot be read:
    not Linux)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_flags(flags=None) -> list[str]:
    """The int8 dot-product flags (VNNI, AMX) among ``flags`` (default: this CPU's)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in INT8_FLAGS if f in flags]


def check_groups(groups) -> list[str]:
    groups = list(groups)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(f"unknown model group(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(GROUPS)}")
    return groups


def int8_path(name: str) -> Path:
    """The int8 file of registry model ``name`` in the cache, keyed by its source's sha256."""
    return registry.cache_dir() / f"{name}-{registry.get_spec(name).sha256[:16]}-int8.onnx"


def report_path(group: str) -> Path:
    """The gate report of ``group`` in the cache, keyed by its first model's sha256."""
    first = GROUPS[group][0]
    return registry.cache_dir() / f"int8-{group}-{registry.get_spec(first).sha256[:16]}.json"


def read_report(group: str) -> dict | None:
    """The report of ``group``, or None when there is none; a one-line ModelError when it
    cannot be read."""
    path = report_path(group)
    try:
        report = registry.parse_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the int8 report {path}: {exc}; run {COMMAND} "
                         f"--models {group}") from None
    if not _well_formed(report):
        raise ModelError(f"{path} is not an int8 report this version understands; run "
                         f"{COMMAND} --models {group}")
    return report


def _well_formed(report) -> bool:
    """The fields the choice reads have the types it expects."""
    return isinstance(report, dict) and report.get("version") == REPORT_VERSION \
        and isinstance(report.get("models"), dict) \
        and all(isinstance(m, dict) for m in report["models"].values()) \
        and isinstance(report.get("cpu"), dict) \
        and isinstance(report["cpu"].get("int8_flags", []), list) \
        and isinstance(report.get("gates"), list) \
        and all(isinstance(g, dict) and {"name", "measured", "bound", "passed"} <= set(g)
                for g in report["gates"])


def write_report(group: str, report: dict) -> Path:
    path = report_path(group)
    registry.write_atomically(json.dumps(report, indent=2).encode() + b"\n", path)
    return path


def gate_summary(report: dict) -> str:
    """The gates of a report as one phrase: 'gender agreement 0.99 (>= 0.98): passed, ...'."""
    return "; ".join(f"{g['name']} {g['measured']} ({g['bound']}): "
                     f"{'passed' if g['passed'] else 'FAILED'}" for g in report.get("gates", []))


def usable_int8(group: str) -> tuple[dict[str, Path] | None, str, dict | None]:
    """(the int8 file of each model of ``group``, "" ) when its report says the gate passed
    and the files are the ones it checked; else (None, why not, the report or None)."""
    report = read_report(group)
    fix = f"run {COMMAND} --models {group}"
    if report is None:
        return None, f"no int8 {group} model has been made: {fix}", None
    files = {}
    for name in GROUPS[group]:
        entry = report.get("models", {}).get(name, {})
        if entry.get("source_sha256") != registry.get_spec(name).sha256:
            return None, (f"the int8 {group} model was made from another version of {name}: "
                          f"{fix}"), report
        path = int8_path(name)
        if not path.is_file():
            return None, f"the int8 file {path} is missing: {fix}", report
        if registry.sha256_file(path) != entry.get("int8_sha256"):
            return None, (f"{path} is not the file its report checked (sha256 differs): "
                          f"{fix}"), report
        files[name] = path
    if not report.get("passed"):
        return None, (f"the int8 {group} model failed its accuracy gate "
                      f"({gate_summary(report)}), so it is not used: {fix} to check it again"), report
    return files, "", report


def choose(group: str, precision: str, flags=None) -> tuple[str, dict[str, Path], str]:
    """("int8" or "fp32", the int8 files (empty for fp32), the reason) for ``group``.

    flags: the CPU flags to decide with (default: :func:`cpu_flags`'s). A forced "int8"
    that cannot be had raises a one-line ModelError naming the command that makes it.
    """
    check_precision(precision)
    check_groups([group])
    if precision == "fp32":
        return "fp32", {}, "asked for fp32"
    here = int8_flags(flags)
    try:
        files, why, report = usable_int8(group)
    except ModelError as exc:
        if precision == "int8":
            raise ModelError(f"--precision int8: {exc}") from None
        return "fp32", {}, str(exc)        # auto: a damaged report is no reason to stop
    if precision == "int8":
        if files is None:
            raise ModelError(f"--precision int8: {why}")
        made_on = report.get("cpu", {}).get("int8_flags", [])
        if bool(made_on) != bool(here):
            _once(logging.WARNING, ("cpu", group),
                  "int8 %s model: its gate ran on a CPU %s VNNI/AMX and this one %s them; "
                  "run %s here to check it on this CPU", group,
                  "with" if made_on else "without", "has" if here else "lacks", COMMAND)
        return "int8", files, "asked for int8"
    if not here:
        return "fp32", {}, "this CPU has no VNNI or AMX, where int8 is not faster"
    if files is None:
        return "fp32", {}, why
    made_on = report.get("cpu", {}).get("int8_flags", [])
    if not made_on:
        return "fp32", {}, (f"its gate ran on a CPU without VNNI/AMX; run {COMMAND} "
                            f"--models {group} on this one")
    return "int8", files, f"its gate passed ({gate_summary(report)}) and this CPU has {here[0]}"


def model_files(group: str, precision: str, flags=None) -> tuple[str, dict[str, Path]]:
    """:func:`choose`, with its decision logged once per process: at info level what "auto"
    decided when there was something to decide (an int8 model made, used or refused);
    fp32 because none was made (a fresh install) and what was asked for, at debug level."""
    chosen, files, reason = choose(group, precision, flags)
    news = precision == "auto" and report_path(group).is_file()
    _once(logging.INFO if news else logging.DEBUG, (group, precision, chosen),
          "precision %s: %s runs at %s (%s)", precision, group, chosen, reason)
    return chosen, files


def _once(level: int, key: tuple, message: str, *args) -> None:
    if key not in _logged:
        _logged.add(key)
        log.log(level, message, *args)
