"""The SQLite facebank: import from folders, add, rename, remove, crashes, concurrent changes."""
from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from mobileface.identity.enrol import EnrolError
from mobileface.identity.facebank import DB_NAME, TRASH, Facebank, FacebankError, check_name
from mobileface.cli.facebank import calibration

MODEL = "test-model:1"


def _unit(*values) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


# Every picture's embedding, by file name (the stand-in for the face model).
VECTORS = {
    "ann1.png": _unit(1, 0, 0, 0), "ann2.png": _unit(0.95, 0.3, 0, 0),
    "ann3.png": _unit(0.97, 0.2, 0.1, 0), "ann_wrong.png": _unit(0, 0, 0, 1),
    "bob1.png": _unit(0, 1, 0, 0), "bob2.png": _unit(0.1, 0.99, 0, 0),
    "cid1.png": _unit(0, 0, 1, 0),
}


class FakeEmbedder:
    """embed(path) -> (embedding, quality); refuses pictures named like noface*/group*."""

    def __init__(self):
        self.calls = []

    def __call__(self, path):
        self.calls.append(path.name)
        if path.name.startswith("noface"):
            raise EnrolError(f"{path}: no face found")
        if path.name.startswith("group"):
            raise EnrolError(f"{path}: 2 faces found, expected one")
        return VECTORS[path.name], 0.8


def _picture(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels)


def _folder(root, layout: dict[str, list[str]]):
    for seed, (name, files) in enumerate(layout.items()):
        for k, file in enumerate(files):
            _picture(root / name / file, 100 * seed + k)
    return root


def _state(bank: Facebank) -> list[tuple]:
    return sorted((p.name, p.images) for p in bank.people())


def test_import_mirrors_the_folders_and_skips_bad_pictures(tmp_path, caplog):
    _folder(tmp_path, {"Ann": ["ann1.png", "ann2.png"], "Bob": ["bob1.png", "noface.png",
                                                               "group.png"]})
    bank = Facebank(tmp_path)
    embed = FakeEmbedder()
    with caplog.at_level(logging.WARNING, logger="mobileface"):
        report = bank.import_folder(embed, MODEL)
    assert _state(bank) == [("Ann", 2), ("Bob", 1)]
    assert sorted(report.added) == ["Ann/ann1.png", "Ann/ann2.png", "Bob/bob1.png"]
    skipped = dict(report.skipped)
    assert "no face" in skipped["Bob/noface.png"] and "2 faces" in skipped["Bob/group.png"]
    # each skipped picture is named in a warning
    assert "noface.png" in caplog.text and "group.png" in caplog.text
    gallery = bank.gallery(MODEL)
    assert gallery.names == ["Ann", "Bob"] and len(gallery.embeddings) == 3
    # the embedding is stored as float32 bytes, not a pickle
    raw = sqlite3.connect(tmp_path / DB_NAME).execute("SELECT embedding FROM images").fetchone()[0]
    assert isinstance(raw, bytes) and len(raw) == 4 * 4


def test_import_again_embeds_only_what_changed(tmp_path):
    _folder(tmp_path, {"Ann": ["ann1.png", "ann2.png"], "Bob": ["bob1.png"]})
    bank = Facebank(tmp_path)
    bank.import_folder(FakeEmbedder(), MODEL)
    (tmp_path / "Ann" / "ann2.png").unlink()
    _picture(tmp_path / "Cid" / "cid1.png", 7)
    for file in (tmp_path / "Bob").iterdir():
        file.unlink()
    (tmp_path / "Bob").rmdir()
    embed = FakeEmbedder()
    report = bank.import_folder(embed, MODEL)
    assert embed.calls == ["cid1.png"]          # ann1 is unchanged: not embedded again
    assert report.kept == 1 and report.removed == ["Ann/ann2.png", "Bob/bob1.png"]
    assert report.people_removed == ["Bob"]
    assert _state(bank) == [("Ann", 1), ("Cid", 1)]


def test_a_picture_far_from_the_others_is_flagged(tmp_path, caplog):
    _folder(tmp_path, {"Ann": ["ann1.png", "ann2.png", "ann3.png", "ann_wrong.png"]})
    bank = Facebank(tmp_path, outlier_threshold=0.9)
    with caplog.at_level(logging.WARNING, logger="mobileface"):
        report = bank.import_folder(FakeEmbedder(), MODEL)
    assert report.outliers == ["Ann/ann_wrong.png"]
    assert bank.people()[0].outliers == ["Ann/ann_wrong.png"]
    assert "ann_wrong.png" in caplog.text and "mistake" in caplog.text
    # flagged pictures stay enrolled (every picture is kept) but can be left out of pairs
    assert len(bank.gallery(MODEL).embeddings) == 4
    assert len(bank.gallery(MODEL, include_outliers=False).embeddings) == 3


def test_add_rename_remove(tmp_path):
    bank = Facebank(tmp_path)
    files = bank.add("Ann", [(b"picture-one", ".jpg", "cam", VECTORS["ann1.png"], 0.7)], MODEL)
    assert (tmp_path / files[0]).read_bytes() == b"picture-one"
    bank.add("Ann", [(b"picture-two", ".jpg", "cam", VECTORS["ann2.png"], 0.9)], MODEL)
    bank.add("Bob", [(b"bob", ".png", "bob", VECTORS["bob1.png"], 0.5)], MODEL)
    assert _state(bank) == [("Ann", 2), ("Bob", 1)]

    bank.rename("Ann", "Ann Smith")
    assert _state(bank) == [("Ann Smith", 2), ("Bob", 1)]
    assert (tmp_path / "Ann Smith").is_dir() and not (tmp_path / "Ann").exists()
    assert bank.gallery(MODEL).names == ["Ann Smith", "Bob"]
    # the renamed pictures are still found by a later import (nothing re-embedded)
    embed = FakeEmbedder()
    report = bank.import_folder(embed, MODEL)
    assert embed.calls == [] and report.kept == 3

    with pytest.raises(FacebankError, match="already exists"):
        bank.rename("Bob", "Ann Smith")
    with pytest.raises(FacebankError, match="no person"):
        bank.rename("Zed", "Zoe")

    moved = bank.remove("Bob")
    assert _state(bank) == [("Ann Smith", 2)]
    assert moved.parent == tmp_path / TRASH and any(moved.iterdir())  # nothing deleted
    # the trash is not imported back
    bank.import_folder(FakeEmbedder(), MODEL)
    assert _state(bank) == [("Ann Smith", 2)]
    with pytest.raises(FacebankError, match="no person"):
        bank.remove("Bob")


@pytest.mark.parametrize("name", ["a/b", "..", "x/../y", "../etc", ".hidden", "", "  ",
                                  "tab\tname"])
def test_names_that_are_not_plain_folder_names_are_refused(name):
    with pytest.raises(FacebankError):
        check_name(name)


def test_a_failure_in_the_middle_of_an_import_leaves_the_facebank_intact(tmp_path, monkeypatch):
    _folder(tmp_path, {"Ann": ["ann1.png"], "Bob": ["bob1.png"]})
    bank = Facebank(tmp_path)
    bank.import_folder(FakeEmbedder(), MODEL)
    before = _state(bank)
    _folder(tmp_path, {"Cid": ["cid1.png"], "Ann": ["ann2.png", "ann3.png"]})
    (tmp_path / "Bob" / "bob1.png").unlink()

    calls = []
    original = Facebank._insert

    def failing_insert(self, conn, pid, row, model_id):
        calls.append(row.file)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        original(self, conn, pid, row, model_id)

    monkeypatch.setattr(Facebank, "_insert", failing_insert)
    with pytest.raises(RuntimeError):
        bank.import_folder(FakeEmbedder(), MODEL)
    assert len(calls) == 2  # it failed after deleting Bob's row and inserting one picture
    assert _state(bank) == before
    assert _state(Facebank(tmp_path)) == before


def test_a_process_killed_in_the_middle_of_an_import_leaves_the_facebank_intact(tmp_path):
    _folder(tmp_path, {"Ann": ["ann1.png"], "Bob": ["bob1.png"]})
    bank = Facebank(tmp_path)
    bank.import_folder(FakeEmbedder(), MODEL)
    before = _state(bank)
    bank.close()
    _folder(tmp_path, {"Cid": ["cid1.png"], "Ann": ["ann2.png", "ann3.png"]})
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from mobileface.identity.facebank import Facebank
        inserted = []
        original = Facebank._insert
        def insert(self, conn, pid, row, model_id):
            original(self, conn, pid, row, model_id)
            inserted.append(row.file)
            if len(inserted) == 2:
                os._exit(3)          # the process dies mid-transaction, no cleanup at all
        Facebank._insert = insert
        bank = Facebank({str(tmp_path)!r})
        bank.import_folder(lambda path: (np.ones(4, np.float32), 0.5), {MODEL!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert _state(Facebank(tmp_path)) == before


def test_another_process_changes_are_seen(tmp_path):
    reader = Facebank(tmp_path)
    writer = Facebank(tmp_path)
    assert not reader.changed()
    writer.add("Ann", [(b"a", ".jpg", "cam", VECTORS["ann1.png"], 0.9)], MODEL)
    assert reader.changed() and not reader.changed()   # once per commit
    writer.rename("Ann", "Anna")
    assert reader.changed()
    assert reader.gallery(MODEL).names == ["Anna"]


def test_embeddings_of_another_model_are_refused(tmp_path):
    _folder(tmp_path, {"Ann": ["ann1.png"]})
    bank = Facebank(tmp_path)
    bank.import_folder(FakeEmbedder(), "old-model:0")
    with pytest.raises(FacebankError, match="--reembed"):
        bank.gallery(MODEL)
    with pytest.raises(FacebankError, match="re-embed"):
        bank.import_folder(FakeEmbedder(), MODEL)
    embed = FakeEmbedder()
    bank.import_folder(embed, MODEL, reembed=True)
    assert embed.calls == ["ann1.png"]
    assert bank.models() == [MODEL]


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "bank").write_text("not a folder")
    with pytest.raises(FacebankError, match="not a folder"):
        Facebank(tmp_path / "bank")


def test_a_corrupt_database_is_refused(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FacebankError, match="not a usable facebank"):
        Facebank(tmp_path)


def test_calibration_suggests_a_threshold_between_genuine_and_impostor_pairs():
    genuine = np.array([0.95, 0.96, 0.93, 0.97])
    impostor = np.array([0.80, 0.85, 0.88, 0.83, 0.86])
    result = calibration(genuine, impostor)
    assert 0.88 < result["threshold"] < 0.93
    assert result["false_accept_rate"] == 0 and result["false_reject_rate"] == 0
    # overlapping pairs: the equal-error threshold
    overlapping = calibration(np.array([0.90, 0.95, 0.97, 0.86]), np.array([0.80, 0.87, 0.91]))
    assert overlapping["false_accept_rate"] == pytest.approx(1 / 3, abs=0.01)
    assert overlapping["false_reject_rate"] == pytest.approx(1 / 4, abs=0.01)
