"""The send counters the processes of one interface (``--workers``, :mod:`.workers`) share:
one per keypair, in slots of an anonymous shared mapping made before the fork, handed out
in runs under one lock.

A nonce must never be sent twice, and what the processes send on one keypair must stay
close together (the peer drops a counter more than 8,128 behind the greatest it saw). A
process takes a run of ``core.RESERVE`` (64) counters at a time (:meth:`Table.reserve`: a
lock and two words, once per run) and sends it within ``core.RESERVE_TIME`` (1 ms): every
counter is handed out once, and none is sent further behind the newest than 64 plus what
the others send in 1 ms.

The leader gives each new keypair a free slot (:meth:`Table.allocate`) and takes it back
when the keypair goes (:meth:`Table.release`). Each slot has a generation, which both bump:
a keypair is handed over with its slot's generation, and :meth:`Table.reserve` refuses a
generation that is not the slot's, so a process that still holds a keypair the leader
dropped (its message not read yet) cannot take counters from the slot's next keypair. A
slot is thus free the moment its keypair goes, and the table holds the keypairs alive:
three per peer at most. When it is full, a new session is refused and counted
(``no-counter-slot``); nothing raises.
"""

from __future__ import annotations

import mmap
import multiprocessing

# the Lock's module, loaded with this one: after a drop of privileges (simpletun up's User)
# the interpreter's library may no longer be readable
import multiprocessing.synchronize
from collections import deque
from typing import Any

SLOTS = 65536  # keypairs alive at once (a peer has up to three): 1 MiB of shared memory
_WORDS = 2  # per slot: the send counter, the generation
LOCK_WAIT = 1.0  # seconds: a lock held longer was held by a process that died


class Table:
    """The shared slots. Made by the leader before it forks; each process then uses its
    inherited copy (the mapping and the lock are shared, the free list is the leader's)."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * _WORDS * 8, flags=mmap.MAP_SHARED)
        self.words = memoryview(self._map).cast("Q")
        self.lock: Any = multiprocessing.get_context("fork").Lock()
        self._free: deque[int] = deque(range(slots))

    def allocate(self) -> tuple[int, int] | None:
        """A slot for a new keypair, counting from 0, and its generation; None when every
        slot is taken."""
        if not self._free:
            return None
        slot = self._free.popleft()
        at = slot * _WORDS
        words = self.words
        if not self.lock.acquire(timeout=LOCK_WAIT):
            self._free.appendleft(slot)
            return None
        try:
            generation = words[at + 1] + 1
            words[at] = 0
            words[at + 1] = generation
        finally:
            self.lock.release()
        return slot, int(generation)

    def release(self, slot: int) -> None:
        """The keypair of ``slot`` is gone: no process may take its counters any more."""
        at = slot * _WORDS
        if self.lock.acquire(timeout=LOCK_WAIT):
            try:
                self.words[at + 1] += 1
            finally:
                self.lock.release()
        self._free.append(slot)

    def reserve(self, slot: int, generation: int, count: int) -> int:
        """``count`` counters of ``slot`` that no process will be given again; the first.
        -1 when the slot is no longer that keypair's (``generation``), or its lock is
        stuck (a process died holding it)."""
        at = slot * _WORDS
        words = self.words
        if not self.lock.acquire(timeout=LOCK_WAIT):
            return -1
        try:
            if words[at + 1] != generation:
                return -1
            start = words[at]
            words[at] = start + count
        finally:
            self.lock.release()
        return int(start)


__all__ = ["SLOTS", "Table"]
