"""When to send a keepalive and when to give up on a silent peer (pure: the caller passes
the time in, so one core serves every transport and tests need no clock)."""

from __future__ import annotations

KEEPALIVE, DEAD = "keepalive", "dead"


class Liveness:
    """Tracks the last time anything was sent to and received from the peer.

    ``interval``: send a KEEPALIVE after this long without sending anything (None: never).
    ``timeout``: the peer is dead after this long without receiving anything (None: never).
    """

    __slots__ = ("_last_received", "_last_sent", "interval", "timeout")

    def __init__(self, now: float, *, interval: float | None, timeout: float | None) -> None:
        if interval is not None and interval <= 0:
            raise ValueError("the keepalive interval must be positive")
        if timeout is not None and timeout <= 0:
            raise ValueError("the dead-peer timeout must be positive")
        self.interval, self.timeout = interval, timeout
        self._last_sent = self._last_received = now

    def sent(self, now: float) -> None:
        self._last_sent = now

    def received(self, now: float) -> None:
        self._last_received = now

    def silence(self, now: float) -> float:
        """Seconds since the peer was last heard."""
        return now - self._last_received

    def due(self, now: float) -> str | None:
        """DEAD, KEEPALIVE (then call :meth:`sent` once it is sent) or None."""
        if self.timeout is not None and now >= self._last_received + self.timeout:
            return DEAD
        if self.interval is not None and now >= self._last_sent + self.interval:
            return KEEPALIVE
        return None

    def wait(self, now: float) -> float | None:
        """Seconds until :meth:`due` may say something (0 if it already does; None: never)."""
        deadlines = []
        if self.timeout is not None:
            deadlines.append(self._last_received + self.timeout)
        if self.interval is not None:
            deadlines.append(self._last_sent + self.interval)
        return max(0.0, min(deadlines) - now) if deadlines else None
