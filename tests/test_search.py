"""The gallery's search: exact and HNSW answer the same people, and the index follows changes."""
import numpy as np
import pytest

from mobileface.identity.gallery import Gallery, GalleryRows
from mobileface.vectors import normalise


def _people(n_people: int, per_person: int, dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((n_people, dim)).astype(np.float32))
    rows = np.repeat(np.arange(n_people), per_person)
    vectors = normalise(centres[rows] + 0.15 / np.sqrt(dim) * rng.standard_normal((len(rows), dim)).astype(np.float32))
    return centres, rows, vectors


def _gallery(rows, vectors, exact_below, image_ids=None):
    people = np.unique(rows)
    return Gallery(people + 100, [f"p{i}" for i in people], vectors, rows, "m",
                   image_ids=image_ids, exact_below=exact_below)


def test_hnsw_and_exact_agree_on_people_and_the_margin_rule():
    centres, rows, vectors = _people(300, 3)
    rng = np.random.default_rng(1)
    queries = normalise(centres[:50] + 0.3 / 8 * rng.standard_normal(centres[:50].shape).astype(np.float32))
    strangers = normalise(rng.standard_normal((20, centres.shape[1])).astype(np.float32))
    exact = _gallery(rows, vectors, exact_below=10**9)
    approx = _gallery(rows, vectors, exact_below=10)
    assert exact.search is None and approx.search is not None
    for q in (queries, strangers):
        a, b = exact.match(q), approx.match(q)
        np.testing.assert_array_equal(a.person, b.person)
        np.testing.assert_allclose(a.best, b.best, atol=2e-3)     # half-precision vectors
        # an approximate search may miss the true runner-up, never invent a better one
        assert (b.second <= a.second + 2e-3).all() and np.mean(np.abs(a.second - b.second)) < 2e-3
        np.testing.assert_array_equal(a.decide(0.6, 0.05), b.decide(0.6, 0.05))
    assert (exact.match(queries).person == np.arange(50)).all()
    assert (exact.match(strangers).decide(0.6, 0.05) == -1).all()


def test_runner_up_is_found_even_when_one_person_has_many_pictures():
    centres, rows, vectors = _people(3, 1)
    rng = np.random.default_rng(3)                       # 40 pictures of person 0
    many = normalise(centres[:1] + 0.2 / 8 * rng.standard_normal((40, centres.shape[1])).astype(np.float32))
    rows = np.concatenate([np.zeros(40, int), [1, 2]])
    vectors = np.concatenate([many, centres[1:]])
    for exact_below in (10**9, 5):
        match = _gallery(rows, vectors, exact_below).match(many[:1])
        assert match.person[0] == 0
        assert match.second[0] == pytest.approx(float((centres[1:] @ many[0]).max()), abs=2e-3)


def test_assemble_reuses_unchanged_rows_and_updates_the_index_in_place():
    _, rows, vectors = _people(50, 2)
    ids = np.arange(len(rows)) + 1000
    fetched = []

    def fetch(wanted):
        fetched.append(len(wanted))
        return vectors[np.searchsorted(ids, wanted)]

    meta = GalleryRows(ids, np.zeros(len(ids)), rows + 100, [f"p{r}" for r in rows])
    first = Gallery.assemble(meta, fetch, "m", exact_below=10)
    index = first.search
    assert fetched == [len(ids)] and len(index) == 50          # one key per person
    # one row re-embedded (new version), person 0's rows removed, everything else kept
    keep = rows != 0
    versions = np.zeros(len(ids))
    versions[10] = 1.0
    meta2 = GalleryRows(ids[keep], versions[keep], rows[keep] + 100,
                        [f"p{r}" for r in rows[keep]])
    second = Gallery.assemble(meta2, fetch, "m", previous=first, exact_below=10)
    assert fetched[-1] == 1                     # only the re-embedded row was read again
    assert second.search is index and len(index) == 49
    assert "p0" not in second.names
    match = second.match(vectors[20:21])
    assert second.names[match.person[0]] == "p10"
