"""The sliding replay window of a receiving keypair (RFC 6479's ring of bitmap blocks, as
wireguard-go sizes it: 8128 counters behind the greatest one seen), pure."""

from __future__ import annotations

REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
_BLOCK_BITS = 64
_RING = 128  # blocks
WINDOW = (_RING - 1) * _BLOCK_BITS  # 8128: counters this far behind the last are still taken


class Window:
    """Counters seen by one receiving keypair. :meth:`accept` is called only for
    authenticated messages (after the AEAD verified)."""

    __slots__ = ("last", "ring")

    def __init__(self) -> None:
        self.last = 0
        self.ring = [0] * _RING

    def accept(self, counter: int) -> bool:
        """True (and remember it) if ``counter`` was not seen and is not too old."""
        last = self.last
        if counter > last:
            if counter >= REJECT_AFTER_MESSAGES:
                return False
            if counter >> 6 != last >> 6:
                self._advance(last >> 6, counter >> 6)
            self.last = counter
        elif last - counter > WINDOW:
            return False
        ring, i, bit = self.ring, (counter >> 6) & (_RING - 1), 1 << (counter & 63)
        word = ring[i]
        if word & bit:
            return False
        ring[i] = word | bit
        return True

    def _advance(self, current: int, block: int) -> None:
        """Clear the blocks the window slides over (all of them, after a jump)."""
        ring = self.ring
        for i in range(current + 1, current + min(block - current, _RING) + 1):
            ring[i & (_RING - 1)] = 0
