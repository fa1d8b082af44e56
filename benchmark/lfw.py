"""LFW-style face verification: k-fold accuracy, threshold, TAR@FAR and a ROC curve per embedder.

    python benchmark/lfw.py DATA [--pairs pairs.txt] [--embedder SPEC ...] [--out DIR]

DATA is a folder-per-person tree (one sub-folder of images per person) or, with
--pairs, the image root of a standard LFW pairs file (NAME/NAME_000i.jpg).
Raw photos and pre-aligned face crops both work: each image's largest face is
detected, on a black border if need be, and a small crop with no face found is
used whole (mobileface/detect/locate.py; the counts are printed).

The score of a pair is the cosine similarity of the two L2-normalised
embeddings. Accuracy follows the LFW protocol: for each of 10 folds, the
threshold that is best on the other nine is applied to it; the mean and the
standard deviation over the folds are reported, with the mean threshold.
From a tree, the accuracy pairs are every same-person pair and as many random
different-person pairs (seed 0); the ROC and TAR@FAR use every
different-person pair of the tree (at most --max-impostors), because a FAR of
1e-3 can only be measured on at least 1,000 of them. A pairs file gives both.

Prints a table, one ``accuracy=`` line per embedder, then one JSON line; writes
roc.png and lfw.json into --out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mobileface.cli import common
from mobileface.eval.dataset import (DEFAULT_FOLDS, DEFAULT_MAX_IMPOSTORS,
                                     build_embedders, load_verification_set, verify_embedders)
from mobileface.eval.verification import DEFAULT_FARS

SCORE = "cosine similarity of L2-normalised embeddings; same person when >= threshold"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfw.py", description=__doc__.strip().splitlines()[0],
        epilog="Example: python benchmark/lfw.py ../shared/data/mobileface/LFW-Aligned-100Pair "
               "--out results")
    parser.add_argument("data", help="folder-per-person tree, or the image root of --pairs")
    parser.add_argument("--pairs", default=None, metavar="FILE",
                        help="a standard LFW pairs.txt whose images lie under DATA")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="where roc.png and lfw.json go (default: the current folder)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help=f"k of the k-fold accuracy (default: {DEFAULT_FOLDS})")
    parser.add_argument("--far", type=float, action="append", default=None,
                        help="report TAR at this false accept rate (repeatable; default: "
                             + ", ".join(f"{f:g}" for f in DEFAULT_FARS) + ")")
    parser.add_argument("--max-impostors", type=int, default=DEFAULT_MAX_IMPOSTORS,
                        help="most different-person pairs in a tree's ROC "
                             f"(default: {DEFAULT_MAX_IMPOSTORS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pairs (default: 0)")
    common.add_embedding_options(parser)
    common.add_model_options(parser, embedder=False, precision="fp32")
    common.add_logging_options(parser)
    return parser


def plot_roc(results: dict, path: Path, title: str) -> None:
    """One TAR-against-FAR curve per embedder, FAR on a log axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    lowest = min(r.roc.lowest_far for r in results.values())
    for label, r in results.items():
        roc = r.roc
        keep = roc.far > 0
        # start each curve at its lowest measurable FAR with the TAR reached at FAR 0
        far = np.r_[roc.lowest_far, roc.far[keep]]
        tar = np.r_[roc.tar_at(0.0), roc.tar[keep]]
        ax.step(far, tar, where="post",
                label=f"{label}: acc {r.kfold.accuracy:.4f}, AUC {roc.auc:.4f}")
    for far in sorted({f for r in results.values() for f in r.fars}):
        if far >= lowest:
            ax.axvline(far, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(lowest, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (different-person pairs accepted)")
    ax.set_ylabel("true accept rate (same-person pairs accepted)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _tar_text(entry: dict, roc) -> str:
    if entry["reachable"]:
        return f"{entry['tar']:.4f}"
    return f"n/a (lowest FAR {roc.lowest_far:.1e}: TAR {roc.tar_at(roc.lowest_far):.4f})"


def run(args) -> int:
    if args.folds < 2:
        raise ValueError("--folds must be at least 2")
    fars = tuple(args.far) if args.far else DEFAULT_FARS
    if not all(0 < f < 1 for f in fars):
        raise ValueError("--far must be between 0 and 1")
    out = Path(args.out)
    vset = load_verification_set(args.data, args.pairs, args.folds, args.seed,
                                 args.max_impostors)
    analyzer = common.analyzer_from_args(args)
    embedders = build_embedders(args.embedder, analyzer.runtime)
    vset, dropped, embedded, results = verify_embedders(vset, analyzer, embedders, args.kind, fars)
    counts = embedded.counts()
    ok = embedded.ok
    pairs = vset.pairs

    folds = len(np.unique(pairs.fold))
    print(f"data: {vset.described}")
    print(f"accuracy pairs: {pairs.source}"
          + (f"; {dropped} pair(s) left out (image without a face)" if dropped else ""))
    for note in pairs.notes:
        print(f"note: {note}")
    print("faces: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print(f"score: {SCORE}")
    any_roc = next(iter(results.values())).roc
    print(f"ROC: {any_roc.genuine} same-person and {any_roc.impostors} different-person pairs")
    head = "TAR@FAR=" + ", ".join(f"{f:g}" for f in fars)
    print(f"{'embedder':<18} {'accuracy':>17} {'threshold':>9} {'AUC':>7} {'EER':>7}  {head}")
    for label, r in results.items():
        tars = "; ".join(_tar_text(e, r.roc) for e in r.tar_at_far())
        print(f"{label:<18} {r.kfold.accuracy:.4f} ± {r.kfold.accuracy_std:.4f} "
              f"{r.kfold.threshold:9.4f} {r.roc.auc:7.4f} {r.roc.equal_error_rate():7.4f}  {tars}")
    for label, r in results.items():
        print(f"{label}: accuracy={r.kfold.accuracy:.4f} ± {r.kfold.accuracy_std:.4f} "
              f"({folds} folds), threshold={r.kfold.threshold:.4f}")

    out.mkdir(parents=True, exist_ok=True)
    roc_png = out / "roc.png"
    plot_roc(results, roc_png, f"{Path(args.data).name}: {any_roc.genuine} same / "
                               f"{any_roc.impostors} different-person pairs")
    report = {
        "benchmark": "lfw", "data": str(args.data), "pairs_file": args.pairs,
        "described": vset.described, "pairs": pairs.source, "notes": pairs.notes,
        "score": SCORE, "folds": folds,
        "accuracy_same_pairs": int(pairs.same.sum()),
        "accuracy_different_pairs": int((~pairs.same).sum()),
        "pairs_left_out": dropped, "images": {"total": len(ok), **counts},
        "detector": args.detector, "det_size": args.det_size, "kind": args.kind,
        "embedders": [{"embedder": label, "model_id": embedded.model_ids[label], **r.to_dict()}
                      for label, r in results.items()],
        "roc_png": str(roc_png),
    }
    print(f"wrote {roc_png} and {out / 'lfw.json'}")
    common.emit_json(report, str(out / "lfw.json"))
    return 0


def main(argv=None) -> int:
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
