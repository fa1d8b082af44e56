"""benchmark/gallery.py and benchmark/reload.py, small: the rows the README's tables come from."""
from __future__ import annotations

import json

import pytest

from scripts import load_script

gallery = load_script("benchmark/gallery.py")
reload = load_script("benchmark/reload.py")


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_gallery_benchmark_rows_for_exact_search_and_the_codes(capsys):
    assert gallery.main(["--identities", "3000", "--queries", "32",
                         "--backends", "numpy", "codes"]) == 0
    rows = _last_json(capsys)["rows"]
    assert [r["backend"] for r in rows] == ["numpy", "codes"]
    for r in rows:
        assert {"identities", "backend", "p50_ms", "p99_ms", "recall_at_1",
                "false_accept_rate", "rss_mb"} <= set(r)
        assert r["identities"] == 3000 and r["recall_at_1"] == 1.0
        assert r["false_accept_rate"] == 0.0 and 0 < r["p50_ms"] <= r["p99_ms"]


def test_gallery_benchmark_refuses_a_gallery_too_small(capsys):
    with pytest.raises(SystemExit) as exit_:
        gallery.main(["--identities", "8"])
    assert exit_.value.code == 2 and "at least 16" in capsys.readouterr().err


def test_reload_benchmark_sees_a_change_made_by_another_connection(capsys):
    assert reload.main(["--photos", "500", "25000", "--backends", "sqlite", "postgresql"]) == 0
    rows = _last_json(capsys)["rows"]
    assert [(r["photos"], r["backend"]) for r in rows] == [
        (500, "sqlite"), (500, "postgresql"), (25000, "sqlite"), (25000, "postgresql")]
    for r in rows:
        assert r["new_embedding_taken"] is True and r["change_seen_s"] is not None
        assert r["next_change_seen_s"] is not None
        assert r["first_read_s"] >= 0 and r["polls"] >= 1
