"""``python -m mobileface facebank list|add|remove|rename|import|calibrate``."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from mobileface.cli.common import add_facebank_option, add_model_options, analyzer_options, default_facebank

log = logging.getLogger("mobileface")


def add_parser(sub) -> None:
    parser = sub.add_parser("facebank", help="enrolled people: list, add, remove, rename, "
                                             "import from folders, calibrate the threshold")
    commands = parser.add_subparsers(dest="facebank_command", required=True)

    listing = commands.add_parser("list", help="every person, their pictures and flags")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_facebank_option(listing)

    add = commands.add_parser("add", help="enrol pictures of a person (created if new)")
    add.add_argument("name")
    add.add_argument("images", nargs="+", help="photos of the person, one face each")
    add.add_argument("--largest", action="store_true",
                     help="in a photo with several faces, take the most confident one "
                          "instead of refusing the photo")
    add_facebank_option(add)
    add_model_options(add)

    remove = commands.add_parser("remove", help="remove a person (their folder moves to .trash)")
    remove.add_argument("name")
    add_facebank_option(remove)

    rename = commands.add_parser("rename", help="rename a person")
    rename.add_argument("old")
    rename.add_argument("new")
    add_facebank_option(rename)

    imp = commands.add_parser("import", help="make the facebank mirror its folders "
                                             "(facebank/NAME/*.jpg), or add a photo folder "
                                             "to a database facebank")
    imp.add_argument("photos", nargs="?", default=None, metavar="DIR",
                     help="the folder of person folders to import (a folder facebank: its "
                          "own folder, the default; a postgresql:// facebank: needed unless "
                          "--reembed, which re-embeds the photos the database keeps)")
    imp.add_argument("--reembed", action="store_true",
                     help="re-embed pictures enrolled with another embedding model")
    add_facebank_option(imp)
    add_model_options(imp)

    cal = commands.add_parser("calibrate", help="suggest a recognition threshold from the "
                                                "enrolled people")
    cal.add_argument("--json", action="store_true", help="print JSON")
    add_facebank_option(cal)
    add_model_options(cal)


def open_facebank(args, outlier_threshold: float | None = None, read_only: bool | None = None):
    """The facebank of --facebank; pictures far from their person are flagged against
    ``outlier_threshold`` (the embedder's recognition threshold) when it is given.

    read_only: True for the commands that only read (nothing is created or changed,
    and a facebank that cannot be written still lists); None: read-only only when the
    folder cannot be written. The --embedder given goes into the re-embed command that
    errors print, so that it works as printed.
    """
    from mobileface.identity.store import open_facebank

    return open_facebank(facebank_of(args), outlier_threshold=outlier_threshold,
                         read_only=read_only, embedder=getattr(args, "embedder", None))


def facebank_of(args) -> str:
    """The facebank --facebank names (a folder or a postgresql:// URL); for ``import``
    of a folder facebank, its DIR argument when --facebank is not given."""
    from mobileface.identity.facebank import FacebankError
    from mobileface.identity.store import is_database_url

    photos = getattr(args, "photos", None)
    if args.facebank is None and photos is not None:
        return photos
    facebank = args.facebank or default_facebank()
    if photos is not None and not is_database_url(facebank) and \
            Path(photos).resolve() != Path(facebank).resolve():
        raise FacebankError(f"the folder facebank {facebank} imports its own folder: drop "
                            f"{photos}, or copy its person folders into {facebank}")
    return facebank


def enroller(args):
    from mobileface.pipeline.image import FaceAnalyzer
    from mobileface.identity.enrol import FaceEnroller

    return FaceEnroller(FaceAnalyzer(stages=("quality", "embed"), **analyzer_options(args)))


def run(args) -> int:
    from mobileface.identity.store import is_database_url

    command, facebank = args.facebank_command, facebank_of(args)
    if command in ("remove", "rename", "list", "calibrate") and \
            not is_database_url(facebank) and not Path(facebank).is_dir():
        from mobileface.identity.facebank import FacebankError
        raise FacebankError(f"no facebank folder {facebank}")
    return {"list": cmd_list, "add": cmd_add, "remove": cmd_remove, "rename": cmd_rename,
            "import": cmd_import, "calibrate": cmd_calibrate}[command](args)


def cmd_list(args) -> int:
    with open_facebank(args, read_only=True) as bank:
        people = bank.people()
    if args.json:
        print(json.dumps([{"name": p.name, "images": p.images, "flagged": p.outliers,
                           "models": p.models, "best_quality": round(p.best_quality, 4)}
                          for p in people], indent=2))
        return 0
    if not people:
        print("the facebank is empty")
    for p in people:
        flags = f"  flagged: {', '.join(p.outliers)}" if p.outliers else ""
        print(f"{p.name:<30} {p.images:>3} picture(s)  best quality {p.best_quality:.2f}{flags}")
    return 0


def cmd_add(args) -> int:
    from mobileface.errors import MobileFaceError
    from mobileface.identity.facebank import check_name, check_suffix
    from mobileface.io.image import read_image

    name = check_name(args.name)      # as the facebank stores it (NFC)
    enrol = enroller(args)
    enrolments, failures = [], 0
    for path in args.images:
        try:
            check_suffix(Path(path).suffix, path)
            face = enrol.embed_image(read_image(path), path, "best" if args.largest else "refuse")
            data = Path(path).read_bytes()
        except (MobileFaceError, OSError) as exc:
            failures += 1
            log.error("%s", exc)
            continue
        enrolments.append(face.enrolment(Path(path).stem, data, Path(path).suffix.lower()))
    if enrolments:
        with open_facebank(args, enrol.threshold) as bank:
            files = bank.add(name, enrolments, enrol.model_id)
            flagged = [f for p in bank.people() if p.name == name for f in p.outliers]
        print(f"added {len(files)} picture(s) of {name} to {bank.location}")
        for file in flagged:
            log.warning("%s is far from the other pictures of %s: likely a mistake", file, name)
    return 1 if failures else 0


def cmd_remove(args) -> int:
    with open_facebank(args) as bank:
        moved = bank.remove(args.name)     # a folder facebank moves the photos to .trash
    print(f"removed {args.name}" + (f" (pictures moved to {moved})" if moved else ""))
    return 0


def cmd_rename(args) -> int:
    with open_facebank(args) as bank:
        bank.rename(args.old, args.new)
    print(f"renamed {args.old} to {args.new}")
    return 0


def cmd_import(args) -> int:
    from mobileface.identity.facebank import FacebankError
    from mobileface.identity.store import describe_url, is_database_url

    if is_database_url(facebank_of(args)) and args.photos is None and not args.reembed:
        raise FacebankError("give the photo folder to import: facebank import DIR --facebank "
                            f"{describe_url(facebank_of(args))} (or --reembed, to embed again "
                            "the photos the database keeps)")
    enrol = enroller(args)
    with open_facebank(args, enrol.threshold) as bank:
        photos = {"folder": args.photos} if is_database_url(facebank_of(args)) else {}
        report = bank.import_folder(enrol.embedding_and_quality, enrol.model_id,
                                    reembed=args.reembed, **photos)
        people = len(bank.names())
    what = f"{args.photos} into {bank.location}" if photos.get("folder") else bank.location
    print(f"imported {what}: {people} people; {len(report.added)} picture(s) embedded, "
          f"{report.kept} unchanged, {len(report.removed)} removed, "
          f"{len(report.skipped)} skipped, {len(report.outliers)} flagged")
    return 0


def calibration(genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """A suggested threshold and its error rates on these pairs.

    Separable pairs: the midpoint between the highest impostor and the lowest
    genuine similarity. Otherwise the equal-error threshold, where the share of
    impostor pairs accepted equals the share of genuine pairs rejected.
    """
    lowest_genuine, highest_impostor = float(genuine.min()), float(impostor.max())
    if highest_impostor < lowest_genuine:
        threshold = (highest_impostor + lowest_genuine) / 2
    else:
        candidates = np.unique(np.concatenate([genuine, impostor]))
        far = (impostor[None, :] >= candidates[:, None]).mean(1)
        frr = (genuine[None, :] < candidates[:, None]).mean(1)
        threshold = float(candidates[int(np.argmin(np.abs(far - frr)))])
    return {"threshold": round(threshold, 4),
            "false_accept_rate": float((impostor >= threshold).mean()),
            "false_reject_rate": float((genuine < threshold).mean()),
            "genuine_pairs": int(len(genuine)), "impostor_pairs": int(len(impostor)),
            "genuine": {"min": round(lowest_genuine, 4), "median": round(float(np.median(genuine)), 4)},
            "impostor": {"max": round(highest_impostor, 4),
                         "median": round(float(np.median(impostor)), 4)}}


def cmd_calibrate(args) -> int:
    from mobileface.stages.embed import create_embedder
    from mobileface.identity.facebank import FacebankError
    from mobileface.models.runtime import RuntimeConfig

    embedder = create_embedder(args.embedder, RuntimeConfig())
    with open_facebank(args, read_only=True) as bank:
        genuine, impostor = bank.pairs(embedder.model_id)
    if len(genuine) == 0 or len(impostor) == 0:
        raise FacebankError("calibrate needs at least two people and two pictures of one "
                            f"person (found {len(genuine)} same-person and {len(impostor)} "
                            "different-person pairs)")
    result = calibration(genuine, impostor)
    current = embedder.threshold
    result["current_threshold"] = current
    result["current_false_accept_rate"] = float((impostor >= current).mean())
    result["current_false_reject_rate"] = float((genuine < current).mean())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['genuine_pairs']} same-person pairs: similarity min "
          f"{result['genuine']['min']:.3f}, median {result['genuine']['median']:.3f}")
    print(f"{result['impostor_pairs']} different-person pairs: similarity max "
          f"{result['impostor']['max']:.3f}, median {result['impostor']['median']:.3f}")
    print(f"suggested threshold {result['threshold']:.3f} (false accepts "
          f"{100 * result['false_accept_rate']:.1f}%, false rejects "
          f"{100 * result['false_reject_rate']:.1f}% of these pairs); the default "
          f"{current:.3f} gives {100 * result['current_false_accept_rate']:.1f}% and "
          f"{100 * result['current_false_reject_rate']:.1f}%")
    if result["genuine_pairs"] + result["impostor_pairs"] < 50:
        print("few pairs: treat the suggestion as rough; pass it with -th/--threshold")
    return 0

