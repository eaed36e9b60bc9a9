"""The server's memory of reviews (app/reviews.py): a confirm is its review, once, by its user."""

from __future__ import annotations

import pytest

from controller.app.edits import Place, Stale
from controller.app.reviews import MAX_REVIEWS, REVIEW_SECONDS, Reviewed, Reviews


def reviewed(user: str = "ops", at: float = 100.0) -> Reviewed:
    return Reviewed(user=user, edit=Place(vm="web01", node="kvm2"), file_sha256="a" * 64,
                    cib_version=(0, 7), at=at)


def test_a_review_is_taken_once_by_its_own_user_before_it_expires() -> None:
    reviews = Reviews()
    rid = reviews.keep(reviewed())
    with pytest.raises(Stale):
        reviews.take(rid, "other-operator", 101.0)
    assert reviews.take(rid, "ops", 101.0) == reviewed()
    with pytest.raises(Stale):
        reviews.take(rid, "ops", 102.0)  # used up
    late = reviews.keep(reviewed())
    with pytest.raises(Stale, match="older than"):
        reviews.take(late, "ops", 100.0 + REVIEW_SECONDS + 1)


def test_the_store_is_bounded_the_oldest_going_first() -> None:
    reviews = Reviews()
    first = reviews.keep(reviewed())
    for _ in range(MAX_REVIEWS):
        reviews.keep(reviewed())
    with pytest.raises(Stale):
        reviews.take(first, "ops", 101.0)
