"""A one-item mailbox where the newest item wins (live video: never fall behind)."""
from __future__ import annotations

import queue
import threading

_NOTHING = object()


class LatestSlot:
    """put() replaces an item not taken yet (counted in ``replaced``); take() and get()
    empty the slot.

    final: an end marker; once put it is never replaced nor taken, so that
    every later get() sees it too.
    """

    def __init__(self, final=_NOTHING):
        self._cond = threading.Condition()
        self._item = _NOTHING
        self._final = final
        self.replaced = 0

    def put(self, item) -> bool:
        """Store the newest item; True when the slot was empty (a reader may be told)."""
        with self._cond:
            if self._item is not _NOTHING and self._item is self._final:
                return False
            empty = self._item is _NOTHING
            if not empty and item is not self._final:
                self.replaced += 1
            self._item = item
            self._cond.notify()
            return empty

    def take(self):
        """The item, or None when the slot is empty (does not wait)."""
        with self._cond:
            return self._pop()

    def get(self, timeout: float):
        """The item, waiting up to ``timeout`` seconds for one; queue.Empty if none came."""
        with self._cond:
            if self._item is _NOTHING:
                self._cond.wait(timeout)
            if self._item is _NOTHING:
                raise queue.Empty
            return self._pop()

    def _pop(self):
        item = None if self._item is _NOTHING else self._item
        if item is not self._final:
            self._item = _NOTHING
        return item
