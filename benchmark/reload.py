"""How long a change to a large facebank takes to reach a running pipeline, and that no
frame waits for it.

    python benchmark/reload.py [--photos 200000 1000000] [--backends sqlite postgresql]
                               [--json-out reload.json]

Per size and back end, a facebank of that many people with one photo each (a
random 128-dimensional unit vector; the rows written straight into its database,
so no model runs): a SQLite folder, or a throwaway PostgreSQL server with pgvector
on 127.0.0.1 (``postgresql``, not run by default: loading a million rows as text
takes minutes). It is followed as a pipeline follows it
(:class:`~mobileface.identity.live.GalleryFollower`):

* ``first read``: the gallery read from nothing (with its 1-bit codes from 20,000
  people on), as at the start of a run;
* ``reload``: read again with nothing changed, reusing the last gallery;
* ``change seen``: another process's facebank (another connection) adds a photo to
  the first person; the time until the follower's polls (every 5 ms, as frames
  would) take the new gallery in; ``next``: the same for a second photo (the
  first change's commit also pruned the change log of the bulk load);
* ``longest poll``: the longest of those polls, what a frame waited for the reload
  that ran beside it.

Prints a table, then a last line of JSON with a list ``rows``.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np

from mobileface.cli.common import emit_json

MODEL = "synthetic:128"
DIM = 128
#: the follower's polls are given this long to take a change in
SEEN_WITHIN_S = 120.0
_CHUNK = 100_000


def _vectors(photos: int):
    """The gallery's vectors, 100,000 at a time: (first row number, (n, DIM) float32)."""
    rng = np.random.default_rng(photos)
    for start in range(0, photos, _CHUNK):
        chunk = rng.standard_normal((min(_CHUNK, photos - start), DIM)).astype("<f4")
        yield start, chunk / np.linalg.norm(chunk, axis=1, keepdims=True)


@contextmanager
def sqlite_facebank(root: Path, photos: int):
    """The spec of a SQLite facebank of ``photos`` people, one random unit vector each."""
    from mobileface.identity.facebank import Facebank

    folder = root / "facebank"
    Facebank(folder).close()
    with closing(sqlite3.connect(folder / "facebank.sqlite")) as db, db:
        db.executemany("INSERT INTO people (id, name, created) VALUES (?, ?, 0)",
                       ((i + 1, f"person {i:07d}") for i in range(photos)))
        for start, chunk in _vectors(photos):
            db.executemany("INSERT INTO images (id, person_id, file, sha256, model, embedding, "
                           "quality, added) VALUES (?, ?, ?, '', ?, ?, 0.8, 0)",
                           ((start + i + 1, start + i + 1, "a.jpg", MODEL, row.tobytes())
                            for i, row in enumerate(chunk)))
    yield str(folder)


@contextmanager
def postgres_facebank(root: Path, photos: int):
    """The URL of a PostgreSQL facebank of ``photos`` people, on a throwaway server."""
    from mobileface.eval.postgres_server import LocalPostgres
    from mobileface.identity.postgres import PostgresFacebank

    with LocalPostgres(root / "pg") as server:
        bank = PostgresFacebank(server.url)
        with bank._session(write=True) as conn:
            with conn.cursor().copy("COPY mobileface.people (id, name, created) FROM STDIN") as cp:
                for i in range(photos):
                    cp.write_row((i + 1, f"person {i:07d}", 0.0))
            with conn.cursor().copy("COPY mobileface.images (person_id, file, sha256, model, "
                                    "embedding, quality, added, photo) FROM STDIN") as cp:
                for start, chunk in _vectors(photos):
                    for i, row in enumerate(chunk):
                        cp.write_row((start + i + 1, "a.jpg", "", MODEL,
                                      "[" + ",".join(f"{x:.6f}" for x in row) + "]", 0.8, 0.0,
                                      b""))
            conn.execute("SELECT setval(pg_get_serial_sequence('mobileface.people', 'id'), %s)",
                         (photos,))
        bank.close()
        yield server.url


def measure(photos: int, backend: str) -> dict:
    import cv2

    from mobileface.identity.live import GalleryFollower
    from mobileface.identity.store import Enrolment, open_facebank

    make = sqlite_facebank if backend == "sqlite" else postgres_facebank
    with tempfile.TemporaryDirectory(prefix="mobileface-bench-reload-") as root, \
            make(Path(root), photos) as spec, open_facebank(spec, read_only=True) as bank, \
            open_facebank(spec) as writer:
        follower = GalleryFollower(MODEL, poll_seconds=0.0)
        start = time.perf_counter()
        follower.follow(bank)
        first = time.perf_counter() - start
        start = time.perf_counter()
        bank.gallery(MODEL, previous=follower.gallery)
        unchanged = time.perf_counter() - start
        picture = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        polls, seen, right = [], [], True
        for change in (1, 2):
            vector = np.random.default_rng(change).standard_normal(DIM).astype(np.float32)
            writer.add("person 0000000", [Enrolment(picture, ".png", f"added{change}", vector,
                                                    0.8)], MODEL)
            changed, taken = time.perf_counter(), False
            while time.perf_counter() < changed + SEEN_WITHIN_S:
                mark = time.perf_counter()
                taken = follower.poll()
                polls.append(time.perf_counter() - mark)
                if taken:
                    break
                time.sleep(0.005)
            seen.append(round(time.perf_counter() - changed, 2) if taken else None)
            right = right and bool(taken and len(follower.gallery.image_ids) == photos + change
                                   and np.isclose(follower.gallery.embeddings
                                                  @ (vector / np.linalg.norm(vector)), 1.0,
                                                  atol=1e-5).sum() == 1)
    return {"photos": photos, "backend": backend, "first_read_s": round(first, 2),
            "reload_s": round(unchanged, 2), "change_seen_s": seen[0],
            "next_change_seen_s": seen[1], "longest_poll_ms": round(max(polls) * 1e3, 1),
            "polls": len(polls), "new_embedding_taken": right}


def _shown(seconds) -> str:
    return "never" if seconds is None else f"{seconds:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite"])
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.photos):
        parser.error("--photos must be at least 2")
    print(f"{os.cpu_count()} cores; facebanks in {tempfile.gettempdir()}", file=sys.stderr)
    print(f"{'photos':>10} {'backend':<11} {'first read s':>13} {'reload s':>9} "
          f"{'change seen s':>14} {'next s':>7} {'longest poll ms':>16} {'polls':>6}")
    rows = []
    for photos in args.photos:
        for backend in args.backends:
            r = measure(photos, backend)
            rows.append(r)
            print(f"{photos:>10} {backend:<11} {r['first_read_s']:>13.2f} {r['reload_s']:>9.2f} "
                  f"{_shown(r['change_seen_s']):>14} {_shown(r['next_change_seen_s']):>7} "
                  f"{r['longest_poll_ms']:>16.1f} {r['polls']:>6}", flush=True)
    emit_json({"benchmark": "reload", "cpu_count": os.cpu_count(), "rows": rows},
              args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
