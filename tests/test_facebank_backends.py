"""One facebank suite, run on both back ends: the SQLite folder and a real PostgreSQL server.

The PostgreSQL server is real (pgvector included, started by the ``postgres``
fixture on 127.0.0.1); embeddings are made up here, so that no model runs.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobileface.identity.errors import FacebankError
from mobileface.identity.store import Enrolment, is_database_url, open_facebank

MODEL = "fake:1"


def _vector(seed: int, near: int | None = None) -> np.ndarray:
    """A unit vector; ``near`` another seed's vector it is close to (same person)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(near).standard_normal(16) if near is not None else 0
    v = (base + (0.1 if near is not None else 1.0) * rng.standard_normal(16)).astype(np.float32)
    return v / np.linalg.norm(v)


def _picture(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _enrol(seed: int, near: int | None = None, stem: str = "photo") -> Enrolment:
    return Enrolment(_picture(seed), ".png", f"{stem}{seed}", _vector(seed, near), 0.8,
                     _picture(seed + 1000))


def _photos(root: Path, layout: dict[str, list[int]]) -> Path:
    """Person folders of pictures whose file names carry the seed of their embedding."""
    for name, seeds in layout.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (root / name / f"s{seed}.png").write_bytes(_picture(seed))
    return root


def _embed(path: Path):
    seed = int(Path(path).stem.lstrip("s").split("-")[0])
    return _vector(seed, seed // 10 * 10), 0.7


def _import(bank, spec: str, tmp_path: Path, layout, **options):
    """Import ``layout`` as each back end does: a folder facebank from its own folder, a
    database from a photo folder given to it."""
    if is_database_url(spec):
        return bank.import_folder(_embed, options.pop("model", MODEL),
                                  folder=_photos(tmp_path / "photos", layout), **options)
    _photos(Path(spec), layout)
    return bank.import_folder(_embed, options.pop("model", MODEL), **options)


def test_add_list_and_the_same_picture_twice_is_one_row(bank_spec):
    with open_facebank(bank_spec, outlier_threshold=0.5) as bank:
        files = bank.add("Ann", [_enrol(1, 1), _enrol(2, 1)], MODEL)
        again = bank.add("Ann", [_enrol(1, 1)], MODEL)
        assert again == files[:1] and len(files) == 2 and files[0].startswith("Ann/")
        bank.add("Bob", [_enrol(30)], MODEL)
        people = {p.name: p for p in bank.people()}
        assert bank.names() == ["Ann", "Bob"] and bank.models() == [MODEL]
        assert people["Ann"].images == 2 and people["Ann"].best_quality == pytest.approx(0.8)
        gallery = bank.gallery(MODEL)
        assert gallery.names == ["Ann", "Bob"] and gallery.embeddings.shape == (3, 16)
        assert gallery.names[gallery.match(_vector(1, 1)).person[0]] == "Ann"
        assert set(bank.faces()) == {"Ann", "Bob"}
        key, read = bank.faces()["Bob"]
        assert read().shape == (24, 24, 3)


def test_rename_and_remove(bank_spec):
    with open_facebank(bank_spec) as bank:
        bank.add("Ann", [_enrol(1)], MODEL)
        bank.add("Bob", [_enrol(2)], MODEL)
        bank.rename("Ann", "Anna")
        assert bank.names() == ["Anna", "Bob"]
        assert bank.gallery(MODEL).names == ["Anna", "Bob"]
        with pytest.raises(FacebankError, match="already exists"):
            bank.rename("Anna", "Bob")
        with pytest.raises(FacebankError, match="no person named 'Zed'"):
            bank.rename("Zed", "Zoe")
        bank.remove("Bob")
        assert bank.names() == ["Anna"]
        with pytest.raises(FacebankError, match="no person named 'Bob'"):
            bank.remove("Bob")
        with pytest.raises(FacebankError):
            bank.add("../etc", [_enrol(3)], MODEL)


def test_a_picture_far_from_the_others_is_flagged_and_calibration_has_pairs(bank_spec):
    with open_facebank(bank_spec, outlier_threshold=0.5) as bank:
        bank.add("Ann", [_enrol(1, 1), _enrol(2, 1), _enrol(99)], MODEL)   # 99: someone else
        bank.add("Bob", [_enrol(11, 11), _enrol(12, 11)], MODEL)
        [ann] = [p for p in bank.people() if p.name == "Ann"]
        assert len(ann.outliers) == 1 and "99" in ann.outliers[0]
        genuine, impostor = bank.pairs(MODEL)        # outliers left out
        assert len(genuine) == 2 and len(impostor) == 4
        assert genuine.min() > impostor.max()
        assert len(bank.gallery(MODEL, include_outliers=False).embeddings) == 4


def test_import_embeds_only_what_changed(bank_spec, tmp_path):
    with open_facebank(bank_spec, outlier_threshold=0.5) as bank:
        first = _import(bank, bank_spec, tmp_path, {"Ann": [10, 11], "Bob": [20]})
        assert sorted(first.added) == ["Ann/s10.png", "Ann/s11.png", "Bob/s20.png"]
        again = _import(bank, bank_spec, tmp_path, {"Ann": [10, 11], "Bob": [20]})
        assert again.added == [] and again.kept == 3
        assert bank.names() == ["Ann", "Bob"]


def test_embeddings_of_another_model_are_refused_until_reembedded(bank_spec, tmp_path):
    with open_facebank(bank_spec) as bank:
        _import(bank, bank_spec, tmp_path, {"Ann": [10, 11]}, model="old:0")
        with pytest.raises(FacebankError) as refused:
            bank.gallery(MODEL)
        assert "old:0" in str(refused.value) and "--reembed" in str(refused.value)
        assert bank.location in str(refused.value) or str(bank_spec) in str(refused.value)
        with pytest.raises(FacebankError):
            bank.add("Bob", [_enrol(3)], MODEL)
        if is_database_url(bank_spec):
            # the database keeps the photos: re-embedding needs no folder at all
            report = bank.import_folder(_embed, MODEL, reembed=True)
        else:
            report = bank.import_folder(_embed, MODEL, reembed=True)
        assert sorted(report.added) == ["Ann/s10.png", "Ann/s11.png"]
        assert bank.models() == [MODEL] and bank.gallery(MODEL).names == ["Ann"]


def test_a_write_that_fails_leaves_the_facebank_as_it_was(bank_spec, monkeypatch):
    with open_facebank(bank_spec, outlier_threshold=0.5) as bank:
        bank.add("Ann", [_enrol(1)], MODEL)
        before = (bank.people(), bank.gallery(MODEL).embeddings.copy())

        def broken(*args, **kwargs):
            raise FacebankError("the disk broke in the middle")

        monkeypatch.setattr(type(bank), "_flag_outliers", broken)
        with pytest.raises(FacebankError, match="broke"):
            bank.add("Ann", [_enrol(2)], MODEL)
        with pytest.raises(FacebankError, match="broke"):
            bank.add("Bob", [_enrol(3)], MODEL)
        monkeypatch.undo()
        assert bank.people() == before[0]
        np.testing.assert_array_equal(bank.gallery(MODEL).embeddings, before[1])
        if not is_database_url(bank_spec):
            assert not (Path(bank_spec) / "Bob").exists()


def test_a_change_reaches_another_reader_within_a_second(bank_spec):
    with open_facebank(bank_spec) as writer, open_facebank(bank_spec) as reader:
        writer.add("Ann", [_enrol(1)], MODEL)
        deadline = time.monotonic() + 5
        while not reader.changed() and time.monotonic() < deadline:
            time.sleep(0.01)
        reader.changed()
        start = time.monotonic()
        writer.add("Bob", [_enrol(2)], MODEL)
        seen = None
        while time.monotonic() < start + 5:
            if reader.changed():
                seen = time.monotonic() - start
                break
            time.sleep(0.01)
        assert seen is not None and seen < 1.0
        assert reader.gallery(MODEL).names == ["Ann", "Bob"]


def test_the_gallery_of_a_changed_facebank_reuses_what_did_not_change(bank_spec):
    with open_facebank(bank_spec) as bank:
        bank.add("Ann", [_enrol(1)], MODEL)
        bank.add("Bob", [_enrol(2)], MODEL)
        first = bank.gallery(MODEL)
        asked = []
        original = bank._embeddings
        bank._embeddings = lambda ids: asked.append(list(ids)) or original(ids)
        bank.add("Cyd", [_enrol(3)], MODEL)
        second = bank.gallery(MODEL, previous=first)
        assert second.names == ["Ann", "Bob", "Cyd"] and len(asked) == 1 and len(asked[0]) == 1


# -- schema versions -------------------------------------------------------------------

_SQLITE_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE images (id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE, file TEXT NOT NULL,
    sha256 TEXT NOT NULL, model TEXT NOT NULL, embedding BLOB NOT NULL, quality REAL NOT NULL,
    outlier INTEGER NOT NULL DEFAULT 0, added REAL NOT NULL, UNIQUE (person_id, file));
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO people VALUES (1, 'Ann', 0);
"""


def _make_version_1(spec: str) -> None:
    """A facebank as the previous schema version wrote it, with Ann and one picture."""
    vector = _vector(1)
    if is_database_url(spec):
        import psycopg
        from pgvector.psycopg import register_vector

        from mobileface.identity.postgres import _SCHEMA_1

        with psycopg.connect(spec, autocommit=True) as conn:
            register_vector(conn)
            for statement in _SCHEMA_1:
                conn.execute(statement)
            pid = conn.execute("INSERT INTO mobileface.people (name, created) "
                               "VALUES ('Ann', 0) RETURNING id").fetchone()[0]
            conn.execute("INSERT INTO mobileface.images (person_id, file, sha256, model, "
                         "embedding, quality, added, photo) VALUES (%s, 'Ann/a.png', 'x', %s, "
                         "%s, 0.5, 0, %s)", (pid, MODEL, vector, _picture(1)))
        return
    from mobileface.identity.database import APPLICATION_ID, encode_embedding

    Path(spec).mkdir(parents=True)
    conn = sqlite3.connect(Path(spec) / "facebank.sqlite")
    conn.executescript(_SQLITE_V1)
    conn.execute("INSERT INTO images (person_id, file, sha256, model, embedding, quality, "
                 "added) VALUES (1, 'Ann/a.png', 'x', ?, ?, 0.5, 0)",
                 (MODEL, encode_embedding(vector)))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.commit()
    conn.close()


def _schema_version(spec: str) -> str:
    if is_database_url(spec):
        import psycopg

        with psycopg.connect(spec) as conn:
            return conn.execute("SELECT value FROM mobileface.meta WHERE key = 'schema'"
                                ).fetchone()[0]
    with sqlite3.connect(Path(spec) / "facebank.sqlite") as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]


def _set_schema_version(spec: str, version: int) -> None:
    if is_database_url(spec):
        import psycopg

        with psycopg.connect(spec, autocommit=True) as conn:
            conn.execute("UPDATE mobileface.meta SET value = %s WHERE key = 'schema'",
                         (str(version),))
        return
    with sqlite3.connect(Path(spec) / "facebank.sqlite") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(version),))


def test_a_facebank_of_the_previous_schema_is_upgraded_and_keeps_its_people(bank_spec):
    from mobileface.identity.database import SCHEMA_VERSION

    _make_version_1(bank_spec)
    with open_facebank(bank_spec) as bank:
        assert bank.names() == ["Ann"]
        assert _schema_version(bank_spec) == str(SCHEMA_VERSION)
        bank.add("Bob", [_enrol(2)], MODEL)        # the new column is written
        gallery = bank.gallery(MODEL)
        assert gallery.names == ["Ann", "Bob"]
        np.testing.assert_allclose(gallery.embeddings[0], _vector(1), atol=1e-6)
        bank.add("Cy", [_enrol(3)], MODEL)          # the change log (schema 3) has it
        assert bank.gallery(MODEL, previous=gallery).source[2] > gallery.source[2] > 0


def test_a_facebank_of_a_newer_schema_is_refused_untouched(bank_spec):
    with open_facebank(bank_spec) as bank:
        bank.add("Ann", [_enrol(1)], MODEL)
    _set_schema_version(bank_spec, 99)
    with pytest.raises(FacebankError, match="schema version 99.*newer"):
        open_facebank(bank_spec)
    assert _schema_version(bank_spec) == "99"


def test_a_slow_reload_runs_beside_the_pipeline_with_the_last_gallery(bank_spec):
    """A large facebank takes seconds to read: the follower reads it in a thread of its
    own, polls return at once meanwhile, and the last gallery goes on matching."""
    from mobileface.identity.live import GalleryFollower

    with open_facebank(bank_spec) as writer, open_facebank(bank_spec) as reader:
        writer.add("Ann", [_enrol(1)], MODEL)
        follower = GalleryFollower(MODEL, poll_seconds=0.0)
        follower.follow(reader)
        read = reader.gallery

        def slow_gallery(*args, **kwargs):
            time.sleep(1.0)
            return read(*args, **kwargs)

        reader.gallery = slow_gallery
        writer.add("Bob", [_enrol(2)], MODEL)
        polls, start = [], time.monotonic()
        # (a late notice of Ann's own enrolment may bring in a reload before Bob's)
        while follower.gallery.names != ["Ann", "Bob"] and time.monotonic() < start + 10:
            mark = time.monotonic()
            follower.poll()
            polls.append(time.monotonic() - mark)
            [(person, _)] = follower.decide(_vector(1)[None], 0.9, 0.0, "best")
            assert follower.name_of(person) == "Ann"
            time.sleep(0.01)
        assert follower.gallery.names == ["Ann", "Bob"]
        assert time.monotonic() - start >= 1.0 and max(polls) < 0.5 and len(polls) > 10
        [(person, _)] = follower.decide(_vector(2)[None], 0.9, 0.0, "best")
        assert follower.name_of(person) == "Bob"


def test_a_reload_that_fails_in_the_background_keeps_the_gallery_and_is_tried_again(bank_spec):
    from mobileface.identity.live import GalleryFollower

    with open_facebank(bank_spec) as writer, open_facebank(bank_spec) as reader:
        writer.add("Ann", [_enrol(1)], MODEL)
        follower = GalleryFollower(MODEL, poll_seconds=0.0)
        follower.follow(reader)
        read, failures = reader.gallery, []

        def failing_once(*args, **kwargs):
            if not failures:
                failures.append(1)
                raise FacebankError("cannot read the facebank just now")
            return read(*args, **kwargs)

        reader.gallery = failing_once
        writer.add("Bob", [_enrol(2)], MODEL)
        deadline = time.monotonic() + 10
        while follower.gallery.names != ["Ann", "Bob"] and time.monotonic() < deadline:
            follower.poll()
            time.sleep(0.01)
        assert failures == [1] and follower.gallery.names == ["Ann", "Bob"]

        def broken(*args, **kwargs):
            raise RuntimeError("a bug, not a fault of the server")

        reader.gallery = broken
        writer.add("Cy", [_enrol(3)], MODEL)
        with pytest.raises(RuntimeError, match="a bug"):
            for _ in range(500):
                follower.poll()
                time.sleep(0.01)


def test_a_gallery_of_many_photos_holds_each_ones_embedding(bank_spec):
    """More rows than SQLite binds in one statement (999), read in one query."""
    with open_facebank(bank_spec) as bank:
        for person in range(3):
            bank.add(f"P{person}", [_enrol(seed) for seed in range(person * 500, person * 500 + 500)],
                     MODEL)
        gallery = bank.gallery(MODEL)
        assert len(gallery) == 3 and len(gallery.embeddings) == 1500
        for person in range(3):
            rows = gallery.embeddings[gallery.owners == gallery.names.index(f"P{person}")]
            wanted = np.stack([_vector(seed) for seed in range(person * 500, person * 500 + 500)])
            np.testing.assert_allclose(np.sort(rows @ wanted.T, axis=1)[:, -1], 1.0, atol=1e-5)
        assert len(bank._embeddings(gallery.image_ids[:0])) == 0


def _state(gallery) -> list[tuple]:
    """A gallery's rows as (image id, person's name, embedding), in image id order."""
    rows = sorted(zip(gallery.image_ids.tolist(), (gallery.names[o] for o in gallery.owners),
                      (tuple(np.round(e, 5)) for e in gallery.embeddings)))
    return rows


def test_a_reload_reads_only_the_rows_the_change_log_names(bank_spec, monkeypatch):
    """Added, re-embedded, renamed, removed and outlier-flagged rows all come in through
    the change log, and the gallery is the one a full read gives."""
    with open_facebank(bank_spec, outlier_threshold=0.5) as writer, \
            open_facebank(bank_spec) as reader:
        writer.add("Ann", [_enrol(1, 1), _enrol(2, 1)], MODEL)
        writer.add("Bob", [_enrol(30)], MODEL)
        writer.add("Cy", [_enrol(40)], MODEL)
        before = reader.gallery(MODEL)
        assert before.source[2] is not None
        writer.add("Dan", [_enrol(50)], MODEL)
        writer.rename("Bob", "Robert")
        writer.remove("Cy")
        again = _enrol(2, 1)
        writer.add("Ann", [again._replace(embedding=_vector(3, 1))], MODEL)   # re-embedded
        writer.add("Ann", [_enrol(99)], MODEL)                               # flagged
        full_reads = []
        read_all = type(reader)._gallery_rows
        monkeypatch.setattr(type(reader), "_gallery_rows",
                            lambda self, *a: full_reads.append(1) or read_all(self, *a))
        after = reader.gallery(MODEL, previous=before)
        assert full_reads == []                          # only the change log's rows
        assert after.source[2] > before.source[2]
        assert _state(after) == _state(reader.gallery(MODEL)) and full_reads == [1]
        assert sorted(after.names) == ["Ann", "Dan", "Robert"]
        clean = reader.gallery(MODEL, include_outliers=False, previous=after)
        assert _state(clean) == _state(reader.gallery(MODEL, include_outliers=False))
        assert len(clean.image_ids) == len(after.image_ids) - 1
        assert after.names[after.match(_vector(3, 1)).person[0]] == "Ann"


def test_a_reader_further_behind_than_the_log_reads_everything(bank_spec, monkeypatch):
    import mobileface.identity.database as database
    import mobileface.identity.postgres as postgres

    monkeypatch.setattr(database, "KEEP_CHANGES", 3)
    monkeypatch.setattr(postgres, "KEEP_CHANGES", 3)
    with open_facebank(bank_spec) as writer, open_facebank(bank_spec) as reader:
        writer.add("Ann", [_enrol(1)], MODEL)
        before = reader.gallery(MODEL)
        for seed in range(2, 8):                     # six changes: the first ones pruned
            writer.add(f"P{seed}", [_enrol(seed)], MODEL)
        full_reads = []
        read_all = type(reader)._gallery_rows
        monkeypatch.setattr(type(reader), "_gallery_rows",
                            lambda self, *a: full_reads.append(1) or read_all(self, *a))
        after = reader.gallery(MODEL, previous=before)
        assert full_reads == [1] and len(after) == 7
        writer.add("Zed", [_enrol(9)], MODEL)         # one change: the log has it
        latest = reader.gallery(MODEL, previous=after)
        assert full_reads == [1] and len(latest) == 8
        assert _state(latest) == _state(reader.gallery(MODEL))


def test_a_person_renamed_in_the_database_alone_is_seen_by_the_change_log(bank_spec):
    """A rename that touches only the people table (another tool's) is logged too."""
    with open_facebank(bank_spec) as writer, open_facebank(bank_spec) as reader:
        writer.add("Ann", [_enrol(1)], MODEL)
        writer.add("Bob", [_enrol(2)], MODEL)
        before = reader.gallery(MODEL)
        if is_database_url(bank_spec):
            import psycopg

            with psycopg.connect(bank_spec, autocommit=True) as conn:
                conn.execute("UPDATE mobileface.people SET name = 'Bea' WHERE name = 'Bob'")
        else:
            with sqlite3.connect(Path(bank_spec) / "facebank.sqlite") as conn:
                conn.execute("UPDATE people SET name = 'Bea' WHERE name = 'Bob'")
            conn.close()
        after = reader.gallery(MODEL, previous=before)
        assert sorted(after.names) == ["Ann", "Bea"] and after.source[2] > before.source[2]


def test_rows_read_again_go_beside_their_persons_rows():
    from mobileface.identity.store import _grouped

    people = np.array([5, 5, 7, 7, 9, 7, 11, 5, 11, 12])       # 5 kept rows, then 5 read again
    order = _grouped(people, 5)
    grouped = people[order]
    assert [int(p) for p in dict.fromkeys(grouped.tolist())] == [5, 7, 9, 11, 12]
    assert all(np.ptp(np.flatnonzero(grouped == p)) == (grouped == p).sum() - 1 for p in set(people))
    assert [int(i) for i in order if i < 5] == [0, 1, 2, 3, 4]      # kept rows keep their order
    assert list(grouped[:5]) == [5, 5, 5, 7, 7]                     # person 5's new row is beside
    assert _grouped(people[:5], 5) is None
