"""Start-up and whole-run speed of apps/infer_on_video.py, each run a fresh process.

    python benchmark/startup.py [--video PATH] [--frames 670] [--repeat 3] [--json-out F]

The clip (../shared/data/mobileface/friends1.mp4 by default, 720p) is played
until ``--frames`` frames and written to a temporary file first; the app then
runs on it with every stage (as benchmark/video.py: recognition against a
facebank of two people, 68 points and pose axes drawn, the annotated video and
the events written), ``--repeat`` times, each a new Python process started by
this script. Measured per run, with the model cache warm (one untimed run
first fills it):

* first frame: from starting the process to the first annotated frame handed to
  the output video (the app logs that moment with -v);
* whole run: frames / seconds from starting the process to its exit (start-up,
  model loading and finalising the video included), against the floor (OpenCV
  decoding and re-encoding the same file, nothing else) measured in this run;
* peak resident memory of the process (``os.wait4``'s ru_maxrss).

Targets: first frame within 1 s, peak memory at most 500 MB, whole run at least
0.4 of the floor. Prints a table, then one JSON line (also written to --json-out).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from mobileface.cli.common import emit_json as emit
from mobileface.eval.bench import DATA, demo_facebank, floor_run, write_looped

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "apps" / "infer_on_video.py"
DEFAULT_VIDEO = DATA / "mobileface" / "friends1.mp4"
FIRST_FRAME = re.compile(r"first annotated frame handed to the video at ([0-9.]+) s")


def run_app(clip: Path, workdir: Path, facebank: Path, extra: list[str]) -> dict:
    """One run of the app in a new process: first-frame time, whole-run time, peak RSS."""
    command = [sys.executable, str(APP), "-f", str(clip), "-s", str(workdir / "out.mp4"),
               "--events", str(workdir / "events.jsonl"), "--facebank", str(facebank),
               "--landmarks", "--pose-axes", "-c", "--no-progress", "-v", *extra]
    log = workdir / "app.log"
    with open(log, "w") as out:
        started = time.time()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)      # the child's own peak memory
        ended = time.time()
    child.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text()
    if child.returncode != 0:
        raise SystemExit(f"benchmark: the app failed ({child.returncode}):\n{output[-2000:]}")
    match = FIRST_FRAME.search(output)
    if match is None:
        raise SystemExit("benchmark: the app did not log its first annotated frame")
    return {"first_frame_s": float(match.group(1)) - started, "seconds": ended - started,
            "rss_mb": usage.ru_maxrss / 1024}


def _each(runs: list[dict], key: str, spec: str) -> str:
    return " ".join(format(run[key], spec) for run in runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--frames", type=int, default=670,
                        help="frames of the clip the app runs on (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs (default: %(default)s)")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("app_options", nargs="*",
                        help="further options for the app, after --, e.g. -- --detect-every 1")
    args = parser.parse_args(argv)
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"benchmark: no video at {video}")
    if args.frames < 1 or args.repeat < 1:
        raise SystemExit("benchmark: --frames and --repeat must be >= 1")

    with tempfile.TemporaryDirectory(prefix="mobileface-startup-") as tmp:
        workdir = Path(tmp)
        clip = workdir / "clip.mp4"
        write_looped(video, args.frames, clip)
        from mobileface.pipeline import FacePipeline, PipelineConfig

        demo_facebank(workdir / "facebank", FacePipeline.from_config(PipelineConfig()))
        run_app(clip, workdir, workdir / "facebank", args.app_options)    # fills the cache
        runs, floors = [], []
        for _ in range(args.repeat):          # alternated, so both see the same machine
            floors.append(floor_run(clip, workdir / "floor.mp4").fps)
            runs.append(run_app(clip, workdir, workdir / "facebank", args.app_options))
    floor = statistics.median(floors)
    for run in runs:
        run["fps"] = args.frames / run["seconds"]
    first = statistics.median(r["first_frame_s"] for r in runs)
    fps = statistics.median(r["fps"] for r in runs)
    rss = max(r["rss_mb"] for r in runs)

    print(f"clip: {video.name} played to {args.frames} frames; {args.repeat} runs, each a new "
          f"process; cpu cores: {os.cpu_count()}")
    print(f"{'measure':<46} {'median':>9}  runs / target")
    print(f"{'first annotated frame after process start, s':<46} {first:9.2f}  "
          f"{_each(runs, 'first_frame_s', '.2f')} / <= 1")
    print(f"{'peak resident memory, MB':<46} {rss:9.0f}  "
          f"{_each(runs, 'rss_mb', '.0f')} / <= 500")
    print(f"{'whole run from process start, fps':<46} {fps:9.1f}  "
          f"{_each(runs, 'fps', '.1f')}")
    print(f"{'floor: OpenCV decode + encode, fps':<46} {floor:9.1f}  "
          f"{' '.join(f'{f:.0f}' for f in floors)}")
    print(f"whole run / floor = {fps / floor:.2f} (target >= 0.4)")
    emit({"benchmark": "startup", "video": video.name, "frames": args.frames,
          "cpu_count": os.cpu_count(), "first_frame_s": round(first, 3),
          "peak_rss_mb": round(rss, 1), "fps_from_start": round(fps, 2),
          "floor_fps": round(floor, 2), "ratio_to_floor": round(fps / floor, 3),
          "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
          "floor_fps_runs": [round(f, 2) for f in floors]}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
