"""Face verification metrics: scores, k-fold accuracy with a learnt threshold, ROC, TAR@FAR.

The score of a pair is the **cosine similarity of the two L2-normalised
embeddings** (1 = same direction, higher = more alike); a pair is called "same
person" when its score is at or above the threshold. dlib's ResNet descriptors
are not normalised (norms 1.25-1.52, mean 1.40, on LFW-Aligned-100Pair); at
norm 1.4, dlib's Euclidean distance threshold 0.6 corresponds to a cosine
similarity of 1 - 0.6**2 / (2 * 1.4**2) = 0.91.

Accuracy follows the LFW protocol: the pairs are split into folds; for each
fold the threshold that maximises accuracy on the other folds is applied to it;
the mean and standard deviation of the per-fold accuracies are reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobileface.vectors import normalise


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows divided by their norm (float64: the figures are sums over thousands of pairs)."""
    return normalise(embeddings, np.float64)


def pair_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows ``first[k]`` and ``second[k]`` of ``embeddings``, (K,)."""
    unit = l2_normalise(embeddings)
    return np.einsum("kd,kd->k", unit[np.asarray(first)], unit[np.asarray(second)])


def _check(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64).reshape(-1)
    same = np.asarray(same, bool).reshape(-1)
    if len(scores) != len(same):
        raise ValueError(f"{len(scores)} scores but {len(same)} labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, same


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest accuracy on these pairs, and that accuracy.

    Every cut between two consecutive distinct scores is tried (and one below
    and one above all of them); the threshold is the midpoint of the cut.
    Among equally accurate cuts the middle one is taken.
    """
    scores, same = _check(scores, same)
    if len(scores) == 0:
        raise ValueError("no pairs")
    values = np.unique(scores)
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2,
                           [values[-1] + 1e-6]])
    order = np.argsort(scores)
    sorted_scores, sorted_same = scores[order], same[order]
    # pairs below each cut are called "different": correct for the impostors there
    below = np.searchsorted(sorted_scores, cuts, side="left")
    impostors_below = np.concatenate([[0], np.cumsum(~sorted_same)])[below]
    genuine_above = same.sum() - np.concatenate([[0], np.cumsum(sorted_same)])[below]
    accuracy = (impostors_below + genuine_above) / len(scores)
    best = np.flatnonzero(accuracy == accuracy.max())
    pick = best[len(best) // 2]
    return float(cuts[pick]), float(accuracy[pick])


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    scores, same = _check(scores, same)
    return float(np.mean((scores >= threshold) == same))


@dataclass
class KFoldResult:
    accuracy: float            # mean of the per-fold accuracies
    accuracy_std: float        # their standard deviation (population, as LFW reports it)
    threshold: float           # mean of the per-fold thresholds
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    best_threshold_all: float  # the best threshold on all pairs at once
    accuracy_all: float        # its accuracy (optimistic: chosen on the same pairs)


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """LFW-protocol accuracy: each fold is scored with the threshold learnt on the others."""
    scores, same = _check(scores, same)
    folds = np.asarray(folds).reshape(-1)
    if len(folds) != len(scores):
        raise ValueError(f"{len(folds)} fold labels for {len(scores)} pairs")
    names = np.unique(folds)
    if len(names) < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    accuracies, thresholds = [], []
    for name in names:
        test = folds == name
        threshold, _ = best_threshold(scores[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(scores[test], same[test], threshold))
    threshold_all, accuracy_all = best_threshold(scores, same)
    return KFoldResult(float(np.mean(accuracies)), float(np.std(accuracies)),
                       float(np.mean(thresholds)), [float(a) for a in accuracies],
                       [float(t) for t in thresholds], threshold_all, accuracy_all)


@dataclass
class Roc:
    far: np.ndarray         # false accept rate at each threshold, increasing
    tar: np.ndarray         # true accept rate at each threshold
    thresholds: np.ndarray  # accept when score >= threshold
    genuine: int
    impostors: int

    @property
    def auc(self) -> float:
        """Area under the ROC curve."""
        return float(np.trapezoid(self.tar, self.far))

    @property
    def lowest_far(self) -> float:
        """The smallest non-zero FAR these pairs can measure: one false accept."""
        return 1.0 / self.impostors

    def tar_at(self, far: float) -> float:
        """The highest TAR whose FAR is at most ``far``."""
        ok = self.far <= far + 1e-12
        return float(self.tar[ok].max()) if ok.any() else 0.0

    def threshold_at(self, far: float) -> float:
        """The lowest threshold whose FAR is at most ``far``."""
        ok = np.flatnonzero(self.far <= far + 1e-12)
        return float(self.thresholds[ok[-1]])

    def equal_error_rate(self) -> float:
        """The rate where false accepts and false rejects are equal (interpolated)."""
        frr = 1.0 - self.tar
        k = int(np.argmax(self.far >= frr))
        if k == 0:
            return float(self.far[0])
        f0, f1, r0, r1 = self.far[k - 1], self.far[k], frr[k - 1], frr[k]
        t = (r0 - f0) / ((f1 - f0) - (r1 - r0)) if (f1 - f0) != (r1 - r0) else 0.0
        return float(f0 + t * (f1 - f0))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> Roc:
    """TAR against FAR at every distinct score used as the threshold."""
    scores, same = _check(scores, same)
    genuine, impostors = int(same.sum()), int((~same).sum())
    if genuine == 0 or impostors == 0:
        raise ValueError("a ROC needs both same-person and different-person pairs")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_same = scores[order], same[order]
    # the last index of each run of equal scores: accepting down to that score
    last = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(scores) - 1]
    tar = np.cumsum(sorted_same)[last] / genuine
    far = np.cumsum(~sorted_same)[last] / impostors
    thresholds = sorted_scores[last]
    return Roc(np.r_[0.0, far], np.r_[0.0, tar], np.r_[np.inf, thresholds], genuine, impostors)


#: the FARs at which TAR is reported by default
DEFAULT_FARS = (1e-3, 1e-2)


@dataclass
class VerificationResult:
    """k-fold accuracy on the accuracy pairs and the ROC on the ROC pairs."""

    kfold: KFoldResult
    roc: Roc
    fars: tuple[float, ...]

    def tar_at_far(self) -> list[dict]:
        """TAR at each FAR of ``fars``; ``reachable`` is False when the pairs hold fewer
        than 1/FAR different-person pairs (no false accept can be afforded: TAR is None)."""
        out = []
        for far in self.fars:
            reachable = self.roc.impostors * far >= 1.0
            out.append({"far": far, "reachable": bool(reachable),
                        "tar": self.roc.tar_at(far) if reachable else None,
                        "threshold": self.roc.threshold_at(far) if reachable else None})
        return out

    def to_dict(self) -> dict:
        k = self.kfold
        return {
            "accuracy": round(k.accuracy, 6), "accuracy_std": round(k.accuracy_std, 6),
            "threshold": round(k.threshold, 6),
            "fold_accuracies": [round(a, 6) for a in k.fold_accuracies],
            "fold_thresholds": [round(t, 6) for t in k.fold_thresholds],
            "best_threshold_all": round(k.best_threshold_all, 6),
            "accuracy_all": round(k.accuracy_all, 6),
            "roc_same_pairs": self.roc.genuine, "roc_different_pairs": self.roc.impostors,
            "auc": round(self.roc.auc, 6), "eer": round(self.roc.equal_error_rate(), 6),
            "tar_at_far": self.tar_at_far(),
            "lowest_far": self.roc.lowest_far,
            "tar_at_lowest_far": round(self.roc.tar_at(self.roc.lowest_far), 6),
        }


def evaluate(embeddings: np.ndarray, pairs: tuple, folds: np.ndarray, roc_pairs: tuple,
             fars: tuple[float, ...] = DEFAULT_FARS) -> VerificationResult:
    """Verification figures of one embedder.

    embeddings: (N, D) one row per image. pairs: (first, second, same) for the
    k-fold accuracy, with ``folds`` the fold of each; roc_pairs: (first,
    second, same) for the ROC and TAR@FAR (usually many more different-person
    pairs). Scores are :func:`pair_scores`.
    """
    first, second, same = pairs
    kfold = kfold_accuracy(pair_scores(embeddings, first, second), same, folds)
    r_first, r_second, r_same = roc_pairs
    roc = roc_curve(pair_scores(embeddings, r_first, r_second), r_same)
    return VerificationResult(kfold, roc, tuple(float(f) for f in fars))
