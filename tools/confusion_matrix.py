"""A similarity heatmap (person x person, or image x image) of a folder-per-person set.

    python tools/confusion_matrix.py DATA [--level person|image] [--embedder SPEC] [-o sim.png]

DATA has one sub-folder of images per person (raw photos or aligned face
crops: each image's largest face is used, see mobileface/detect/locate.py). Each
cell is the cosine similarity of L2-normalised embeddings: at --level person
(default) the mean over the two people's image pairs (on the diagonal, over a
person's pairs of distinct images; blank for a person with one face); at
--level image, one cell per image pair, images grouped by person. Prints how
often the most similar other person (or image) is the right one, then one JSON
line. With several --embedder, one heatmap per embedder, side by side.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mobileface.cli import common
from mobileface.errors import DataError
from mobileface.eval.verification import l2_normalise

#: rows named on the axes at most
NAMED_MAX = 40


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confusion_matrix.py",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("data", help="folder-per-person tree of images")
    parser.add_argument("--level", choices=("person", "image"), default="person",
                        help="one row per person (default) or per image")
    parser.add_argument("-o", "--output", default="similarity.png",
                        help="PNG to write (default: similarity.png)")
    parser.add_argument("--max-per-person", type=int, default=None,
                        help="use at most this many images of each person")
    parser.add_argument("--json-out", default=None, help="also write the JSON result here")
    common.add_embedding_options(parser)
    common.add_model_options(parser, embedder=False, precision="fp32")
    common.add_logging_options(parser)
    return parser


def person_similarity(embeddings: np.ndarray, labels: np.ndarray, people: int) -> np.ndarray:
    """(P, P) mean cosine similarity between the images of two people; on the diagonal,
    between distinct images of one person (NaN when a person has a single image)."""
    unit = l2_normalise(embeddings)
    sim = unit @ unit.T
    onehot = np.zeros((len(labels), people))
    onehot[np.arange(len(labels)), labels] = 1.0
    sums = onehot.T @ sim @ onehot
    counts = np.outer(onehot.sum(0), onehot.sum(0))
    n = onehot.sum(0)
    # the diagonal leaves out each image's similarity with itself
    sums[np.diag_indices(people)] -= onehot.T @ np.diag(sim)
    counts[np.diag_indices(people)] = n * (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)


def person_rank1(matrix: np.ndarray) -> tuple[int, int]:
    """People whose own (diagonal) similarity beats every other person's, of those with one."""
    rated = ~np.isnan(np.diag(matrix))
    off = matrix.copy()
    np.fill_diagonal(off, -np.inf)
    off = np.where(np.isnan(off), -np.inf, off)
    wins = np.diag(matrix)[rated] > off[rated].max(1)
    return int(wins.sum()), int(rated.sum())


def image_rank1(sim: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """Images whose most similar other image is the same person, of those that have one."""
    s = sim.copy()
    np.fill_diagonal(s, -np.inf)
    has_mate = np.bincount(labels)[labels] > 1
    hits = labels[s.argmax(1)] == labels
    return int(hits[has_mate].sum()), int(has_mate.sum())


def plot_heatmaps(mats: dict, names: list[str], path: Path, title: str, groups=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    side = float(np.clip(3.0 + 0.12 * n, 5.0, 14.0))
    fig, axes = plt.subplots(1, len(mats), figsize=(side * len(mats) + 1.0, side), dpi=100,
                             squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    for ax, (label, mat) in zip(axes[0], mats.items()):
        # the colour scale starts at the lowest cell (rounded down to 0.1): dlib's
        # embeddings, for one, put different people at 0.7-0.9
        low = min(float(np.floor(np.nanmin(mat) * 10) / 10), 0.9)
        image = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=low, vmax=1.0,
                          interpolation="nearest")
        if n <= NAMED_MAX:
            ax.set_xticks(range(n))
            ax.set_yticks(range(n))
            ax.set_xticklabels(names, rotation=90, fontsize=7)
            ax.set_yticklabels(names, fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if groups is not None:  # person boundaries on an image-level map
            for b in groups:
                ax.axhline(b - 0.5, color="white", linewidth=0.4)
                ax.axvline(b - 0.5, color="white", linewidth=0.4)
        ax.set_title(label, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args) -> int:
    images, embedded = common.embed_folder_from_args(args)
    ok = embedded.ok
    labels_all = images.labels[ok]
    present = np.unique(labels_all)
    if len(present) < 2:
        raise DataError(f"a similarity map needs faces of at least two people; found faces of "
                        f"{len(present)} in {len(ok)} images")
    # renumber the people who have a face, keeping their order
    labels = np.searchsorted(present, labels_all)
    people = [images.people[k] for k in present]
    paths = [p for p, good in zip(images.paths, ok) if good]
    mats, rows = {}, []
    for label, embeddings in embedded.embeddings.items():
        emb = embeddings[ok]
        unit = l2_normalise(emb)
        sim = unit @ unit.T
        person = person_similarity(emb, labels, len(people))
        p_hits, p_rated = person_rank1(person)
        i_hits, i_rated = image_rank1(sim, labels)
        mats[label] = person if args.level == "person" else sim
        off = ~np.eye(len(labels), dtype=bool)
        same = (labels[:, None] == labels[None, :]) & off
        rows.append({"embedder": label, "model_id": embedded.model_ids[label],
                     "people_rank1": p_hits, "people_rated": p_rated,
                     "images_rank1": i_hits, "images_rated": i_rated,
                     "mean_same_person": float(sim[same].mean()) if same.any() else None,
                     "mean_different_person": float(sim[~same & off].mean())})
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.level == "person":
        names, groups = people, None
    else:
        names = [f"{people[k]}/{p.name}" for k, p in zip(labels, paths)]
        groups = np.flatnonzero(np.diff(labels)) + 1
    plot_heatmaps(mats, names, out, f"{Path(args.data).name}: cosine similarity, "
                                    f"{len(paths)} faces of {len(people)} people "
                                    f"({args.level} x {args.level})", groups)
    counts = embedded.counts()
    print(f"data: {args.data}: {len(images)} images of {len(images.people)} people")
    print("faces: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for r in rows:
        same = "n/a" if r["mean_same_person"] is None else f"{r['mean_same_person']:.3f}"
        print(f"{r['embedder']}: mean similarity same person {same}, different people "
              f"{r['mean_different_person']:.3f}; own person most similar for "
              f"{r['people_rank1']}/{r['people_rated']} people; nearest image same person for "
              f"{r['images_rank1']}/{r['images_rated']} images")
    print(f"wrote {out}")
    result = {"tool": "confusion_matrix", "data": str(args.data), "level": args.level,
              "images": {"total": len(images), **counts}, "people": people,
              "embedders": rows, "png": str(out)}
    common.emit_json(result, args.json_out)
    return 0


def main(argv=None) -> int:
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
