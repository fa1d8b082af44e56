"""Verification metrics on scores whose right answers are known by hand."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from mobileface.eval.verification import (accuracy_at, best_threshold, evaluate, kfold_accuracy,
                                     l2_normalise, pair_scores, roc_curve)


def test_pair_scores_are_cosine_of_normalised_rows():
    emb = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-5.0, 0.0]])
    scores = pair_scores(emb, [0, 0, 0], [1, 2, 3])
    assert_allclose(scores, [0.0, np.sqrt(0.5), -1.0], atol=1e-12)
    assert_allclose(np.linalg.norm(l2_normalise(emb), axis=1), 1.0)
    assert_allclose(l2_normalise(np.zeros((1, 3))), 0.0)


def test_best_threshold_separates_and_sits_between_the_classes():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == 1.0
    assert 0.4 < threshold < 0.7
    assert accuracy_at(scores, same, threshold) == 1.0


def test_best_threshold_with_overlap_counts_errors():
    # one impostor above every genuine pair: the best possible is 5 of 6
    scores = np.array([0.95, 0.8, 0.7, 0.6, 0.3, 0.2])
    same = np.array([0, 1, 1, 1, 0, 0], bool)
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == pytest.approx(5 / 6)
    assert 0.3 < threshold < 0.6


def test_kfold_learns_the_threshold_on_the_other_folds():
    rng = np.random.default_rng(1)
    same = np.repeat([True, False], 50)
    scores = np.where(same, 0.8, 0.3) + rng.normal(0, 0.05, 100)
    folds = np.tile(np.arange(10), 10)
    result = kfold_accuracy(scores, same, folds)
    assert result.accuracy == 1.0 and result.accuracy_std == 0.0
    assert len(result.fold_thresholds) == 10
    assert all(0.4 < t < 0.7 for t in result.fold_thresholds)
    # a fold whose pairs contradict the others is scored with the others' threshold
    flipped = scores.copy()
    flipped[folds == 0] = 1.1 - flipped[folds == 0]
    bad = kfold_accuracy(flipped, same, folds)
    assert bad.fold_accuracies[0] == 0.0
    assert bad.accuracy == pytest.approx(0.9) and bad.accuracy_std > 0.2


def test_roc_tar_at_far_and_eer_by_hand():
    # 4 genuine, 5 impostors
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.85, 0.5, 0.3, 0.2, 0.1])
    same = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    roc = roc_curve(scores, same)
    assert roc.genuine == 4 and roc.impostors == 5
    assert roc.far[0] == 0 and roc.tar[0] == 0 and roc.far[-1] == 1 and roc.tar[-1] == 1
    assert roc.tar_at(0.0) == 0.25            # only 0.9 is above the best impostor
    assert roc.tar_at(0.2) == 0.75            # one false accept (0.85) allowed
    assert roc.threshold_at(0.2) == 0.6
    assert roc.lowest_far == pytest.approx(0.2)
    # AUC: the fraction of (genuine, impostor) pairs ranked correctly: (5+4+4+3)/20
    assert roc.auc == pytest.approx(16 / 20)
    assert 0.0 < roc.equal_error_rate() < 0.5


def test_tied_scores_form_one_roc_point():
    roc = roc_curve(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 1, 0, 0], bool))
    assert_allclose(roc.far, [0, 1]) and assert_allclose(roc.tar, [0, 1])


def test_tar_at_far_says_when_the_data_cannot_reach_it():
    emb = np.eye(4)[[0, 0, 1, 1, 2, 3]] + 0.01 * np.arange(6)[:, None]
    first, second = np.array([0, 2, 0, 1, 2]), np.array([1, 3, 4, 5, 5])
    same = np.array([1, 1, 0, 0, 0], bool)
    result = evaluate(emb, (first, second, same), np.array([0, 1, 0, 1, 0]),
                      (first, second, same), fars=(1e-3, 0.5))
    low, high = result.tar_at_far()
    assert low["reachable"] is False and low["tar"] is None
    assert high["reachable"] is True and high["tar"] == 1.0
    report = result.to_dict()
    assert report["roc_different_pairs"] == 3 and report["lowest_far"] == pytest.approx(1 / 3)
    assert report["accuracy"] == 1.0


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError):
        best_threshold(np.array([0.1, 0.2]), np.array([True]))
    with pytest.raises(ValueError):
        roc_curve(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError):
        kfold_accuracy(np.array([0.1, 0.2]), np.array([True, False]), np.array([0, 0]))
    with pytest.raises(ValueError):
        best_threshold(np.array([np.nan]), np.array([True]))
