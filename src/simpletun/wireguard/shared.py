"""The send counters the processes of one interface (``--workers``, :mod:`.workers`) share:
one per keypair, in slots of an anonymous shared mapping made before the fork, handed out
in runs under one lock.

A nonce must never be sent twice, and what the processes send on one keypair must stay
close together (the peer drops a counter more than 8,128 behind the greatest it saw). A
process takes a run of ``core.RESERVE`` (64) counters at a time (:meth:`Table.reserve`: a
lock and two words, once per run) and sends it within ``core.RESERVE_TIME`` (1 ms): every
counter is handed out once, and none is sent further behind the newest than 64 plus what
the others send in 1 ms.

The leader gives each new keypair a free slot (:meth:`Table.allocate`, which zeroes it)
and takes it back when the keypair goes (:meth:`Table.release`), to be given again only
after the keypair's REJECT_AFTER_TIME, when no process may use it any more.
"""

from __future__ import annotations

import mmap
import multiprocessing
from collections import deque
from typing import Any

from .keypair import REJECT_AFTER_TIME

SLOTS = 16384  # keypairs alive at once (a peer has up to three)
_WORDS = 1  # per slot: the send counter


class Table:
    """The shared slots. Made by the leader before it forks; each process then uses its
    inherited copy (the mapping and the lock are shared, the free list is the leader's)."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * _WORDS * 8, flags=mmap.MAP_SHARED)
        self.words = memoryview(self._map).cast("Q")
        self.lock: Any = multiprocessing.get_context("fork").Lock()
        self._free: deque[int] = deque(range(slots))
        self._waiting: deque[tuple[float, int]] = deque()  # (free again at, slot)

    def allocate(self, now: float) -> int:
        """A zeroed slot for a new keypair. Raises RuntimeError when every slot is taken
        (more than :data:`SLOTS` keypairs alive)."""
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            self._free.append(waiting.popleft()[1])
        if not self._free:
            raise RuntimeError(f"more than {self.slots} keypairs alive at once")
        slot = self._free.popleft()
        base = slot * _WORDS
        with self.lock:
            self.words[base:base + _WORDS] = memoryview(bytes(_WORDS * 8)).cast("Q")
        return slot

    def release(self, slot: int, now: float) -> None:
        self._waiting.append((now + REJECT_AFTER_TIME, slot))

    def reserve(self, slot: int, count: int) -> int:
        """``count`` counters of ``slot`` that no process will be given again; the first."""
        at = slot * _WORDS
        words = self.words
        with self.lock:
            start = words[at]
            words[at] = start + count
        return int(start)


__all__ = ["SLOTS", "Table"]
