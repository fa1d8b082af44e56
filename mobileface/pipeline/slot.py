"""A one-item mailbox where the newest item wins (live video: never fall behind)."""
from __future__ import annotations

import queue
import threading

_NOTHING = object()


class LatestSlot:
    """put() replaces an item not taken yet (counted in ``replaced``); take() and get()
    empty the slot.

    final: an end marker. Putting it closes the slot without replacing the item
    still waiting (that one is taken first); after it, every take() or get()
    returns the marker, and later puts are ignored.
    """

    def __init__(self, final=_NOTHING):
        self._cond = threading.Condition()
        self._item = _NOTHING
        self._final = final
        self._closed = False
        self.replaced = 0

    def put(self, item) -> bool:
        """Store the newest item; True when the slot was empty (a reader may be told)."""
        with self._cond:
            if self._closed:
                return False
            empty = self._item is _NOTHING
            if item is self._final and self._final is not _NOTHING:
                self._closed = True
            else:
                if not empty:
                    self.replaced += 1
                self._item = item
            self._cond.notify_all()
            return empty

    def qsize(self) -> int:
        """1 when an item waits, else 0 (as queue.Queue's, for counting what waits)."""
        with self._cond:
            return int(self._item is not _NOTHING)

    def take(self):
        """The item, or None when the slot is empty (does not wait)."""
        with self._cond:
            return self._pop(None)

    def get(self, timeout: float):
        """The item, waiting up to ``timeout`` seconds for one; queue.Empty if none came."""
        with self._cond:
            if self._item is _NOTHING and not self._closed:
                self._cond.wait(timeout)
            item = self._pop(_NOTHING)
            if item is _NOTHING:
                raise queue.Empty
            return item

    def wait_empty(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the item waiting to be taken; whether the
        slot is empty (or closed) now."""
        with self._cond:
            if self._item is not _NOTHING and not self._closed:
                self._cond.wait(timeout)
            return self._item is _NOTHING or self._closed

    def _pop(self, default):
        if self._item is not _NOTHING:
            item, self._item = self._item, _NOTHING
            self._cond.notify_all()       # wait_empty()
            return item
        return self._final if self._closed else default
