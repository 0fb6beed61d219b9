"""Log lines caused by the network, rate-limited per kind so that a flood never floods the
log: at most ``burst`` lines of one kind per ``interval`` seconds; the first line let
through after a quiet spell says how many were held back.

:class:`LineLimiter` is pure (the time is passed in); :class:`LimitedLog` puts it in front
of a log function.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

Log = Callable[[str], None]


class LineLimiter:
    """Token bucket per key: ``burst`` lines at once, refilled at ``burst`` per
    ``interval``."""

    __slots__ = ("_buckets", "burst", "interval")

    def __init__(self, *, burst: int = 5, interval: float = 10.0) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be at least 1 and interval positive")
        self.burst, self.interval = burst, interval
        #: key -> [tokens, time of the last refill, lines held back since the last one]
        self._buckets: dict[str, list[float]] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: hold this line back. Otherwise let it through; the number is how many
        lines of this kind were held back before it."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 1024:  # keys come from code, but stay bounded anyway
                self._buckets.clear()
            bucket = self._buckets[key] = [float(self.burst), now, 0.0]
        tokens = min(float(self.burst),
                     bucket[0] + (now - bucket[1]) * self.burst / self.interval)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            bucket[2] += 1
            return None
        bucket[0] = tokens - 1.0
        held, bucket[2] = int(bucket[2]), 0.0
        return held


class LimitedLog:
    """``log`` behind a :class:`LineLimiter`: ``limited(key, message)``."""

    def __init__(self, log: Log, *, burst: int = 5, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.limiter = LineLimiter(burst=burst, interval=interval)
        self.clock = clock

    def __call__(self, key: str, message: str) -> None:
        held = self.limiter.allow(key, self.clock())
        if held is None:
            return
        if held:
            message += held_note(held)
        self.log(message)


def held_note(held: int) -> str:
    """What a let-through line says about those held back before it (:data:`HELD` finds
    it again: the JSON log form makes it a field)."""
    return f" ({held} similar line{'s' if held != 1 else ''} held back)"


#: the count :func:`held_note` appended, at the end of a line
HELD = re.compile(r" \((\d+) similar lines? held back\)$")


class AnswerLimiter:
    """How often a server answers strangers (REJECT, BUSY, refusals): at most once per
    ``interval`` to each address, and at most ``per_second`` in all (against floods from
    many, possibly spoofed, sources). Per address, so that a flood from one source does not
    starve the answer a real client needs (a REJECT after a server restart). Pure: the time
    is passed in; at most ``size`` addresses are remembered (least recently answered go)."""

    __slots__ = ("_last", "_tokens", "_updated", "interval", "per_second", "size")

    def __init__(self, *, interval: float = 0.1, per_second: float = 1000.0,
                 size: int = 4096) -> None:
        self.interval, self.per_second, self.size = interval, per_second, size
        self._last: dict[object, float] = {}  # insertion order: least recently answered first
        self._tokens = per_second
        self._updated = 0.0

    def allow(self, address: object, now: float) -> bool:
        last = self._last.get(address)
        if last is not None and now - last < self.interval:
            return False
        self._tokens = min(self.per_second,
                           self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        if last is not None:
            del self._last[address]  # to the back: most recently answered
        elif len(self._last) >= self.size:
            del self._last[next(iter(self._last))]
        self._last[address] = now
        return True
