"""The gallery's search: the 1-bit codes find what exact search finds, and follow changes."""
import numpy as np
import pytest

from mobileface.identity import search
from mobileface.identity.gallery import Gallery, GalleryRows
from mobileface.identity.search import SignCodes
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


def _agree(exact: Gallery, approx: Gallery, queries: np.ndarray, floor: float = -1.0) -> None:
    """The same best person and similarity wherever the exact best reaches ``floor``
    (what can sway a decision), and never a better one than exact search found."""
    a, b = exact.match(queries), approx.match(queries)
    near = a.best >= floor
    np.testing.assert_array_equal(a.person[near], b.person[near])
    np.testing.assert_allclose(a.best[near], b.best[near], atol=1e-5)     # compared exactly
    # a search over candidates may miss the true runner-up, never invent a better one
    assert (b.best <= a.best + 1e-5).all() and (b.second <= a.second + 1e-5).all()


def test_codes_and_exact_agree_on_people_and_the_margin_rule():
    centres, rows, vectors = _people(300, 3)
    rng = np.random.default_rng(1)
    queries = normalise(centres[:50] + 0.3 / 8 * rng.standard_normal(centres[:50].shape).astype(np.float32))
    strangers = normalise(rng.standard_normal((20, centres.shape[1])).astype(np.float32))
    exact = _gallery(rows, vectors, exact_below=10**9)
    approx = _gallery(rows, vectors, exact_below=10)
    assert exact.search is None and isinstance(approx.search, SignCodes)
    assert len(approx.search) == len(rows)                   # a code per photo
    for q, floor in ((queries, -1.0), (strangers, 0.55)):
        _agree(exact, approx, q, floor)
        # a runner-up near enough to sway the rule (0.6 - 0.05 here) is found
        near = exact.match(q).second >= 0.55
        np.testing.assert_allclose(exact.match(q).second[near], approx.match(q).second[near],
                                   atol=1e-5)
        np.testing.assert_array_equal(exact.match(q).decide(0.6, 0.05),
                                      approx.match(q).decide(0.6, 0.05))
    assert (exact.match(queries).person == np.arange(50)).all()
    assert (exact.match(strangers).decide(0.6, 0.05) == -1).all()
    # twins: each query's runner-up is near, and must be found for the margin rule
    twins = normalise(np.concatenate([centres[:50], centres[:50] + 0.5 * queries[::-1]]))
    twin_rows = np.concatenate([np.arange(50), np.arange(50, 100)])
    exact, approx = _gallery(twin_rows, twins, 10**9), _gallery(twin_rows, twins, 10)
    assert (exact.match(queries).second > 0.55).all()
    np.testing.assert_allclose(exact.match(queries).second, approx.match(queries).second,
                               atol=1e-5)
    # the prototype mode is searched the same way
    np.testing.assert_array_equal(exact.match(queries, mode="mean").person,
                                  approx.match(queries, mode="mean").person)


def test_hamming_distance_follows_the_angle():
    """Sign random projections: two vectors at angle θ differ in a bit with
    probability θ/π."""
    rng = np.random.default_rng(2)
    base = normalise(rng.standard_normal((2000, 128)).astype(np.float32))
    codes = SignCodes.of(base)
    for cosine in (0.95, 0.8, 0.5, 0.0):
        other = normalise(rng.standard_normal(base.shape).astype(np.float32))
        other = normalise(other - (other * base).sum(1, keepdims=True) * base)
        pairs = cosine * base + np.sqrt(1 - cosine**2) * other
        differ = np.bitwise_count(codes.encode(base) ^ codes.encode(pairs)).sum(0)
        assert np.mean(differ) / codes.bits == pytest.approx(np.arccos(cosine) / np.pi, abs=0.01)


def test_embeddings_that_share_a_direction_are_found_like_exact_search():
    """dlib's embeddings are not centred (strangers at cosine ~0.85 here); the codes
    are signs about the gallery's mean, so they still tell people apart."""
    rng = np.random.default_rng(4)
    common = 27 * normalise(rng.standard_normal((1, 128)).astype(np.float32))
    vectors = normalise(common + rng.standard_normal((30_000, 128)).astype(np.float32))
    rows = np.arange(len(vectors))
    picked = rng.choice(len(vectors), 200, replace=False)
    queries = normalise(vectors[picked] + 0.029 * rng.standard_normal((200, 128)).astype(np.float32))
    assert np.median(vectors[:500] @ vectors[500:1000].T) > 0.8
    exact, approx = _gallery(rows, vectors, 10**9), _gallery(rows, vectors, 10)
    _agree(exact, approx, queries)
    assert (approx.match(queries).person == picked).all()


def test_runner_up_is_found_even_when_one_person_has_many_pictures():
    centres, rows, vectors = _people(3, 1)
    rng = np.random.default_rng(3)                       # 40 pictures of person 0
    many = normalise(centres[:1] + 0.2 / 8 * rng.standard_normal((40, centres.shape[1])).astype(np.float32))
    rows = np.concatenate([np.zeros(40, int), [1, 2]])
    vectors = np.concatenate([many, centres[1:]])
    for exact_below in (10**9, 2):
        match = _gallery(rows, vectors, exact_below).match(many[:1])
        assert match.person[0] == 0
        assert match.second[0] == pytest.approx(float((centres[1:] @ many[0]).max()), abs=1e-5)


def test_many_identical_photos_do_not_crowd_out_the_right_person():
    """Codes tied at one distance are cut at MOST_CANDIDATES; a nearer code is kept."""
    centres, _, _ = _people(2_000, 1, dim=128, seed=5)
    copies = np.repeat(centres[:1], 5 * search.MOST_CANDIDATES, axis=0)   # one face, enrolled often
    vectors = np.concatenate([copies, centres[1:]])
    rows = np.concatenate([np.zeros(len(copies), int), np.arange(1, len(centres))])
    rng = np.random.default_rng(6)
    wanted = np.arange(1, 41)
    queries = normalise(centres[wanted] + 0.02 * rng.standard_normal((40, 128)).astype(np.float32))
    approx = _gallery(rows, vectors, exact_below=10)
    assert (approx.match(queries).person == wanted).all()
    assert approx.match(centres[:1]).person[0] == 0
    assert all(len(r) <= search.MOST_CANDIDATES for r in approx.search.nearest(centres[:3]))


def test_assemble_reuses_unchanged_rows_and_their_codes():
    _, rows, vectors = _people(50, 2)
    ids = np.arange(len(rows)) + 1000
    fetched = []

    def fetch(wanted):
        fetched.append(len(wanted))
        return vectors[np.searchsorted(ids, wanted)]

    meta = GalleryRows(ids, np.zeros(len(ids)), rows + 100, [f"p{r}" for r in rows])
    first = Gallery.assemble(meta, fetch, "m", exact_below=10)
    assert fetched == [len(ids)] and len(first.search) == 100          # a code per photo
    # one row re-embedded (new version, a new vector), person 0's rows removed
    keep = rows != 0
    versions = np.zeros(len(ids))
    versions[10] = 1.0
    vectors[10] = normalise(vectors[10] + 0.5 * vectors[11])
    meta2 = GalleryRows(ids[keep], versions[keep], rows[keep] + 100,
                        [f"p{r}" for r in rows[keep]])
    second = Gallery.assemble(meta2, fetch, "m", previous=first, exact_below=10)
    assert fetched[-1] == 1                     # only the re-embedded row was read again
    assert "p0" not in second.names and len(second.search) == 98
    # the same centre and rotation, and codes that are those of the rows now held
    assert second.search.centre is first.search.centre
    np.testing.assert_array_equal(second.search.codes, first.search.encode(second.embeddings))
    fresh = SignCodes.of(second.embeddings)
    assert not np.array_equal(fresh.centre, second.search.centre)   # not rebuilt
    match = second.match(vectors[20:21])
    assert second.names[match.person[0]] == "p10"


def test_a_gallery_that_grows_past_the_threshold_gets_codes_and_one_that_shrinks_drops_them():
    _, rows, vectors = _people(30, 1)
    ids = np.arange(30)

    def fetch(wanted):
        return vectors[wanted]

    small = Gallery.assemble(GalleryRows(ids[:10], np.zeros(10), rows[:10], ["x"] * 10),
                             fetch, "m", exact_below=20)
    assert small.search is None
    large = Gallery.assemble(GalleryRows(ids, np.zeros(30), rows, ["x"] * 30), fetch, "m",
                             previous=small, exact_below=20)
    assert len(large.search) == 30
    again = Gallery.assemble(GalleryRows(ids[:10], np.zeros(10), rows[:10], ["x"] * 10),
                             fetch, "m", previous=large, exact_below=20)
    assert again.search is None
    np.testing.assert_array_equal(again.match(vectors[:10]).person, np.arange(10))


def test_real_dlib_embeddings_get_the_decisions_of_exact_search(analyzer):
    """The 100 LFW people of the shared data, embedded by the default embedder: their
    first photos enrolled among 20,000 strangers drawn from the Gaussian of their
    embeddings (cosines to them as between real strangers), their second photos
    searched. The codes decide as exact search does, and name no one wrongly."""
    from conftest import DATA
    from mobileface.detect.locate import find_main_face
    from mobileface.io.image import read_image

    folder = DATA / "mobileface" / "LFW-Aligned-100Pair"
    if not folder.is_dir():
        pytest.skip("shared LFW-Aligned-100Pair data is absent")
    people = sorted(p for p in folder.iterdir() if p.is_dir())
    firsts, seconds = [], []
    for person in people:
        photos = sorted(person.glob("*.jpg"))[:2]
        found = [find_main_face(analyzer, read_image(p)).faces for p in photos]
        firsts.append(found[0].embedding[0])
        seconds.append(found[1].embedding[0])
    both = np.concatenate([firsts, seconds]).astype(np.float64)
    rng = np.random.default_rng(7)
    strangers = normalise(rng.multivariate_normal(both.mean(0), np.cov(both.T), 20_000)
                          .astype(np.float32))
    firsts, seconds = normalise(np.array(firsts)), normalise(np.array(seconds))
    real = np.percentile((firsts @ seconds.T)[~np.eye(len(people), dtype=bool)], [50, 99])
    drawn = np.percentile(seconds @ strangers[:2000].T, [50, 99])
    np.testing.assert_allclose(drawn, real, atol=0.02)          # about 0.86 and 0.92
    vectors = np.concatenate([firsts, strangers])
    rows = np.arange(len(vectors))
    exact, approx = _gallery(rows, vectors, 10**9), _gallery(rows, vectors, 10)
    embedder = next(s for s in analyzer.stages if "embedding" in s.provides)
    threshold, margin = embedder.threshold, 0.03
    a, b = exact.match(seconds), approx.match(seconds)
    assert (b.best <= a.best + 1e-5).all() and (a.best - b.best).max() < 0.01
    decided = a.decide(threshold, margin)
    np.testing.assert_array_equal(decided, b.decide(threshold, margin))
    assert (decided >= 0).sum() >= 5 and (decided[decided >= 0] == np.flatnonzero(decided >= 0)).all()
    assert (a.person == b.person).mean() >= 0.95


def test_distances_scanned_a_block_at_a_time_are_those_of_one_scan(monkeypatch):
    rng = np.random.default_rng(8)
    vectors = normalise(rng.standard_normal((5_001, 128)).astype(np.float32))
    codes = SignCodes.of(vectors)
    query = vectors[17] + 0.01
    whole = codes.distances(query).copy()
    assert whole[17] == whole.min() and whole.dtype == np.uint8
    np.testing.assert_array_equal(
        whole, np.bitwise_count(codes.codes ^ codes.encode(query)).sum(0))
    monkeypatch.setattr(search, "BLOCK", 1_000)
    codes = SignCodes.of(vectors)
    np.testing.assert_array_equal(codes.distances(query), whole)
