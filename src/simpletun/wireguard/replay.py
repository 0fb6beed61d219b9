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
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        block = counter >> 6
        ring = self.ring
        last = self.last
        if counter > last:
            current = last >> 6
            diff = block - current
            if diff:
                for i in range(current + 1, current + min(diff, _RING) + 1):
                    ring[i & (_RING - 1)] = 0
            self.last = counter
        elif last - counter > WINDOW:
            return False
        i = block & (_RING - 1)
        bit = 1 << (counter & 63)
        word = ring[i]
        if word & bit:
            return False
        ring[i] = word | bit
        return True
