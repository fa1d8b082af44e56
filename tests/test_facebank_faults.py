"""The facebank under hostile conditions: two writers at once, names that are the store's own
files or hide characters, a full disk, folders and databases that cannot be written or are
damaged, undecodable folder names, read-only facebanks, other applications' SQLite files, and
re-embed hints that must work when pasted.

Every failure must reach a user as one line: a FacebankError from the library, one line and
a non-zero exit from ``python -m mobileface facebank``.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mobileface.cli import facebank as facebank_cli
from mobileface.cli.main import main
from mobileface.identity.facebank import DB_NAME, TRASH, Facebank, FacebankError, check_name

MODEL = "fake:test"


def _vector(name: str) -> np.ndarray:
    """A unit vector per file name: the stand-in for a face model."""
    seed = int.from_bytes(hashlib.sha256(os.fsencode(name)).digest()[:4], "little")
    v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return v / np.linalg.norm(v)


def _embed(path: Path):
    return _vector(path.name), 0.8


def _picture(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", pixels)   # not imwrite: it crashes on undecodable names
    with open(path, "wb") as out:
        out.write(data.tobytes())


def _folder(root: Path, layout: dict[str, list[str]]) -> Path:
    for seed, (name, files) in enumerate(layout.items()):
        for k, file in enumerate(files):
            _picture(root / name / file, 100 * seed + k)
    return root


def _rows(folder: Path) -> list[tuple[str, str]]:
    """(person, file) of every row, read with a plain connection."""
    with sqlite3.connect(folder / DB_NAME) as conn:
        return sorted(conn.execute("SELECT p.name, i.file FROM images i JOIN people p "
                                   "ON p.id = i.person_id").fetchall())


def _leftovers(folder: Path) -> list[str]:
    """Files in the folder that are neither the database nor a photo with a row."""
    rows = {file for _, file in _rows(folder)} if (folder / DB_NAME).exists() else set()
    out = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith(DB_NAME) and relative not in rows:
            out.append(relative)
    return sorted(out)


class FakeEnroller:
    """What the CLI's ``enroller(args)`` gives, without models: the model id names
    --embedder, so that a command run with another --embedder makes other embeddings."""

    threshold = None

    def __init__(self, args):
        self.model_id = f"fake:{args.embedder}"

    def embedding_and_quality(self, path):
        return _embed(Path(path))

    def embed_image(self, image, label, several="refuse"):
        from mobileface.identity.store import Enrolment

        embedding = _vector(Path(label).name)
        return SimpleNamespace(embedding=embedding, quality=0.8, enrolment=lambda stem, data,
                               suffix: Enrolment(data, suffix, stem, embedding, 0.8, b"chip"))


@pytest.fixture
def fake_cli(monkeypatch, tmp_path):
    """The facebank CLI with FakeEnroller (and a fake embedder for calibrate), run in
    tmp_path: a command that forgets --facebank must not write ./facebank of the checkout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOBILEFACE_FACEBANK", str(tmp_path / "default facebank"))
    monkeypatch.setattr(facebank_cli, "enroller", FakeEnroller)
    import mobileface.stages.embed as embed

    monkeypatch.setattr(embed, "create_embedder",
                        lambda spec, runtime=None: SimpleNamespace(model_id=f"fake:{spec}",
                                                                   threshold=0.5))


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() points the mobileface logger at the stderr of its time and stops it
    propagating: put it back, so that caplog sees the library's warnings afterwards."""
    logger = logging.getLogger("mobileface")
    state = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers, logger.propagate = state[0], state[1]
    logger.setLevel(state[2])


def _one_line_error(err: str) -> str:
    """The CLI's stderr holds exactly one line, an error, and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mobileface: error: "), err
    return lines[0]


# -- 7a: two writers at once ------------------------------------------------------------

_IMPORTER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from mobileface.cli import facebank as facebank_cli
    from mobileface.cli.main import main

    sync, folder = Path(sys.argv[1]), sys.argv[2]
    started = []

    def wait_for_the_other():
        # both processes have read the facebank and scanned the folder before either writes
        (sync / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 30
        while len(list(sync.glob("ready-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    class Enroller:
        model_id, threshold = "fake:dlib", None

        def embedding_and_quality(self, path):
            if not started:
                started.append(1)
                wait_for_the_other()
            return np.full(8, 1 / 8 ** 0.5, np.float32), 0.8

    facebank_cli.enroller = lambda args: Enroller()
    sys.exit(main(["facebank", "import", "--facebank", folder]))
""")


def test_two_imports_at_once_both_succeed_and_store_each_photo_once(tmp_path):
    bank = _folder(tmp_path / "bank", {"Ann": ["a1.png", "a2.png"], "Bob": ["b1.png"],
                                       "Cid": ["c1.png", "c2.png", "c3.png"]})
    sync = tmp_path / "sync"
    sync.mkdir()
    script = tmp_path / "importer.py"
    script.write_text(_IMPORTER)
    procs = [subprocess.Popen([sys.executable, str(script), str(sync), str(bank)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail("an import did not finish within 120 s")
        results.append((proc.returncode, out, err))
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err
        assert "imported" in out
    assert len(list(sync.glob("ready-*"))) == 2   # they did overlap
    assert _rows(bank) == [("Ann", "Ann/a1.png"), ("Ann", "Ann/a2.png"), ("Bob", "Bob/b1.png"),
                           ("Cid", "Cid/c1.png"), ("Cid", "Cid/c2.png"), ("Cid", "Cid/c3.png")]
    with sqlite3.connect(bank / DB_NAME) as conn:
        assert conn.execute("SELECT count(*) FROM people").fetchone()[0] == 3


def test_an_import_does_not_drop_what_another_writer_added_meanwhile(tmp_path, monkeypatch):
    """Rows committed by another writer after this import scanned the folder are kept."""
    folder = _folder(tmp_path, {"Ann": ["a1.png"]})
    bank, other = Facebank(folder), Facebank(folder)
    calls = []

    def embed(path):
        if not calls:     # while this import embeds, someone adds Bob
            other.add("Bob", [(b"bob", ".jpg", "cam", _vector("bob"), 0.9)], MODEL)
        calls.append(path)
        return _embed(path)

    report = bank.import_folder(embed, MODEL)
    assert report.removed == [] and report.people_removed == []
    assert [name for name, _ in _rows(folder)] == ["Ann", "Bob"]


# -- 7b, 7g: names ----------------------------------------------------------------------

@pytest.mark.parametrize("name", [DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm",
                                  DB_NAME + "-journal", "FaceBank.SQLite", TRASH])
def test_the_names_of_the_store_files_are_refused(tmp_path, name):
    with pytest.raises(FacebankError):
        check_name(name)
    bank = Facebank(tmp_path)
    with pytest.raises(FacebankError):
        bank.add(name, [(b"x", ".jpg", "cam", _vector("x"), 0.9)], MODEL)
    assert bank.names() == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == []


def test_renaming_a_person_to_the_database_name_is_one_line(tmp_path, capsys):
    bank = Facebank(tmp_path)
    bank.add("Ann", [(b"x", ".jpg", "cam", _vector("x"), 0.9)], MODEL)
    bank.close()
    code = main(["facebank", "rename", "Ann", DB_NAME + "-journal", "--facebank", str(tmp_path)])
    assert code != 0
    _one_line_error(capsys.readouterr().err)
    assert Facebank(tmp_path).names() == ["Ann"]


@pytest.mark.parametrize("name", ["\ufeffObama", "Oba\u200bma", "\u202eamabO", "Obama\u200e",
                                  "Ob\u0085ama", "Ob\ue000ama", "Ob\udcffama", "Oba\u2028ma",
                                  "Ob\x00ama"])
def test_names_with_invisible_or_undecodable_characters_are_refused(name):
    with pytest.raises(FacebankError) as caught:
        check_name(name)
    assert "\n" not in str(caught.value)


def test_names_are_normalised_to_nfc(tmp_path):
    decomposed = "Zoe\u0301"          # e + combining acute accent
    assert check_name(decomposed) == "Zo\u00e9"
    bank = Facebank(tmp_path)
    bank.add(decomposed, [(b"x", ".jpg", "cam", _vector("x"), 0.9)], MODEL)
    bank.add("Zo\u00e9", [(b"y", ".jpg", "cam", _vector("y"), 0.9)], MODEL)
    assert [(p.name, p.images) for p in bank.people()] == [("Zo\u00e9", 2)]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["Zo\u00e9"]


def test_a_folder_whose_name_is_not_nfc_is_skipped_with_its_nfc_name(tmp_path, caplog):
    folder = _folder(tmp_path, {"Zoe\u0301": ["z1.png"], "Ann": ["a1.png"]})
    with caplog.at_level(logging.WARNING, logger="mobileface"):
        Facebank(folder).import_folder(_embed, MODEL)
    assert Facebank(folder).names() == ["Ann"]
    assert "'Zo\u00e9'" in caplog.text and "rename" in caplog.text


# -- 7c: a full disk ------------------------------------------------------------------------

def _enrolments(*stems):
    return [(f"picture {stem}".encode(), ".jpg", stem, _vector(stem), 0.9) for stem in stems]


def test_a_full_disk_while_writing_a_photo_leaves_nothing(tmp_path, monkeypatch):
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("old"), MODEL)
    before = _rows(tmp_path)
    real_write = Path.write_bytes

    def write_bytes(self, data):
        if "two" in self.name or "four" in self.name:   # half written, then the disk is full
            real_write(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(FacebankError, match="^no space left") as caught:
        bank.add("Ann", _enrolments("one", "two"), MODEL)
    assert "\n" not in str(caught.value)
    with pytest.raises(FacebankError, match="^no space left"):
        bank.add("Bob", _enrolments("three", "four"), MODEL)
    assert _rows(tmp_path) == before
    assert _leftovers(tmp_path) == []                       # no .tmp, no orphan photo
    assert not (tmp_path / "Bob").exists()                  # nor the new person's folder


def test_a_full_disk_when_moving_a_photo_into_place_leaves_nothing(tmp_path, monkeypatch):
    bank = Facebank(tmp_path)

    def replace(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(FacebankError, match="^no space left"):
        bank.add("Ann", _enrolments("one"), MODEL)
    monkeypatch.undo()
    assert _rows(tmp_path) == [] and _leftovers(tmp_path) == []
    assert bank.names() == []


def test_a_full_database_after_the_photos_were_copied_rolls_both_back(tmp_path):
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("old"), MODEL)
    before = _rows(tmp_path)
    pages = bank._conn.execute("PRAGMA page_count").fetchone()[0]
    bank._conn.execute(f"PRAGMA max_page_count = {pages}")   # the database cannot grow
    big = [(b"photo %d" % k, ".jpg", f"big{k}", np.ones(4096, np.float32), 0.9)
           for k in range(3)]
    with pytest.raises(FacebankError, match="^no space left") as caught:
        bank.add("Ann", big, MODEL)
    assert "\n" not in str(caught.value)
    assert _rows(tmp_path) == before and _leftovers(tmp_path) == []
    assert [p.images for p in bank.people()] == [1]


def test_a_full_disk_during_cli_add_is_one_line(tmp_path, monkeypatch, capsys, fake_cli):
    photo = tmp_path / "ann.png"
    _picture(photo, 1)
    bank = tmp_path / "bank"

    def write_bytes(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    code = main(["facebank", "add", "Ann", str(photo), "--facebank", str(bank)])
    assert code != 0
    assert "no space left" in _one_line_error(capsys.readouterr().err)
    monkeypatch.undo()
    assert _rows(bank) == [] and _leftovers(bank) == []


# -- 7d: folders that cannot be written, damaged databases --------------------------------

def test_a_person_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("old"), MODEL)

    def write_bytes(self, data):     # chmod 0o555 does not stop root: simulate what it does
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(FacebankError, match="ermission denied") as caught:
        bank.add("Ann", _enrolments("new"), MODEL)
    assert "\n" not in str(caught.value) and "Ann" in str(caught.value)
    monkeypatch.undo()
    assert _rows(tmp_path) == [("Ann", "Ann/old-" + _digest("old") + ".jpg")]
    assert _leftovers(tmp_path) == []


def _digest(stem: str) -> str:
    return hashlib.sha256(f"picture {stem}".encode()).hexdigest()[:10]


def test_a_trash_that_cannot_be_written_leaves_the_person(tmp_path, monkeypatch):
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("one"), MODEL)

    def rename(src, dst, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src))

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "move", rename)
    with pytest.raises(FacebankError, match="ermission denied"):
        bank.remove("Ann")
    with pytest.raises(FacebankError, match="ermission denied"):
        bank.rename("Ann", "Anna")
    monkeypatch.undo()
    assert bank.names() == ["Ann"] and (tmp_path / "Ann").is_dir()


@pytest.mark.parametrize("damage", ["DROP TABLE images", "DROP TABLE people",
                                    "ALTER TABLE images DROP COLUMN quality"])
def test_a_database_with_a_damaged_schema_is_one_line(tmp_path, capsys, damage):
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("one"), MODEL)
    bank.close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(damage)
    with pytest.raises(FacebankError, match="damaged"):
        Facebank(tmp_path)
    for command in (["list"], ["remove", "Ann"], ["rename", "Ann", "Anna"]):
        assert main(["facebank", *command, "--facebank", str(tmp_path)]) != 0
        assert "damaged" in _one_line_error(capsys.readouterr().err)


def test_a_table_dropped_while_the_facebank_is_open_is_one_line(tmp_path):
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("one"), MODEL)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("DROP TABLE images")
    for call in (bank.people, bank.models, lambda: bank.gallery(MODEL),
                 lambda: bank.add("Bob", _enrolments("two"), MODEL),
                 lambda: bank.import_folder(_embed, MODEL)):
        with pytest.raises(FacebankError) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "Bob").exists()


@pytest.mark.parametrize("where", ["header", "schema", "images"])
def test_a_database_overwritten_with_garbage_is_one_line(tmp_path, capsys, where):
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("one"), MODEL)
    bank.close()
    db = tmp_path / DB_NAME
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        images = conn.execute("SELECT rootpage FROM sqlite_master "
                              "WHERE name = 'images'").fetchone()[0]
    conn.close()
    start = {"header": 0, "schema": 100, "images": (images - 1) * page_size}[where]
    data = bytearray(db.read_bytes())
    end = len(data) if where != "images" else start + page_size
    data[start:end] = (bytes(range(256)) * (page_size // 256 + len(data) // 256))[: end - start]
    db.write_bytes(bytes(data))
    for command in (["list"], ["list", "--json"]):
        assert main(["facebank", *command, "--facebank", str(tmp_path)]) != 0
        _one_line_error(capsys.readouterr().err)
    with pytest.raises(FacebankError):
        with Facebank(tmp_path) as bank:
            bank.gallery(MODEL)


# -- 7e: undecodable folder and file names --------------------------------------------------

def test_a_folder_name_that_is_not_utf8_is_skipped_and_the_rest_imported(tmp_path, caplog):
    folder = _folder(tmp_path / "bank", {"Ann": ["a1.png"], "Bob": ["b1.png"]})
    odd = os.path.join(os.fsencode(folder), b"\xff\xfe")
    os.mkdir(odd)
    _picture(Path(os.fsdecode(os.path.join(odd, b"x.png"))), 3)
    _picture(Path(os.fsdecode(os.path.join(os.fsencode(folder / "Bob"), b"\xe9t\xe9.png"))), 4)
    bank = Facebank(folder)
    with caplog.at_level(logging.WARNING, logger="mobileface"):
        report = bank.import_folder(_embed, MODEL)
    assert bank.names() == ["Ann", "Bob"]
    assert sorted(report.added) == ["Ann/a1.png", "Bob/b1.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("\\xff\\xfe" in w for w in warnings), warnings      # the folder is named
    assert any("\\xe9t\\xe9.png" in w for w in warnings), warnings  # and so is the file
    for warning in warnings:
        warning.encode("utf-8")                                     # printable as it is


def test_an_undecodable_stem_is_stored_under_a_safe_name(tmp_path):
    bank = Facebank(tmp_path)
    files = bank.add("Ann", [(b"x", ".jpg", os.fsdecode(b"caf\xe9"), _vector("x"), 0.9),
                             (b"y", ".jpg", ".hidden", _vector("y"), 0.9)], MODEL)
    for file in files:
        file.encode("utf-8")
        assert not Path(file).name.startswith(".")
    # an import finds them again: nothing is dropped
    report = bank.import_folder(_embed, MODEL)
    assert report.removed == [] and report.kept == 2


def test_a_person_folder_that_cannot_be_listed_keeps_its_person(tmp_path, monkeypatch, caplog):
    folder = _folder(tmp_path, {"Ann": ["a1.png"], "Bob": ["b1.png"]})
    bank = Facebank(folder)
    bank.import_folder(_embed, MODEL)
    _picture(folder / "Ann" / "a2.png", 5)
    real_iterdir = Path.iterdir

    def iterdir(self):            # chmod 0o000 does not stop root: simulate what it does
        if self.name == "Bob":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with caplog.at_level(logging.WARNING, logger="mobileface"):
        report = bank.import_folder(_embed, MODEL)
    assert report.added == ["Ann/a2.png"] and report.removed == []
    assert [(p.name, p.images) for p in bank.people()] == [("Ann", 2), ("Bob", 1)]
    assert "Bob" in caplog.text


def test_a_picture_that_imports_would_drop_is_refused(tmp_path, capsys, fake_cli):
    """A picture stored under a suffix imports do not read would be dropped by the next one."""
    bank = Facebank(tmp_path / "bank")
    for suffix in (".pgm", ""):
        with pytest.raises(FacebankError, match="keeps"):
            bank.add("Ann", [(b"x", suffix, "scan", _vector("x"), 0.9)], MODEL)
    assert bank.names() == [] and _leftovers(tmp_path / "bank") == []
    good, odd = tmp_path / "ann.png", tmp_path / "ann.pgm"
    _picture(good, 1)
    _picture(odd, 2)
    code = main(["facebank", "add", "Ann", str(odd), str(good), "--facebank",
                 str(tmp_path / "bank")])
    assert code == 1                                   # one picture refused, by name
    err = capsys.readouterr().err
    assert "ann.pgm" in err and "Traceback" not in err
    report = Facebank(tmp_path / "bank").import_folder(_embed, "fake:dlib")
    assert report.removed == [] and report.kept == 1


# -- 7f: read-only facebanks -----------------------------------------------------------------

def _enrolled(folder: Path) -> Path:
    _folder(folder, {"Ann": ["a1.png", "a2.png"], "Bob": ["b1.png"]})
    with Facebank(folder) as bank:
        bank.import_folder(_embed, MODEL)
    return folder


def test_a_facebank_opened_read_only_recognises_and_refuses_changes(tmp_path):
    folder = _enrolled(tmp_path / "bank")
    db = (folder / DB_NAME).read_bytes()
    bank = Facebank(folder, read_only=True)
    assert bank.read_only
    gallery = bank.gallery(MODEL)
    assert gallery.names == ["Ann", "Bob"] and len(gallery.embeddings) == 3
    for change in (lambda: bank.add("Cid", _enrolments("c"), MODEL),
                   lambda: bank.rename("Ann", "Anna"), lambda: bank.remove("Ann"),
                   lambda: bank.import_folder(_embed, MODEL)):
        with pytest.raises(FacebankError, match="read-only"):
            change()
    bank.close()
    assert (folder / DB_NAME).read_bytes() == db
    assert not (folder / "Cid").exists() and (folder / "Ann").is_dir()


def test_a_folder_that_cannot_be_written_opens_read_only(tmp_path, monkeypatch):
    folder = _enrolled(tmp_path / "bank")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode & os.W_OK
                        else real_access(path, mode, **kw))
    bank = Facebank(folder)
    assert bank.read_only and bank.gallery(MODEL).names == ["Ann", "Bob"]
    with pytest.raises(FacebankError, match="read-only"):
        bank.add("Cid", _enrolments("c"), MODEL)


def test_a_read_only_folder_without_a_database_is_an_empty_facebank(tmp_path):
    bank = Facebank(tmp_path, read_only=True)
    assert bank.names() == [] and len(bank.gallery(MODEL)) == 0
    assert not (tmp_path / DB_NAME).exists()


def _can_mount_read_only() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


_READER = textwrap.dedent("""
    import sys
    from mobileface.identity.facebank import Facebank, FacebankError
    bank = Facebank(sys.argv[1])
    print("names", bank.gallery(sys.argv[2]).names, getattr(bank, "read_only", None))
    try:
        bank.add("Cid", [(b"c", ".jpg", "c", [1.0] * 8, 0.9)], sys.argv[2])
    except FacebankError as exc:
        print("refused", exc)
""")


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs root and mount namespaces "
                                                      "(a real read-only mount)")
@pytest.mark.parametrize("open_writer", [False, True])
def test_a_facebank_on_a_read_only_mount_recognises(tmp_path, open_writer):
    """A real read-only file system (chmod does not stop root): the folder bind-mounted read
    only in a private mount namespace. With no writer open there is no -shm file and none can
    be made; with one open, the writer's -wal and -shm are there."""
    folder = _enrolled(tmp_path / "bank")
    (tmp_path / "reader.py").write_text(_READER)
    writer = Facebank(folder) if open_writer else None
    if writer is not None:
        writer.add("Dan", _enrolments("d"), MODEL)          # in the WAL, not checkpointed
    quoted = shlex.quote(str(folder))
    command = (f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted} && "
               f"{shlex.quote(sys.executable)} {shlex.quote(str(tmp_path / 'reader.py'))} "
               f"{quoted} {MODEL} && {shlex.quote(sys.executable)} -m mobileface facebank list "
               f"--facebank {quoted}")
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    expected = ["Ann", "Bob", "Dan"] if open_writer else ["Ann", "Bob"]
    assert f"names {expected} True" in done.stdout, done.stdout
    assert "refused" in done.stdout and "read-only" in done.stdout
    assert "Ann" in done.stdout.split("\n", 2)[-1]            # facebank list printed people
    if writer is not None:
        writer.close()


# -- 7h: another application's SQLite file ---------------------------------------------------

def _foreign(folder: Path) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        conn.execute("INSERT INTO orders (item) VALUES ('tea')")
    conn.close()
    return (folder / DB_NAME).read_bytes()


def _tables(db: Path) -> list[str]:
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
        return [n for (n,) in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]


def test_another_applications_sqlite_file_is_refused_untouched(tmp_path, capsys):
    before = _foreign(tmp_path)
    with pytest.raises(FacebankError, match="not a facebank"):
        Facebank(tmp_path)
    with pytest.raises(FacebankError, match="not a facebank"):
        Facebank(tmp_path, read_only=True)
    for command in (["list"], ["rename", "A", "B"]):
        assert main(["facebank", *command, "--facebank", str(tmp_path)]) != 0
        assert "not a facebank" in _one_line_error(capsys.readouterr().err)
    assert (tmp_path / DB_NAME).read_bytes() == before
    assert _tables(tmp_path / DB_NAME) == ["orders"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]


def test_a_facebank_made_before_the_marker_still_opens(tmp_path):
    """A facebank.sqlite of the first schema (no application id) is still a facebank."""
    schema = ("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
              "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
              "created REAL NOT NULL);"
              "CREATE TABLE images (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL "
              "REFERENCES people(id) ON DELETE CASCADE, file TEXT NOT NULL, sha256 TEXT NOT "
              "NULL, model TEXT NOT NULL, embedding BLOB NOT NULL, quality REAL NOT NULL, "
              "outlier INTEGER NOT NULL DEFAULT 0, added REAL NOT NULL, UNIQUE (person_id, file));"
              "INSERT INTO meta VALUES ('schema', '1');")
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.executescript(schema)
    conn.close()
    bank = Facebank(tmp_path)
    bank.add("Ann", _enrolments("one"), MODEL)
    assert bank.names() == ["Ann"]


def test_an_empty_sqlite_file_becomes_a_facebank(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"")
    assert Facebank(tmp_path).names() == []


# -- 11: re-embed hints that work when pasted --------------------------------------------------

def _hint(err: str) -> list[str]:
    line = _one_line_error(err)
    assert "python -m mobileface facebank import --reembed" in line, line
    command = shlex.split(line[line.index("python -m mobileface"):])
    assert command[:3] == ["python", "-m", "mobileface"]
    return command[3:]


@pytest.mark.parametrize("first", [["import"], ["add", "Zed", "PHOTO"], ["calibrate"]])
def test_the_reembed_hint_works_when_pasted(tmp_path, capsys, fake_cli, first):
    folder = _folder(tmp_path / "my bank", {"Ann": ["a1.png", "a2.png"], "Bob": ["b1.png"]})
    photo = tmp_path / "zed.png"
    _picture(photo, 9)
    assert main(["facebank", "import", "--facebank", str(folder), "--embedder", "old"]) == 0
    capsys.readouterr()
    command = ["facebank"] + [str(photo) if w == "PHOTO" else w for w in first]
    code = main(command + ["--facebank", str(folder), "--embedder", "new one"])
    assert code != 0
    hint = _hint(capsys.readouterr().err)
    assert main(hint) == 0, capsys.readouterr().err
    with Facebank(folder) as bank:
        assert bank.models() == ["fake:new one"]
        assert bank.names() == ["Ann", "Bob"]


def test_the_library_hint_names_the_facebank_and_embedder(tmp_path):
    folder = _enrolled(tmp_path / "a bank")
    bank = Facebank(folder, embedder="spec.json")
    for call in (lambda: bank.gallery("other:1"),
                 lambda: bank.import_folder(_embed, "other:1")):
        with pytest.raises(FacebankError) as caught:
            call()
        words = shlex.split(str(caught.value).split("with: ", 1)[1])
        assert words[3:] == ["facebank", "import", "--reembed", "--facebank", str(folder),
                             "--embedder", "spec.json"]


def test_without_the_spec_the_hint_names_dlib_or_asks_for_the_spec(tmp_path):
    folder = _enrolled(tmp_path / "bank")
    bank = Facebank(folder)
    with pytest.raises(FacebankError) as caught:
        bank.gallery("dlib_resnet_v1-int8:0123")
    assert shlex.split(str(caught.value).split("with: ", 1)[1])[-2:] == ["--embedder",
                                                                         "dlib-int8"]
    with pytest.raises(FacebankError, match="--embedder SPEC .SPEC: the spec .json"):
        bank.gallery("arcface:0123")
