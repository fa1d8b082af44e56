"""The PostgreSQL facebank with a real server: bad URLs, a server that dies, apps end to end.

The server is real (``postgres`` fixture: PostgreSQL 16 with pgvector on
127.0.0.1, started and stopped by the tests). The end-to-end tests need
../shared's photos and clip and skip without them.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, empty_database, shared_file
from mobileface.identity.errors import FacebankError
from mobileface.identity.live import GalleryFollower
from mobileface.identity.store import Enrolment, open_facebank

LIN = "Lin-Manuel Miranda"
OBAMA = "Barack Obama"
MODEL = "fake:1"
ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobileface", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=ROOT)


def _app(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "apps" / script), *args],
                          capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def url(postgres):
    return empty_database(postgres)


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
    return v / np.linalg.norm(v)


def test_bad_urls_refused_connections_and_wrong_passwords_are_one_line_exit_2(postgres, url):
    port = _free_port()
    cases = {
        f"postgresql://mobileface@127.0.0.1:{port}/facebank": "connection refused",
        url.replace("mobileface-test", "wrong"): "refused the user name or password",
        "postgresql://mobileface@127.0.0.1:notaport/facebank": "bad PostgreSQL URL",
    }
    for bad, reason in cases.items():
        done = _cli("facebank", "list", "--facebank", bad, timeout=60)
        assert done.returncode == 2
        line = _one_line(done.stderr)
        assert reason in line and "wrong" not in line.split("refused")[0].replace(
            "password", ""), line
        assert "127.0.0.1" in line


def test_a_server_killed_in_a_run_and_restarted(postgres, url):
    """Recognition goes on with the last gallery while the server is away, a write then
    fails and changes nothing, and after the restart nothing is lost and a change made
    meanwhile by another process comes in."""
    writer = open_facebank(url)
    writer.add("Ann", [Enrolment(b"a", ".png", "a", _unit(1), 0.8)], MODEL)
    follower = GalleryFollower(MODEL, poll_seconds=0.05)
    reader = open_facebank(url)
    follower.follow(reader)
    assert follower.gallery.names == ["Ann"]
    try:
        postgres.kill()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:          # the run goes on, naming Ann
            follower.poll()
            [(person, similarity)] = follower.decide(_unit(1)[None], 0.9, 0.0, "best")
            assert follower.name_of(person) == "Ann"
            time.sleep(0.05)
        with pytest.raises(FacebankError, match="127.0.0.1"):
            writer.add("Bob", [Enrolment(b"b", ".png", "b", _unit(2), 0.8)], MODEL)
    finally:
        postgres.start()
    # another process enrols Bob once the server is back
    code = ("import numpy as np; from mobileface.identity.store import open_facebank, "
            "Enrolment; v = np.random.default_rng(2).standard_normal(16).astype(np.float32); "
            f"b = open_facebank({url!r}); b.add('Bob', [Enrolment(b'b', '.png', 'b', "
            f"v / np.linalg.norm(v), 0.8)], {MODEL!r}); b.close()")
    assert subprocess.run([sys.executable, "-c", code], timeout=60, env=ENV).returncode == 0
    deadline = time.monotonic() + 20                 # backoff is at most 8 s
    while time.monotonic() < deadline and follower.gallery.names != ["Ann", "Bob"]:
        follower.poll()
        time.sleep(0.05)
    assert follower.gallery.names == ["Ann", "Bob"]
    [(person, _)] = follower.decide(_unit(2)[None], 0.9, 0.0, "best")
    assert follower.name_of(person) == "Bob"
    writer.close()
    reader.close()


# -- the apps, end to end on ../shared ----------------------------------------------------

@pytest.fixture(scope="module")
def enrolled(postgres):
    """Lin-Manuel Miranda and Barack Obama enrolled into PostgreSQL by take_pic, one
    process each."""
    url = empty_database(postgres)
    for name, photo in ((LIN, "lin-manuel-miranda.png"), (OBAMA, "obama.jpg")):
        done = _app("take_pic.py", "-q", "-n", name, "--image",
                    str(shared_file(f"face_recognition/{photo}")), "--facebank", url)
        assert done.returncode == 0, done.stderr
    return url


def _his_tracks(events_path) -> tuple[list[dict], list[dict]]:
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    return events, [e for e in events if e["identity"] == LIN]


def test_infer_on_video_in_another_process_names_him_from_postgresql(enrolled, tmp_path):
    listed = _cli("facebank", "list", "--json", "--facebank", enrolled)
    assert listed.returncode == 0, listed.stderr
    people = {p["name"]: p for p in json.loads(listed.stdout)}
    assert set(people) == {LIN, OBAMA} and people[LIN]["images"] == 1
    clip = shared_file("face_recognition/short_hamilton_clip.mp4")
    done = _app("infer_on_video.py", "-q", "-f", str(clip), "--events",
                str(tmp_path / "events.jsonl"), "--facebank", enrolled)
    assert done.returncode == 0, done.stderr
    events, his = _his_tracks(tmp_path / "events.jsonl")
    assert any(e["first_frame"] <= 90 and e["last_frame"] >= 200 for e in his)
    assert all(e["first_frame"] >= 83 and e["last_frame"] <= 210 or e["last_frame"] <= 19
               for e in his)
    assert not [e for e in events if e["identity"] == OBAMA]


def _wait_for_listener(url: str, run: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run's facebank LISTENs on the server (bounded)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and run.poll() is None:
            if conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'mobileface-listen'").fetchone()[0]:
                return
            time.sleep(0.1)
    raise AssertionError("the run never connected to the facebank")


def test_a_run_survives_the_server_being_killed_and_restarted(enrolled, postgres, tmp_path):
    clip = shared_file("face_recognition/short_hamilton_clip.mp4")
    events = tmp_path / "events.jsonl"
    run = subprocess.Popen([sys.executable, str(ROOT / "apps" / "infer_on_video.py"), "-f",
                            str(clip), "--events", str(events), "--facebank", enrolled],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=ENV, cwd=ROOT)
    try:
        _wait_for_listener(enrolled, run)   # the run has its gallery and follows changes
        time.sleep(1.0)                     # frames are being recognised
        postgres.kill()
        time.sleep(1.5)
        postgres.start()
        _, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        if not postgres.running():
            postgres.start()
    assert run.returncode == 0, stderr
    _, his = _his_tracks(events)
    assert any(e["first_frame"] <= 90 and e["last_frame"] >= 200 for e in his)
    listed = _cli("facebank", "list", "--json", "--facebank", enrolled)
    assert {p["name"] for p in json.loads(listed.stdout)} == {LIN, OBAMA}   # nothing lost


def test_facebank_commands_on_postgresql(enrolled, tmp_path):
    photos = tmp_path / "photos"
    (photos / "Obama Again").mkdir(parents=True)
    (photos / "Obama Again" / "obama.jpg").write_bytes(
        shared_file("face_recognition/obama.jpg").read_bytes())
    done = _cli("facebank", "import", str(photos), "--facebank", enrolled)
    assert done.returncode == 0, done.stderr
    assert "1 picture(s) embedded" in done.stdout and str(photos) in done.stdout
    assert _cli("facebank", "rename", "Obama Again", "Obama Twin", "--facebank",
                enrolled).returncode == 0
    calibrated = _cli("facebank", "calibrate", "--json", "--facebank", enrolled)
    assert calibrated.returncode in (0, 2)
    assert _cli("facebank", "remove", "Obama Twin", "--facebank", enrolled).returncode == 0
    listed = json.loads(_cli("facebank", "list", "--json", "--facebank", enrolled).stdout)
    assert {p["name"] for p in listed} == {LIN, OBAMA}
    no_folder = _cli("facebank", "import", "--facebank", enrolled)
    assert no_folder.returncode == 2 and "give the photo folder" in _one_line(no_folder.stderr)


def test_the_viewer_on_a_postgresql_facebank(qapp, postgres, tmp_path):
    """The viewer's facebank tab on a database: photos enrolled through it land in the
    database, with a thumbnail, and another process's enrolment shows up by itself."""
    from PyQt6.QtWidgets import QApplication

    from mobileface.gui.window import MainWindow
    from mobileface.gui.worker import PipelineHolder

    url = empty_database(postgres)
    window = MainWindow(tmp_path / "viewer.json", url, holder=PipelineHolder())
    window.show()

    def wait(condition, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            QApplication.processEvents()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    try:
        assert "Database: postgresql://mobileface@127.0.0.1" in window.facebank_label.text()
        assert "mobileface-test" not in window.facebank_label.text()
        window.service.call("add_files", LIN,
                            [str(shared_file("face_recognition/lin-manuel-miranda.png"))])
        wait(lambda: window.people_names() == [LIN], "Lin in the list")
        assert window.people_list.item(0).icon() is not None
        with open_facebank(url) as bank:
            assert bank.names() == [LIN]
            bank.add(OBAMA, [Enrolment(b"o", ".png", "o", np.ones(128, np.float32), 0.9)],
                     bank.models()[0])
        wait(lambda: window.people_names() == [OBAMA, LIN] or
             sorted(window.people_names()) == sorted([LIN, OBAMA]), "Obama from elsewhere", 10)
    finally:
        window.close()
        window.service.shutdown()
        QApplication.processEvents()
