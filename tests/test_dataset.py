"""Folder-per-person trees, LFW pairs files and the pairs built from them (no models needed)."""
from __future__ import annotations

import numpy as np
import pytest

from mobileface.eval.dataset import (all_pairs, folder_pairs, read_folder_set, read_lfw_pairs)
from mobileface.errors import DataError


def _tree(root, people: dict[str, int], name_fmt="{name}_{i:04d}.jpg"):
    for name, count in people.items():
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (root / name / name_fmt.format(name=name, i=i)).write_bytes(b"not decoded here")
    return root


def test_folder_set_lists_people_and_images_in_order(tmp_path):
    root = _tree(tmp_path / "set", {"bob": 2, "alice": 3, "empty": 0})
    (root / "alice" / "notes.txt").write_text("ignored")
    (root / "alice" / ".hidden.jpg").write_bytes(b"")
    (root / "loose.jpg").write_bytes(b"")
    images = read_folder_set(root)
    assert images.people == ["alice", "bob"]
    assert [p.name for p in images.paths] == ["alice_0001.jpg", "alice_0002.jpg", "alice_0003.jpg",
                                              "bob_0001.jpg", "bob_0002.jpg"]
    assert images.labels.tolist() == [0, 0, 0, 1, 1]
    assert len(read_folder_set(root, max_per_person=1)) == 2


def test_folder_set_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        read_folder_set(tmp_path / "nope")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="sub-folder named after them"):
        read_folder_set(flat)
    (tmp_path / "file.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="is not a folder"):
        read_folder_set(tmp_path / "file.jpg")


def test_folder_pairs_are_balanced_deterministic_and_stratified(tmp_path):
    images = read_folder_set(_tree(tmp_path, {f"p{k}": 2 + (k % 2) for k in range(12)}))
    pairs = folder_pairs(images, folds=10, seed=0)
    labels = images.labels
    genuine = pairs.same.sum()
    assert genuine == 6 * 1 + 6 * 3  # 2 images: 1 pair, 3 images: 3 pairs
    assert (~pairs.same).sum() == genuine
    assert np.all((labels[pairs.first] == labels[pairs.second]) == pairs.same)
    assert np.all(pairs.first < pairs.second)
    assert len(set(zip(pairs.first.tolist(), pairs.second.tolist()))) == len(pairs)
    per_fold = np.bincount(pairs.fold[pairs.same])
    assert len(per_fold) == 10 and per_fold.max() - per_fold.min() <= 1
    again = folder_pairs(images, folds=10, seed=0)
    assert np.array_equal(again.first, pairs.first) and np.array_equal(again.fold, pairs.fold)
    other = folder_pairs(images, folds=10, seed=1)
    assert not np.array_equal(other.second[~other.same], pairs.second[~pairs.same])


def test_small_trees_get_fewer_folds_or_an_error(tmp_path):
    images = read_folder_set(_tree(tmp_path / "a", {f"p{k}": 2 for k in range(5)}))
    pairs = folder_pairs(images, folds=10)
    assert len(np.unique(pairs.fold)) == 5 and pairs.notes
    lonely = read_folder_set(_tree(tmp_path / "b", {"p0": 2, "p1": 1}))
    with pytest.raises(DataError, match="at least two people"):
        folder_pairs(lonely)


def test_all_pairs_uses_every_impostor_up_to_the_cap(tmp_path):
    images = read_folder_set(_tree(tmp_path, {f"p{k}": 2 for k in range(10)}))
    first, second, same = all_pairs(images)
    assert same.sum() == 10 and (~same).sum() == 20 * 19 // 2 - 10
    first, second, same = all_pairs(images, max_impostors=50)
    assert same.sum() == 10 and (~same).sum() == 50


def _pairs_file(path, header, lines):
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_lfw_pairs_file_with_folds(tmp_path):
    root = _tree(tmp_path / "lfw", {"Ann_Lee": 3, "Bo_Chen": 2, "Cy_Dee": 1})
    lines = ["Ann_Lee 1 2", "Bo_Chen 1 2", "Ann_Lee 3 Cy_Dee 1", "Bo_Chen 2 Cy_Dee 1",  # fold 0
             "Ann_Lee 2 3", "Ann_Lee 1 3", "Bo_Chen 1 Ann_Lee 3", "Cy_Dee 1 Ann_Lee 1"]  # fold 1
    pairs = read_lfw_pairs(_pairs_file(tmp_path / "pairs.txt", "2\t2", lines), root)
    assert pairs.same.tolist() == [True, True, False, False] * 2
    assert pairs.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len(pairs.images) == 6  # each image once
    a, b = pairs.images[pairs.first[2]], pairs.images[pairs.second[2]]
    assert a == root / "Ann_Lee" / "Ann_Lee_0003.jpg" and b == root / "Cy_Dee" / "Cy_Dee_0001.jpg"


def test_lfw_pairs_file_with_a_single_count_gets_random_folds(tmp_path):
    root = _tree(tmp_path / "lfw", {f"P{k}": 2 for k in range(4)})
    lines = [f"P{k} 1 2" for k in range(4)] + [f"P{k} 1 P{(k + 1) % 4} 2" for k in range(4)]
    pairs = read_lfw_pairs(_pairs_file(tmp_path / "pairs.txt", "4", lines), root, folds=10)
    assert len(np.unique(pairs.fold)) == 4  # no more folds than same-person pairs


@pytest.mark.parametrize("header, lines, message", [
    ("ten 300", [], "line 1 must be"),
    ("1 1", ["A 1 2"], "announces 2 pairs"),
    ("1 1", ["A 1 2", "A 1 B 1 2"], "line 3: expected"),
    ("1 1", ["A 1 x", "A 1 B 1"], "not an integer"),
    ("1 1", ["A 1 2", "A 1 Nobody 1"], "1 of the 3 images"),
])
def test_malformed_pairs_files_name_the_problem(tmp_path, header, lines, message):
    root = _tree(tmp_path / "lfw", {"A": 2, "B": 1})
    with pytest.raises(DataError, match=message):
        read_lfw_pairs(_pairs_file(tmp_path / "pairs.txt", header, lines), root)


def test_missing_or_empty_pairs_file(tmp_path):
    root = _tree(tmp_path / "lfw", {"A": 2})
    with pytest.raises(DataError, match="no such file"):
        read_lfw_pairs(tmp_path / "missing.txt", root)
    with pytest.raises(DataError, match="empty"):
        read_lfw_pairs(_pairs_file(tmp_path / "pairs.txt", "", []), root)
    with pytest.raises(DataError, match="no such folder"):
        read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "no-root")
