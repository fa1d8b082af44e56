"""Matching against enrolled people: threshold AND margin, best-of-images or prototype, votes."""
from __future__ import annotations

import numpy as np
import pytest

from mobileface.identity.gallery import Gallery, IdentityVote


def _unit(*values) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def gallery() -> Gallery:
    # Ann has two pictures (one frontal, one profile-ish), Bob one, Cid one close to Bob.
    embeddings = np.stack([_unit(1, 0, 0, 0), _unit(0.8, 0.6, 0, 0),
                           _unit(0, 0, 1, 0), _unit(0, 0.2, 0.98, 0)])
    return Gallery([10, 20, 30], ["Ann", "Bob", "Cid"], embeddings, [0, 0, 1, 2])


def test_a_person_matches_by_the_best_of_their_pictures(gallery):
    query = _unit(0.8, 0.6, 0, 0)[None] * 3.0  # scale does not matter
    matches = gallery.match(query)
    assert gallery.names[matches.person[0]] == "Ann"
    np.testing.assert_allclose(matches.best, [1.0], atol=1e-6)
    # the prototype (mean of Ann's pictures) is less similar than her best picture
    proto = gallery.match(query, mode="mean")
    assert gallery.names[proto.person[0]] == "Ann" and proto.best[0] < 0.99


def test_unknown_unless_threshold_and_margin_are_both_met(gallery):
    # clearly Ann
    ann = gallery.match(_unit(1, 0.05, 0, 0)[None])
    assert ann.decide(threshold=0.9, margin=0.1)[0] == 0
    # below the threshold: a stranger
    stranger = gallery.match(_unit(0.5, 0, 0, 1)[None])
    assert stranger.best[0] < 0.9
    assert stranger.decide(threshold=0.9, margin=0.0)[0] == -1
    # between Bob and Cid: above the threshold for both, but no margin -> unknown
    between = gallery.match(_unit(0, 0.1, 1, 0)[None])
    assert between.best[0] > 0.95
    assert between.best[0] - between.second[0] < 0.05
    assert between.decide(threshold=0.9, margin=0.05)[0] == -1
    assert between.decide(threshold=0.9, margin=0.0)[0] >= 1


def test_the_runner_up_is_another_person_not_another_picture(gallery):
    # Ann's two pictures are both close to this query: the margin is to Bob, not to Ann again
    matches = gallery.match(_unit(0.95, 0.3, 0, 0)[None])
    assert matches.person[0] == 0
    assert matches.second[0] < 0.3


def test_an_empty_gallery_knows_nobody():
    matches = Gallery.empty().match(np.ones((2, 8), np.float32))
    assert matches.decide(0.0, 0.0).tolist() == [-1, -1]


def test_wrong_dimensions_and_modes_are_refused(gallery):
    with pytest.raises(ValueError, match="dimensions"):
        gallery.match(np.ones((1, 5), np.float32))
    with pytest.raises(ValueError, match="mode"):
        gallery.match(np.ones((1, 4), np.float32), mode="median")


def test_names_do_not_flicker():
    vote = IdentityVote(window=9, hysteresis=2, confirm=3)
    vote.add(10, 0.95)
    assert vote.current is None             # one decision is not enough
    vote.add(10, 0.94)
    assert vote.current == 10 and not vote.confirmed
    vote.add(10, 0.96)
    assert vote.confirmed
    # a single odd frame (a turned face matched someone else) changes nothing
    vote.add(20, 0.93)
    assert vote.current == 10
    vote.add(None, 0.5)
    assert vote.current == 10
    # a sustained change does switch, once the new name leads by the hysteresis
    for _ in range(4):
        vote.add(20, 0.95)
    assert vote.current == 20
    assert 0.93 <= vote.similarity <= 0.95


def test_replay_starts_from_scratch():
    vote = IdentityVote(window=5, hysteresis=2)
    for _ in range(3):
        vote.add(10, 0.9)
    vote.replay([(None, 0.4), (None, 0.4), (None, 0.5)])
    assert vote.current is None and vote.confirmed
    assert len(vote.history) == 3


def test_bad_vote_settings_are_refused():
    with pytest.raises(ValueError):
        IdentityVote(window=0)
