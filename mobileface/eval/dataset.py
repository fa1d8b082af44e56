"""Face image sets for benchmarks and analysis: folder-per-person trees, LFW pairs files,
and the embeddings of every image.

A **folder-per-person tree** has one sub-folder per person, named after them,
holding that person's images (``.jpg``, ``.png``, ...; files directly in the
root and hidden files are ignored). An **LFW pairs file** is the standard
``pairs.txt``: a header line, either ``FOLDS N`` (then, for each fold, N
same-person lines ``name i j`` followed by N different-person lines
``name1 i name2 j``) or a single count ``N`` (N same-person lines, then N
different-person lines, as in ``pairsDevTrain.txt``); image ``i`` of ``name``
is ``ROOT/name/name_000i.jpg``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mobileface.errors import DataError, ImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm"})
#: k of the k-fold accuracy (LFW uses 10)
DEFAULT_FOLDS = 10
#: at most this many different-person pairs go into a ROC built from a tree
DEFAULT_MAX_IMPOSTORS = 200_000


@dataclass
class ImageSet:
    """Images with a person label each: ``labels[i]`` indexes ``people``."""

    paths: list[Path]
    labels: np.ndarray
    people: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _existing_folder(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: is not a folder ({what} must be a folder)")
    return root


def _images_in(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list ({exc.strerror or exc})") from None
    return [p for p in entries if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() in IMAGE_EXTENSIONS]


def read_folder_set(root: str | Path, max_per_person: int | None = None) -> ImageSet:
    """Every image of a folder-per-person tree, people and files in sorted order.

    max_per_person: keep at most this many images of each person (the first in
    sorted order). People without images are skipped.
    """
    root = _existing_folder(root, "a folder-per-person data set")
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{root}: cannot list ({exc.strerror or exc})") from None
    paths: list[Path] = []
    labels: list[int] = []
    people: list[str] = []
    for folder in folders:
        images = _images_in(folder)[:max_per_person]
        if not images:
            continue
        labels += [len(people)] * len(images)
        people.append(folder.name)
        paths += images
    if not paths:
        loose = len(_images_in(root))
        hint = (f" ({loose} images lie directly in it: put each person's images in a "
                "sub-folder named after them)") if loose else ""
        raise DataError(f"{root}: no person sub-folder with images{hint}")
    return ImageSet(paths, np.array(labels, np.int64), people)


@dataclass
class Pairs:
    """Image pairs to verify: ``first[k]``, ``second[k]`` index ``images``."""

    images: list[Path]
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray       # (K,) bool
    fold: np.ndarray       # (K,) int, the fold of each pair for k-fold accuracy
    source: str = ""       # how the pairs were made, for reports
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.first)

    def subset(self, keep: np.ndarray) -> "Pairs":
        return Pairs(self.images, self.first[keep], self.second[keep], self.same[keep],
                     self.fold[keep], self.source, list(self.notes))


def _stratified_folds(same: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold for every pair, same-person and different-person pairs split evenly."""
    fold = np.zeros(len(same), np.int64)
    for group in (np.flatnonzero(same), np.flatnonzero(~same)):
        for k, part in enumerate(np.array_split(rng.permutation(group), folds)):
            fold[part] = k
    return fold


def _cross_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair (i < j) of images and whether it is the same person."""
    first, second = np.triu_indices(len(labels), k=1)
    return first, second, labels[first] == labels[second]


def folder_pairs(images: ImageSet, folds: int = DEFAULT_FOLDS, seed: int = 0) -> Pairs:
    """LFW-style balanced pairs from a tree, for k-fold accuracy.

    Every same-person pair of images, and as many different-person pairs drawn
    at random (without repetition, ``seed``) from all the others; both kinds
    are spread evenly over ``min(folds, same-person pairs)`` folds.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    first, second, same = _cross_pairs(images.labels)
    genuine = np.flatnonzero(same)
    if len(genuine) < 2:
        raise DataError("the data set needs at least two people with two or more images each "
                        f"(it has {len(genuine)} same-person pair(s))")
    impostor = np.flatnonzero(~same)
    if len(impostor) == 0:
        raise DataError("the data set needs at least two people")
    rng = np.random.default_rng(seed)
    impostor = np.sort(rng.choice(impostor, size=min(len(genuine), len(impostor)), replace=False))
    keep = np.concatenate([genuine, impostor])
    k = min(folds, len(genuine))
    fold = _stratified_folds(same[keep], k, rng)
    notes = [] if k == folds else [f"only {len(genuine)} same-person pairs: {k} folds, not {folds}"]
    return Pairs(list(images.paths), first[keep], second[keep], same[keep], fold,
                 f"folder tree: {len(genuine)} same-person pairs and {len(impostor)} "
                 f"different-person pairs drawn at random (seed {seed}), {k} folds", notes)


def all_pairs(images: ImageSet, max_impostors: int = DEFAULT_MAX_IMPOSTORS,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every same-person pair and every different-person pair (at most
    ``max_impostors`` of them, drawn at random) of a tree: first, second, same."""
    first, second, same = _cross_pairs(images.labels)
    impostor = np.flatnonzero(~same)
    if len(impostor) > max_impostors:
        impostor = np.sort(np.random.default_rng(seed).choice(impostor, max_impostors,
                                                              replace=False))
    keep = np.concatenate([np.flatnonzero(same), impostor])
    return first[keep], second[keep], same[keep]


def _header(line: str, path: Path) -> tuple[int, int]:
    try:
        numbers = [int(t) for t in line.split()]
    except ValueError:
        numbers = []
    if len(numbers) == 2 and all(n > 0 for n in numbers):
        return numbers[0], numbers[1]
    if len(numbers) == 1 and numbers[0] > 0:
        return 1, numbers[0]
    raise DataError(f"{path}: line 1 must be 'FOLDS PAIRS_PER_FOLD' or 'PAIRS' "
                    f"(positive integers), got {line.strip()[:60]!r}")


def _lfw_image(root: Path, name: str, index: str, path: Path, line_no: int) -> Path:
    try:
        number = int(index)
    except ValueError:
        raise DataError(f"{path}: line {line_no}: image number {index!r} is not an integer") \
            from None
    return root / name / f"{name}_{number:04d}.jpg"


def read_lfw_pairs(pairs_file: str | Path, root: str | Path, folds: int = DEFAULT_FOLDS,
                   seed: int = 0) -> Pairs:
    """The pairs of a standard LFW pairs file whose images lie under ``root``.

    With a ``FOLDS N`` header the file's own folds are used; with a single
    count the pairs are split into ``folds`` folds at random (``seed``).
    """
    path = Path(pairs_file)
    root = _existing_folder(root, "the image root")
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else
                        f"{path}: is not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") \
            from None
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: the file is empty")
    n_folds, per_fold = _header(lines[0], path)
    body = [(no, line.split()) for no, line in enumerate(lines[1:], start=2) if line.strip()]
    expected = 2 * n_folds * per_fold
    if len(body) != expected:
        raise DataError(f"{path}: the header announces {expected} pairs but the file has "
                        f"{len(body)} pair lines")
    index: dict[Path, int] = {}
    first, second, same = [], [], []
    for no, tokens in body:
        if len(tokens) == 3:
            a = _lfw_image(root, tokens[0], tokens[1], path, no)
            b = _lfw_image(root, tokens[0], tokens[2], path, no)
            same.append(True)
        elif len(tokens) == 4:
            a = _lfw_image(root, tokens[0], tokens[1], path, no)
            b = _lfw_image(root, tokens[2], tokens[3], path, no)
            same.append(False)
        else:
            raise DataError(f"{path}: line {no}: expected 'name i j' or 'name1 i name2 j', "
                            f"got {len(tokens)} fields")
        first.append(index.setdefault(a, len(index)))
        second.append(index.setdefault(b, len(index)))
    images = list(index)
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of the {len(images)} images that {path.name} lists are "
                        f"not under {root}, e.g. {missing[0]}")
    same_arr = np.array(same, bool)
    if n_folds > 1:
        fold = np.arange(len(body)) // (2 * per_fold)
        source = f"{path.name}: {len(body)} pairs in its {n_folds} folds"
    else:
        k = min(folds, int(same_arr.sum()), int((~same_arr).sum()))
        if k < 2:
            raise DataError(f"{path}: too few pairs for k-fold accuracy")
        fold = _stratified_folds(same_arr, k, np.random.default_rng(seed))
        source = f"{path.name}: {len(body)} pairs split into {k} folds at random (seed {seed})"
    return Pairs(images, np.array(first), np.array(second), same_arr, fold, source)


@dataclass
class VerificationSet:
    """Pairs for k-fold accuracy, and (first, second, same) pairs for the ROC."""

    pairs: Pairs
    roc: tuple[np.ndarray, np.ndarray, np.ndarray]
    described: str

    def with_images(self, ok: np.ndarray) -> tuple["VerificationSet", int]:
        """The pairs whose two images are both ``ok``, and how many accuracy pairs were left out."""
        keep = ok[self.pairs.first] & ok[self.pairs.second]
        first, second, same = self.roc
        r_keep = ok[first] & ok[second]
        kept = VerificationSet(self.pairs.subset(keep),
                               (first[r_keep], second[r_keep], same[r_keep]), self.described)
        pairs = kept.pairs
        if pairs.same.sum() == 0 or (~pairs.same).sum() == 0 or len(np.unique(pairs.fold)) < 2:
            raise DataError("too few pairs are left once the images without a face are left out")
        return kept, int((~keep).sum())


def load_verification_set(data: str | Path, pairs_file: str | Path | None = None,
                          folds: int = DEFAULT_FOLDS, seed: int = 0,
                          max_impostors: int = DEFAULT_MAX_IMPOSTORS) -> VerificationSet:
    """An LFW pairs file's pairs (for both accuracy and ROC) with its image root ``data``, or,
    without a pairs file, :func:`folder_pairs` and :func:`all_pairs` of the tree ``data``."""
    if pairs_file:
        pairs = read_lfw_pairs(pairs_file, data, folds, seed)
        return VerificationSet(pairs, (pairs.first, pairs.second, pairs.same),
                               f"{data} with {pairs_file}: {len(pairs.images)} images")
    images = read_folder_set(data)
    return VerificationSet(folder_pairs(images, folds, seed),
                           all_pairs(images, max_impostors, seed),
                           f"{data} (folder per person): {len(images)} images of "
                           f"{len(images.people)} people")


# ---------------------------------------------------------------------------
# Embeddings of every image
# ---------------------------------------------------------------------------

#: per-image outcomes: how the face was found (see main_face.HOW) or "unreadable"
OUTCOMES = ("detected", "padded", "whole", "none", "unreadable")


@dataclass
class EmbeddedImages:
    """One embedding per image and embedder; rows of images without a face are NaN."""

    embeddings: dict[str, np.ndarray]   # embedder label -> (N, D) float32
    how: list[str]                      # per image, one of OUTCOMES
    model_ids: dict[str, str]           # embedder label -> the model that made its embeddings

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: the images with an embedding."""
        return np.array([h in ("detected", "padded", "whole") for h in self.how], bool)

    def counts(self) -> dict[str, int]:
        return {outcome: self.how.count(outcome) for outcome in OUTCOMES}


def build_embedders(specs: Sequence[str | None] | None, runtime) -> dict:
    """Embedding stages by spec (see :func:`mobileface.stages.embed.create_embedder`), keyed by
    the spec as given ("dlib" when none is given)."""
    from mobileface.stages.embed import DEFAULT_EMBEDDER, create_embedder

    specs = list(specs) if specs else [DEFAULT_EMBEDDER]
    stages = {}
    for spec in specs:
        label = spec or DEFAULT_EMBEDDER
        if label in stages:
            raise ValueError(f"embedder {label!r} is given twice")
        stages[label] = create_embedder(spec, runtime)
    return stages


def embed_images(paths: Iterable[Path], analyzer, embedders: dict,
                 kind: str = "auto") -> EmbeddedImages:
    """The main face of every image (:func:`mobileface.detect.locate.find_main_face`, with
    ``analyzer`` for the face and its landmarks), embedded by every embedder stage."""
    from mobileface.io.image import read_image
    from mobileface.detect.locate import find_main_face

    paths = list(paths)
    rows: dict[str, list] = {label: [] for label in embedders}
    how: list[str] = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageError as exc:
            log.warning("%s", exc)
            how.append("unreadable")
            for label in embedders:
                rows[label].append(None)
            continue
        found = find_main_face(analyzer, image, kind)
        how.append(found.how)
        if not found.found:
            log.info("%s: no face found", path)
        for label, stage in embedders.items():
            if found.found:
                stage(found.image, found.faces)
                rows[label].append(np.asarray(found.faces.embedding[0], np.float32))
            else:
                rows[label].append(None)
    embeddings = {}
    for label, values in rows.items():
        dim = next((len(v) for v in values if v is not None), 0)
        out = np.full((len(paths), dim), np.nan, np.float32)
        for i, v in enumerate(values):
            if v is not None:
                out[i] = v
        embeddings[label] = out
    model_ids = {label: str(getattr(stage, "model_id", label)) for label, stage in embedders.items()}
    return EmbeddedImages(embeddings, how, model_ids)


def verify_embedders(vset: "VerificationSet", analyzer, embedders: dict, kind: str = "auto",
                     fars=None) -> tuple["VerificationSet", int, "EmbeddedImages", dict]:
    """Embed the set's images with every embedder and evaluate each on its pairs.

    Pairs with an image in which no face was found are left out. Returns the
    pairs kept, how many accuracy pairs were left out, the embeddings and the
    :class:`~mobileface.eval.verification.VerificationResult` of each embedder.
    """
    from mobileface.eval.verification import DEFAULT_FARS, evaluate

    embedded = embed_images(vset.pairs.images, analyzer, embedders, kind)
    ok = embedded.ok
    if not ok.any():
        raise DataError(f"no face found in any of the {len(ok)} images")
    vset, dropped = vset.with_images(ok)
    pairs = vset.pairs
    results = {label: evaluate(embedded.embeddings[label], (pairs.first, pairs.second, pairs.same),
                               pairs.fold, vset.roc, fars or DEFAULT_FARS)
               for label in embedders}
    return vset, dropped, embedded, results
