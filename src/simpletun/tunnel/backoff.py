"""Exponential backoff with jitter for reconnecting (pure: randomness is injected)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """``next()`` gives initial, 2x, 4x ... up to ``maximum`` seconds, each spread by
    +-``jitter`` (a fraction) so that many clients do not retry in lockstep."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, *, factor: float = 2.0,
                 jitter: float = 0.2, rand: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rand = rand
        self._current = initial

    def next(self) -> float:
        base = self._current
        self._current = min(self._current * self.factor, self.maximum)
        return base * (1 + self.jitter * (2 * self._rand() - 1))

    def reset(self) -> None:
        self._current = self.initial
