"""Recognise faces in a video, a camera or a stream; write an annotated copy and events.

    python apps/infer_on_video.py -f in.mp4 -s out.mp4
    python apps/infer_on_video.py -f in.mp4 -s out.mp4 --events events.jsonl -c
    python apps/infer_on_video.py -f 0 -s camera.mp4          # camera 0 (live)
    python apps/infer_on_video.py -f rtsp://host/stream --events events.jsonl

Exit status: 0 when the whole source was processed, 1 when the run stopped on
an error (the output written so far is finalised and plays, the events file is
complete up to the failure), 2 for bad arguments or setup, 128 + the signal's
number when Ctrl-C (130), SIGTERM (143) or SIGHUP (129) stopped it: the output so
far is finalised then too.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from mobileface.cli.common import (Progress, add_detect_every_option, add_enhance_option,
                                   add_facebank_option, add_logging_options, add_model_options,
                                   check_detect_every, configure_logging, default_facebank, log,
                                   providers, run_main)
from mobileface.errors import MobileFaceError

#: RetinaFace input size for video: the longer frame side is scaled to this
VIDEO_DET_SIZE = 480
#: onnxruntime threads per model for video (see PipelineConfig.threads)
VIDEO_THREADS = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python apps/infer_on_video.py",
        description="Detect, track, recognise and describe faces in a video, camera or stream.")
    parser.add_argument("-f", "--file", required=True, metavar="SOURCE",
                        help="a video file, a camera index (0) or a stream URL (rtsp://, http://)")
    parser.add_argument("-s", "--save", metavar="OUT",
                        help="write the annotated video here (.mp4, .avi, .mkv, .mov)")
    parser.add_argument("-th", "--threshold", type=float, default=None,
                        help="cosine similarity a match must reach (default: the embedder's, "
                             "0.92 for dlib)")
    parser.add_argument("--margin", type=float, default=0.03,
                        help="how much the best match must beat the next person (default: 0.03)")
    parser.add_argument("-u", "--update", action="store_true",
                        help="update the facebank from its folders before the run")
    parser.add_argument("-c", "--score", action="store_true", help="show similarity scores")
    parser.add_argument("-b", "--begin", type=float, default=0.0,
                        help="start this many seconds into the video (default: 0)")
    parser.add_argument("-d", "--duration", type=float, default=None,
                        help="process this many seconds (default: to the end)")
    add_facebank_option(parser)
    parser.add_argument("--events", metavar="JSONL",
                        help="write one JSON line per finished track here")
    parser.add_argument("--crops", metavar="DIR",
                        help="where best-shot crops go (default: beside the events file)")
    parser.add_argument("--no-recognition", action="store_true",
                        help="attributes only: no embeddings, no names, no facebank needed")
    parser.add_argument("--landmarks", action="store_true", help="draw the 68 points")
    parser.add_argument("--pose-axes", action="store_true", help="draw head-pose axes")
    add_enhance_option(parser, "auto")
    add_detect_every_option(parser)
    parser.add_argument("--show-enhanced", action="store_true",
                        help="the annotated video shows the low-light enhanced frames (where "
                             "enhancement was applied) instead of the frames as read")
    parser.add_argument("--reconnect", type=int, default=5, metavar="N",
                        help="camera or stream: reconnection attempts before giving up "
                             "(default: 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(parser, det_size=VIDEO_DET_SIZE, threads=VIDEO_THREADS)
    add_logging_options(parser)
    return parser


def _embedder_files(embedder: str) -> dict[str, Path]:
    """The files an embedder spec names (the spec and its model): inputs no output may be."""
    path = Path(embedder)
    if path.suffix.lower() != ".json" or not path.is_file():
        return {}
    from mobileface.stages.embed.spec import load_spec

    try:
        return {"--embedder": path, "the model of --embedder": Path(load_spec(path).model)}
    except (ValueError, MobileFaceError):
        return {"--embedder": path}     # a bad spec is refused, in one line, when it loads


def _validate(args) -> None:
    from mobileface.identity.store import is_database_url
    from mobileface.io.paths import check_distinct

    from mobileface.outputs.sinks import default_crops_dir

    crops = args.crops or (default_crops_dir(args.events) if args.events else None)
    check_distinct({"-f/--file": args.file, **_embedder_files(args.embedder)},
                   {"-s/--save": args.save, "--events": args.events, "--crops": crops},
                   folders={"facebank": None if args.no_recognition or
                            is_database_url(args.facebank) else
                            (args.facebank or default_facebank())})
    check_detect_every(args.detect_every)
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise MobileFaceError(f"-th/--threshold is a cosine similarity in [-1, 1], "
                              f"got {args.threshold}")
    _check_seconds("-b/--begin", args.begin, zero_ok=True)
    if args.duration is not None:
        _check_seconds("-d/--duration", args.duration, zero_ok=False)
    if args.no_recognition and args.update:
        raise MobileFaceError("-u/--update needs recognition; drop --no-recognition")
    if args.show_enhanced and (args.enhance == "off" or not args.save):
        raise MobileFaceError("--show-enhanced shows enhanced frames in the -s/--save video: "
                              "it needs -s and --enhance auto or on")
    if not args.save and not args.events:
        log.warning("neither -s/--save nor --events given: only the summary will be printed")


def _check_seconds(option: str, value: float, zero_ok: bool) -> None:
    """A number of seconds must be finite (argparse's float takes "nan" and "inf": NaN
    slips past every comparison, infinity cannot become a frame index)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise MobileFaceError(f"{option} must be a finite number of seconds {bound}, got {value}")


def _facebank(args, pipeline):
    """The facebank to match against (updated from its folders with -u), or None."""
    from mobileface.identity.enrol import FaceEnroller
    from mobileface.identity.store import is_database_url, open_facebank

    spec = args.facebank or default_facebank()
    if args.update and is_database_url(spec):
        raise MobileFaceError("-u/--update imports a facebank folder; a postgresql:// facebank "
                              "is fed with: python -m mobileface facebank import DIR --facebank URL")
    if not is_database_url(spec) and not Path(spec).is_dir():
        if args.facebank or args.update:
            raise MobileFaceError(f"no facebank folder {spec}")
        log.warning("no facebank at %s: every face will be Unknown "
                    "(enrol people with apps/take_pic.py)", spec)
        return None
    bank = open_facebank(spec, outlier_threshold=pipeline.threshold, embedder=args.embedder)
    if args.update:
        enrol = FaceEnroller(pipeline.analyzer)

        report = bank.import_folder(enrol.embedding_and_quality, enrol.model_id)
        log.info("facebank updated: %d people, %d picture(s) embedded, %d unchanged, "
                 "%d skipped", len(bank.names()), len(report.added), report.kept,
                 len(report.skipped))
    if not bank.names():
        log.warning("the facebank %s is empty: every face will be Unknown", bank.location)
    return bank


def run(args) -> int:
    from mobileface.outputs.annotators import Overlay, OverlayOptions
    from mobileface.pipeline import FacePipeline, PipelineConfig, RunningMode
    from mobileface.outputs.sinks import EventsSink, VideoFileSink
    from mobileface.pipeline.runner import VideoRunner, stop_on_signals
    from mobileface.io.video import VideoSource

    _validate(args)
    source = VideoSource(args.file, begin=args.begin, duration=args.duration,
                         reconnect_attempts=args.reconnect)
    sinks = []
    try:
        config = PipelineConfig(detector=args.detector, det_size=args.det_size,
                                det_threshold=args.det_threshold, providers=tuple(providers(args)),
                                threads=args.threads, precision=args.precision,
                                detect_every=args.detect_every,
                                embedder=args.embedder,
                                recognition=not args.no_recognition, threshold=args.threshold,
                                margin=args.margin, enhance=args.enhance,
                                mode=RunningMode.STREAM if source.live else RunningMode.VIDEO)
        pipeline = FacePipeline.from_config(config)
        if not args.no_recognition:
            facebank = _facebank(args, pipeline)
            if facebank is not None:
                pipeline.set_facebank(facebank)
        overlay = Overlay(OverlayOptions(show_scores=args.score, landmarks=args.landmarks,
                                         pose_axes=args.pose_axes))
        if args.save:
            sinks.append(VideoFileSink(args.save, source.fps, (source.width, source.height),
                                       overlay, show_enhanced=args.show_enhanced))
        if args.events:
            sinks.append(EventsSink(args.events, args.crops, source=str(args.file)))
    except BaseException:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    progress = Progress(source.expected_frames, enabled=not args.no_progress)
    runner = VideoRunner(source, pipeline, sinks, on_progress=progress.update)
    with stop_on_signals(runner):    # SIGTERM, SIGHUP, Ctrl-C: finalise, then exit
        stats = runner.run()
    progress.close()

    named = ", ".join(f"{name} ({count})" for name, count in sorted(stats.identities.items())
                      if name != "Unknown") or "nobody"
    device = ", ".join(pipeline.active_providers) or "n/a"
    parts = [f"{stats.frames} frames in {stats.seconds:.1f} s ({stats.fps:.1f} fps, "
             f"onnxruntime on {device})", f"{stats.tracks} tracks"]
    if not args.no_recognition:
        parts.append(f"named: {named}")
    if stats.enhanced:
        parts.append(f"{stats.enhanced} frames low-light enhanced")
    if stats.dropped:
        parts.append(f"{stats.dropped} frames dropped")
    if stats.reconnects:
        parts.append(f"{stats.reconnects} reconnects")
    if args.save:
        parts.append(f"video {args.save}")
    if args.events:
        parts.append(f"events {args.events}")
    print("done: " + "; ".join(parts), flush=True)
    if stats.interrupted:
        return _interrupted(stats, sinks)
    if stats.error:
        log.error("error: %s%s", stats.error, _outputs_note(sinks))
        return 1
    if stats.truncated:
        log.error("error: %s ended early: the file is truncated or corrupt%s", args.file,
                  _outputs_note(sinks))
        return 1
    return 0


def _outputs_note(sinks) -> str:
    """What is true of each output after a failed run, as each sink found it on closing
    (" (the video o.mp4 could not be finalised; the events file e.jsonl is complete up to
    track 7)"): a full disk can leave a video that does not play."""
    said = [text for sink in sinks if (text := getattr(sink, "outcome", lambda: None)())]
    return f" ({'; '.join(said)})" if said else ""


def _interrupted(stats, sinks) -> int:
    """The one line and the exit status (128 + the signal, as a shell reports it) of a run
    a signal stopped: "saved" only when every output closed without an error."""
    signum = stats.signal or signal.SIGINT
    name = signal.Signals(signum).name
    if stats.outputs_saved and not stats.error:
        log.error("interrupted by %s: the output so far is saved", name)
    else:
        log.error("interrupted by %s; error: %s%s", name,
                  stats.error or "an output did not close", _outputs_note(sinks))
    return 128 + signum


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
