"""What a review showed, kept by the server under the review's id: confirm takes only that id.

A confirm therefore writes exactly the edit that was reviewed (not whatever a client sends with
the file's digest), against the same file digest and the same CIB configuration version, by the
user who reviewed it, once. Reviews expire; the store is bounded.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from controller.app.edits import Edit, Stale
from controller.model.observed import ConfigVersion

REVIEW_SECONDS = 600.0  # a review left open longer is reviewed again
MAX_REVIEWS = 256  # all users together: the oldest goes first


@dataclass(frozen=True)
class Reviewed:
    user: str
    edit: Edit  # as the review completed it (an enrollment's suggestions, a cleanup's instant)
    file_sha256: str
    cib_version: ConfigVersion | None
    at: float


class Reviews:
    def __init__(self) -> None:
        self._items: OrderedDict[str, Reviewed] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, reviewed: Reviewed) -> str:
        rid = secrets.token_urlsafe(16)
        with self._lock:
            self._items[rid] = reviewed
            while len(self._items) > MAX_REVIEWS:
                self._items.popitem(last=False)
        return rid

    def take(self, rid: str, user: str, now: float) -> Reviewed:
        """The review, used up; Stale when it is unknown, used, expired or someone else's."""
        with self._lock:
            item = self._items.get(rid)
            if item is None or item.user != user:
                raise Stale("this review is unknown, already confirmed or expired: review the "
                            "action again")
            del self._items[rid]
        if now - item.at > REVIEW_SECONDS:
            raise Stale(f"this review is older than {REVIEW_SECONDS:.0f} s: review the action "
                        "again")
        return item
