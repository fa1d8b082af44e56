"""Gallery search at 10k to 1M identities: exact numpy, the 1-bit codes, pgvector.

    python benchmark/gallery.py [--identities 10000 100000 1000000] [--queries 300]
                                [--vectors random|shared] [--pg-max 100000]
                                [--json-out results.json]

Synthetic galleries, made here and never stored: one unit vector per identity,
of the default embedder's dimension (128). ``--vectors random`` (the default):
random directions, strangers at cosine about 0 to everyone. ``--vectors shared``:
every vector leans on one common direction, as dlib's uncentred embeddings do, so
that strangers are at cosine about 0.85 and the nearest of a million at about
0.91. Queries are noisy copies of enrolled vectors (cosine about 0.95 to the
original, above the embedder's threshold of 0.92) and as many strangers (fresh
vectors of the same kind). Each size and back end runs in a fresh child process,
so that its memory is its own:

* ``numpy``: :class:`~mobileface.identity.gallery.Gallery` searched exactly;
* ``codes``: the same gallery with its 1-bit codes (what a pipeline uses from
  20,000 people on, :mod:`~mobileface.identity.search`);
* ``pgvector``: the PostgreSQL facebank's server-side search
  (:meth:`~mobileface.identity.postgres.PostgresFacebank.nearest`, pgvector's HNSW
  index), on a throwaway local server; ``pgvector-exact`` is the same query with
  index scans off (brute force, fewer queries). Up to --pg-max identities: loading
  and indexing a million rows on two cores takes longer than the rest together.

Per row (``str p99``: one stranger's latency): build time, the child's resident memory once the gallery is built and
searched (``rss_mb``) and its peak (``peak_rss_mb``, which also counts the
benchmark's own copy of the vectors), query latency p50/p99 for one face
and per face in batches of 8, recall@1 against the exact answer, and the share
of strangers given a name (threshold and margin of the default embedder and
pipeline). A table, then a last line of JSON with a list ``rows``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from mobileface.cli.common import emit_json

DIM = 128
#: the default embedder's threshold and the pipeline's margin
THRESHOLD, MARGIN = 0.92, 0.03
NOISE = 0.029          # per dimension: cosine about 0.95 to the enrolled vector
#: ``--vectors shared``: the common direction's length against unit Gaussian noise
#: per dimension (strangers at cosine about 0.85)
SHARED = 27.0
MODEL = "synthetic:128"


def unit(rows: int, seed: int, kind: str = "random") -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    common *= SHARED / np.linalg.norm(common) if kind == "shared" else 0.0
    out = np.empty((rows, DIM), np.float32)
    for start in range(0, rows, 100_000):              # chunks: no float64 copy of 1M rows
        chunk = rng.standard_normal((min(100_000, rows - start), DIM), dtype=np.float32)
        chunk += common
        out[start:start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def workload(identities: int, queries: int, kind: str):
    gallery = unit(identities, identities, kind)
    rng = np.random.default_rng(1)
    targets = rng.choice(identities, queries, replace=False)
    genuine = gallery[targets] + NOISE * rng.standard_normal((queries, DIM), dtype=np.float32)
    genuine /= np.linalg.norm(genuine, axis=1, keepdims=True)
    strangers = unit(queries, identities + 7, kind)
    return gallery, targets, genuine, strangers


def exact_top1(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.concatenate([np.argmax(queries[i:i + 64] @ gallery.T, axis=1)
                           for i in range(0, len(queries), 64)])


def timed(function, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        function(item)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def run_memory(backend: str, identities: int, queries: int, kind: str) -> dict:
    from mobileface.identity.gallery import Gallery

    vectors, targets, genuine, strangers = workload(identities, queries, kind)
    truth = exact_top1(vectors, genuine)
    start = time.perf_counter()
    gallery = Gallery(np.arange(identities), [f"id{i}" for i in range(identities)], vectors,
                      np.arange(identities), MODEL,
                      exact_below=0 if backend == "codes" else identities + 1)
    build_s = time.perf_counter() - start
    del vectors
    match = gallery.match

    one = timed(lambda q: match(q[None]), genuine)
    batches = [genuine[i:i + 8] for i in range(0, len(genuine) - 7, 8)]
    eight = [t / 8 for t in timed(match, batches)]
    found = match(genuine)
    recall = float(np.mean(found.person == truth))
    stranger = timed(lambda q: match(q[None]), strangers)
    named = match(strangers).decide(THRESHOLD, MARGIN)
    out = row(backend, identities, build_s, one, eight, recall, float(np.mean(named >= 0)))
    out["stranger_p99_ms"] = round(float(np.percentile(stranger, 99)), 3)
    return out


def run_pgvector(backend: str, identities: int, queries: int, kind: str) -> dict:
    from mobileface.eval.postgres_server import LocalPostgres
    from mobileface.identity.postgres import PostgresFacebank

    vectors, targets, genuine, strangers = workload(identities, queries, kind)
    truth = exact_top1(vectors, genuine)
    exact = backend == "pgvector-exact"
    if exact:       # a full scan per query: fewer of them
        genuine, strangers, truth = genuine[:20], strangers[:20], truth[:20]
    with tempfile.TemporaryDirectory(prefix="mobileface-bench-pg-") as root, \
            LocalPostgres(root) as server:
        bank = PostgresFacebank(server.url)
        start = time.perf_counter()
        with bank._session(write=True) as conn:
            with conn.cursor().copy("COPY mobileface.people (id, name, created) FROM STDIN") as cp:
                for i in range(identities):
                    cp.write_row((i, f"id{i}", 0.0))
            with conn.cursor().copy("COPY mobileface.images (person_id, file, sha256, model, "
                                    "embedding, quality, added, photo) FROM STDIN") as cp:
                for i in range(identities):
                    cp.write_row((i, f"id{i}/a.jpg", "", MODEL,
                                  "[" + ",".join(f"{x:.6f}" for x in vectors[i]) + "]",
                                  1.0, 0.0, b""))
        bank.ensure_search_index(MODEL, DIM)
        build_s = time.perf_counter() - start
        del vectors

        def decide(batch):
            found = bank.nearest(batch, MODEL, k=16, exact=exact)
            out = []
            for hits in found:
                best = hits[0] if hits else (None, -1, -1.0)
                second = max((s for _, p, s in hits if p != best[1]), default=-1.0)
                out.append((best[1], best[2], second))
            return out

        one = timed(lambda q: decide(q[None]), genuine)
        batches = [genuine[i:i + 8] for i in range(0, len(genuine) - 7, 8)]
        eight = [t / 8 for t in timed(decide, batches)]
        recall = float(np.mean([p == t for (p, _, _), t in zip(decide(genuine), truth)]))
        named = [b >= THRESHOLD and b - s >= MARGIN for _, b, s in decide(strangers)]
        bank.close()
    return row(backend, identities, build_s, one, eight, recall, float(np.mean(named)))


def row(backend, identities, build_s, one, eight, recall, far) -> dict:
    return {"identities": identities, "backend": backend, "build_s": round(build_s, 2),
            "p50_ms": round(float(np.percentile(one, 50)), 3),
            "p99_ms": round(float(np.percentile(one, 99)), 3),
            "batch8_p50_ms": round(float(np.percentile(eight, 50)), 3) if eight else None,
            "batch8_p99_ms": round(float(np.percentile(eight, 99)), 3) if eight else None,
            "recall_at_1": round(recall, 4), "false_accept_rate": round(far, 4),
            "rss_mb": round(_resident_mb(), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _resident_mb() -> float:
    """This process's resident memory now (the gallery built and searched), MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> int:
    run = run_pgvector if args.one_backend.startswith("pgvector") else run_memory
    print(json.dumps(run(args.one_backend, args.one_size, args.queries, args.vectors)))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--backends", nargs="+",
                        default=["numpy", "codes", "pgvector", "pgvector-exact"],
                        choices=["numpy", "codes", "pgvector", "pgvector-exact"])
    parser.add_argument("--vectors", choices=["random", "shared"], default="random",
                        help="random directions, or leaning on one shared direction")
    parser.add_argument("--pg-max", type=int, default=100_000,
                        help="largest gallery loaded into PostgreSQL")
    parser.add_argument("--json-out")
    parser.add_argument("--one-backend", help=argparse.SUPPRESS)
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(n < 16 for n in args.identities) or args.queries < 16:
        parser.error("--identities and --queries must be at least 16")
    if args.one_backend:
        return child(args)
    flags = sorted({f for line in open("/proc/cpuinfo") if line.startswith("flags")
                    for f in line.split()[2:]} & {"avx2", "avx512f", "avx512_vnni", "amx_int8"})
    print(f"{os.cpu_count()} cores, {' '.join(flags)}; {args.vectors} vectors; "
          f"{args.queries} genuine queries and "
          f"{args.queries} strangers per size; threshold {THRESHOLD}, margin {MARGIN}",
          file=sys.stderr)
    rows = []
    header = (f"{'identities':>10} {'backend':<15} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'b8 p99':>8} {'str p99':>8} {'recall@1':>9} {'FAR':>7} {'RSS MB':>8} "
              f"{'peak MB':>8}")
    print(header)
    for size in args.identities:
        for backend in args.backends:
            if backend.startswith("pgvector") and size > args.pg_max:
                continue
            done = subprocess.run([sys.executable, __file__, "--one-backend", backend,
                                   "--one-size", str(size), "--queries", str(args.queries),
                                   "--vectors", args.vectors],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{size:>10} {backend:<15} failed: {done.stderr.strip()[-300:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{size:>10} {backend:<15} {r['build_s']:>8.1f} {r['p50_ms']:>8.3f} "
                  f"{r['p99_ms']:>8.3f} {r['batch8_p99_ms'] or 0:>8.3f} "
                  f"{r.get('stranger_p99_ms') or 0:>8.3f} {r['recall_at_1']:>9.4f} "
                  f"{r['false_accept_rate']:>7.4f} {r['rss_mb']:>8.0f} {r['peak_rss_mb']:>8.0f}",
                  flush=True)
    emit_json({"benchmark": "gallery", "cpu_count": os.cpu_count(), "cpu_flags": flags,
               "vectors": args.vectors,
               "queries": args.queries, "rows": rows}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
