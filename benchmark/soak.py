"""Soak test: the video app's pipeline on a clip looped to many frames; resident memory over time.

    python benchmark/soak.py [--video PATH] [--frames 10000] [--json-out soak.json]

Runs what ``apps/infer_on_video.py -s out.mp4 --events events.jsonl`` runs
(every stage, recognition against a two-person facebank, overlays, the
annotated video and the events written) on ../shared's friends1.mp4 (720p)
played again and again until ``--frames`` frames, and samples the process's
resident set size (RSS) every ``--every`` frames. Targets: growth from frame
1,000 to the end < 50 MB, peak RSS <= 1 GB for one 720p stream.

Prints a table of samples, then one JSON line (also written to --json-out).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from mobileface.cli.common import emit_json as emit
from mobileface.eval.bench import DATA, LoopedSource, demo_facebank
from mobileface.outputs.annotators import Overlay, OverlayOptions
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.outputs.sinks import EventsSink, VideoFileSink
from mobileface.pipeline.runner import VideoRunner

DEFAULT_VIDEO = DATA / "mobileface" / "friends1.mp4"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """This process's resident set size, MB (from /proc/self/statm)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=250, help="sample RSS every N frames")
    parser.add_argument("--det-size", type=int, default=480)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"soak: no video at {video}")
    if args.frames < 1000 + args.every:
        raise SystemExit("soak: --frames must exceed 1000 (growth is measured from frame 1000)")

    samples: list[tuple[int, float, float]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mobileface-soak-") as tmp:
        workdir = Path(tmp)
        pipeline = FacePipeline.from_config(PipelineConfig(det_size=args.det_size))
        demo_facebank(workdir / "facebank", pipeline)
        source = LoopedSource(video, args.frames)
        overlay = Overlay(OverlayOptions(show_scores=True, landmarks=True, pose_axes=True))
        sinks = [VideoFileSink(workdir / "soak.mp4", source.fps, (source.width, source.height),
                               overlay),
                 EventsSink(workdir / "events.jsonl")]
        samples.append((0, round(time.perf_counter() - start, 1), round(rss_mb(), 1)))
        counter = [0]

        def on_result(frame, result):
            counter[0] += 1
            if counter[0] % args.every == 0:
                samples.append((counter[0], round(time.perf_counter() - start, 1),
                                round(rss_mb(), 1)))

        stats = VideoRunner(source, pipeline, sinks, on_result=on_result).run()
        events = sum(1 for _ in open(workdir / "events.jsonl"))
        video_mb = (workdir / "soak.mp4").stat().st_size / 2**20
    if stats.error:
        raise SystemExit(f"soak: the run failed: {stats.error}")

    print(f"video: {video.name} looped to {stats.frames} frames; {stats.fps:.1f} fps; "
          f"{stats.tracks} tracks ended, {events} events written, output {video_mb:.0f} MB")
    print(f"{'frame':>7} {'seconds':>8} {'RSS MB':>8}")
    for frame, seconds, rss in samples:
        print(f"{frame:>7} {seconds:>8.1f} {rss:>8.1f}")
    at_1000 = next(rss for frame, _, rss in samples if frame >= 1000)
    end = samples[-1][2]
    peak = max(rss for _, _, rss in samples)
    growth = end - at_1000
    print(f"growth from frame 1000 to the end: {growth:+.1f} MB (target < 50: "
          f"{'met' if growth < 50 else 'NOT met'}); peak RSS {peak:.0f} MB (target <= 1024: "
          f"{'met' if peak <= 1024 else 'NOT met'})")
    result = {"benchmark": "soak", "video": video.name, "frames": stats.frames,
              "fps": round(stats.fps, 2), "tracks": stats.tracks, "events": events,
              "rss_mb_at_1000": at_1000, "rss_mb_end": end, "rss_mb_peak": peak,
              "growth_mb": round(growth, 1), "samples": samples}
    emit(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
