"""How long a change to a large facebank takes to reach a running pipeline, and that no
frame waits for it.

    python benchmark/reload.py [--photos 200000 1000000] [--json-out reload.json]

Per size, a SQLite facebank of that many people with one photo each (a random
128-dimensional unit vector, the rows written straight into its database: no
model runs, no photo files) in a temporary folder, followed as a pipeline
follows it (:class:`~mobileface.identity.live.GalleryFollower`):

* ``first read``: the gallery read from nothing (with its 1-bit codes from 20,000
  people on), as at the start of a run;
* ``reload``: read again with nothing changed, reusing the last gallery;
* ``change seen``: another connection re-embeds one photo and commits; the time
  until the follower's polls (every 5 ms, as frames would) take the new gallery in;
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
from contextlib import closing
from pathlib import Path

import numpy as np

from mobileface.cli.common import emit_json

MODEL = "synthetic:128"
DIM = 128
#: the follower's polls are given this long to take a change in
SEEN_WITHIN_S = 120.0


def build(folder: Path, photos: int) -> None:
    """A facebank of ``photos`` people, one random unit vector each."""
    from mobileface.identity.facebank import Facebank

    Facebank(folder).close()
    rng = np.random.default_rng(photos)
    with closing(sqlite3.connect(folder / "facebank.sqlite")) as db, db:
        db.executemany("INSERT INTO people (id, name, created) VALUES (?, ?, 0)",
                       ((i + 1, f"person {i:07d}") for i in range(photos)))
        for start in range(0, photos, 100_000):
            chunk = rng.standard_normal((min(100_000, photos - start), DIM)).astype("<f4")
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
            db.executemany("INSERT INTO images (id, person_id, file, sha256, model, embedding, "
                           "quality, added) VALUES (?, ?, ?, '', ?, ?, 0.8, 0)",
                           ((start + i + 1, start + i + 1, "a.jpg", MODEL, row.tobytes())
                            for i, row in enumerate(chunk)))


def measure(photos: int) -> dict:
    from mobileface.identity.facebank import Facebank
    from mobileface.identity.live import GalleryFollower

    with tempfile.TemporaryDirectory(prefix="mobileface-bench-reload-") as root:
        folder = Path(root) / "facebank"
        build(folder, photos)
        with Facebank(folder, read_only=True) as bank:
            follower = GalleryFollower(MODEL, poll_seconds=0.0)
            start = time.perf_counter()
            follower.follow(bank)
            first = time.perf_counter() - start
            start = time.perf_counter()
            bank.gallery(MODEL, previous=follower.gallery)
            unchanged = time.perf_counter() - start
            vector = np.random.default_rng(1).standard_normal(DIM).astype("<f4")
            with closing(sqlite3.connect(folder / "facebank.sqlite")) as writer, writer:
                writer.execute("UPDATE images SET embedding = ?, added = 1 WHERE id = 1",
                               (vector.tobytes(),))
            polls, changed = [], time.perf_counter()
            while time.perf_counter() < changed + SEEN_WITHIN_S:
                mark = time.perf_counter()
                taken = follower.poll()
                polls.append(time.perf_counter() - mark)
                if taken:
                    break
                time.sleep(0.005)
            seen = time.perf_counter() - changed if taken else None
            row = follower.gallery.rows_of(np.array([1]), np.array([1.0]))[0]
            right = bool(taken and row >= 0 and np.allclose(
                follower.gallery.embeddings[row], vector / np.linalg.norm(vector), atol=1e-6))
    return {"photos": photos, "first_read_s": round(first, 2), "reload_s": round(unchanged, 2),
            "change_seen_s": round(seen, 2) if seen is not None else None,
            "longest_poll_ms": round(max(polls) * 1e3, 1), "polls": len(polls),
            "new_embedding_taken": right}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.photos):
        parser.error("--photos must be at least 2")
    print(f"{os.cpu_count()} cores; SQLite facebanks in {tempfile.gettempdir()}",
          file=sys.stderr)
    print(f"{'photos':>10} {'first read s':>13} {'reload s':>9} {'change seen s':>14} "
          f"{'longest poll ms':>16} {'polls':>6}")
    rows = []
    for photos in args.photos:
        r = measure(photos)
        rows.append(r)
        print(f"{photos:>10} {r['first_read_s']:>13.2f} {r['reload_s']:>9.2f} "
              f"{r['change_seen_s'] if r['change_seen_s'] is not None else 'never':>14} "
              f"{r['longest_poll_ms']:>16.1f} {r['polls']:>6}", flush=True)
    emit_json({"benchmark": "reload", "cpu_count": os.cpu_count(), "rows": rows},
              args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
