"""A 2-D t-SNE map of the face embeddings of a folder-per-person set, coloured by person.

    python tools/tsne.py DATA [--embedder SPEC ...] [-o tsne.png]

DATA has one sub-folder of images per person (raw photos or aligned face
crops: each image's largest face is used, see mobileface/detect/locate.py). The
embeddings are L2-normalised, so the map's distances follow cosine similarity.
With several --embedder, one map per embedder, side by side. Prints how often
an image's nearest neighbour is the same person, in the embedding space and
in the map, then one JSON line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mobileface.cli import common
from mobileface.errors import DataError
from mobileface.eval.verification import l2_normalise

#: people named in a legend at most
LEGEND_MAX = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsne.py", description=__doc__.strip().splitlines()[0])
    parser.add_argument("data", help="folder-per-person tree of images")
    parser.add_argument("-o", "--output", default="tsne.png", help="PNG to write (default: tsne.png)")
    parser.add_argument("--perplexity", type=float, default=None,
                        help="t-SNE perplexity (default: 30, less for small sets)")
    parser.add_argument("--max-per-person", type=int, default=None,
                        help="use at most this many images of each person")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random seed (default: 0)")
    parser.add_argument("--json-out", default=None, help="also write the JSON result here")
    common.add_embedding_options(parser)
    common.add_model_options(parser, embedder=False, precision="fp32")
    common.add_logging_options(parser)
    return parser


def nearest_same_person(points: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of points whose nearest other point has the same label."""
    d = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[d.argmin(1)] == labels))


def chance_same_person(labels: np.ndarray) -> float:
    """Expected nearest-neighbour same-person rate if neighbours were random."""
    counts = np.bincount(labels)[labels]
    return float(np.mean((counts - 1) / (len(labels) - 1)))


def tsne_2d(embeddings: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto").fit_transform(l2_normalise(embeddings))


def plot_maps(maps: dict, labels: np.ndarray, people: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(6.4 * len(maps), 6.0), dpi=100, squeeze=False)
    cmap = plt.get_cmap("tab20" if len(people) <= 20 else "hsv")
    colours = cmap(np.linspace(0, 1, len(people), endpoint=len(people) <= 20))
    for ax, (label, xy) in zip(axes[0], maps.items()):
        for k, name in enumerate(people):
            mine = labels == k
            if not mine.any():
                continue
            ax.scatter(xy[mine, 0], xy[mine, 1], s=22, color=colours[k], label=name,
                       edgecolors="black", linewidths=0.3)
            if mine.sum() > 1:  # link a person's images so that pairs read at a glance
                centre = xy[mine].mean(0)
                for p in xy[mine]:
                    ax.plot([centre[0], p[0]], [centre[1], p[1]], color=colours[k],
                            linewidth=0.6, alpha=0.7)
        ax.set_title(f"{label}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(people) <= LEGEND_MAX:
            ax.legend(fontsize=7, loc="best", markerscale=0.8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args) -> int:
    images, embedded = common.embed_folder_from_args(args)
    ok = embedded.ok
    if ok.sum() < 4:
        raise DataError(f"a t-SNE map needs at least 4 faces; found {int(ok.sum())} in "
                        f"{len(ok)} images")
    labels = images.labels[ok]
    n = int(ok.sum())
    perplexity = (min(30.0, max(2.0, (n - 1) / 3)) if args.perplexity is None
                  else args.perplexity)
    if not 0 < perplexity < n:
        raise ValueError(f"--perplexity must be between 0 and the number of faces ({n})")
    chance = chance_same_person(labels)
    maps, rows = {}, []
    for label, embeddings in embedded.embeddings.items():
        maps[label] = xy = tsne_2d(embeddings[ok], perplexity, args.seed)
        rows.append({"embedder": label, "model_id": embedded.model_ids[label],
                     "nn_same_person_embedding": nearest_same_person(l2_normalise(
                         embeddings[ok]), labels),
                     "nn_same_person_map": nearest_same_person(xy, labels)})
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_maps(maps, labels, images.people, out,
              f"t-SNE of {Path(args.data).name}: {n} faces of {len(set(labels))} people "
              f"(perplexity {perplexity:g})")
    counts = embedded.counts()
    print(f"data: {args.data}: {len(images)} images of {len(images.people)} people")
    print("faces: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print(f"nearest neighbour is the same person (chance {chance:.3f}):")
    for r in rows:
        print(f"  {r['embedder']}: embedding space {r['nn_same_person_embedding']:.3f}, "
              f"t-SNE map {r['nn_same_person_map']:.3f}")
    print(f"wrote {out}")
    result = {"tool": "tsne", "data": str(args.data), "images": {"total": len(images), **counts},
              "people": len(images.people), "faces": n, "perplexity": perplexity,
              "chance_same_person": chance, "embedders": rows, "png": str(out)}
    common.emit_json(result, args.json_out)
    return 0


def main(argv=None) -> int:
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
