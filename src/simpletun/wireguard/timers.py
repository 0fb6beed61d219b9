"""A peer's timers (whitepaper section 6; the events as wireguard-go's timers.go names
them), pure: events move deadlines, :meth:`Timers.expired` says which have passed. The
peer acts on them (send an initiation, a keepalive, zero the keys)."""

from __future__ import annotations

REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER = 0.334  # at most this much is added to each retransmission
KEEPALIVE_TIMEOUT = 10.0
REKEY_ATTEMPT_TIME = 90.0
MAX_HANDSHAKE_ATTEMPTS = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18
REJECT_AFTER_TIME = 180.0
ZERO_AFTER = REJECT_AFTER_TIME * 3

# what expired
RETRANSMIT, GIVE_UP, KEEPALIVE, NEW_HANDSHAKE, ZERO_KEYS, PERSISTENT = (
    "retransmit", "give-up", "keepalive", "new-handshake", "zero-keys", "persistent")


class Timers:
    """Deadlines in the caller's clock (None: not pending). ``jitter`` values in [0, 1)
    are passed in, so tests decide them."""

    __slots__ = ("attempts", "keepalive_at", "need_another_keepalive", "new_handshake_at",
                 "persistent_at", "retransmit_at", "sent_last_minute_handshake", "zero_at")

    def __init__(self) -> None:
        self.retransmit_at: float | None = None
        self.keepalive_at: float | None = None
        self.new_handshake_at: float | None = None
        self.zero_at: float | None = None
        self.persistent_at: float | None = None
        self.attempts = 0
        self.need_another_keepalive = False
        #: the initiator re-keyed once already because its session is nearly too old
        self.sent_last_minute_handshake = False

    # --- events ----------------------------------------------------------------------
    def data_sent(self, now: float, jitter: float) -> None:
        """Data went out: start a new handshake if nothing comes back in time."""
        if self.new_handshake_at is None:
            self.new_handshake_at = (now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
                                     + jitter * REKEY_TIMEOUT_JITTER)

    def data_received(self, now: float) -> None:
        """Data came in: answer with a keepalive unless we send something first."""
        if self.keepalive_at is None:
            self.keepalive_at = now + KEEPALIVE_TIMEOUT
        else:
            self.need_another_keepalive = True

    def authenticated_sent(self) -> None:
        self.keepalive_at = None

    def authenticated_received(self) -> None:
        self.new_handshake_at = None

    def traversal(self, now: float, persistent: int) -> None:
        """Any authenticated packet in or out: the persistent keepalive starts over."""
        if persistent:
            self.persistent_at = now + persistent

    def handshake_initiated(self, now: float, jitter: float) -> None:
        self.retransmit_at = now + REKEY_TIMEOUT + jitter * REKEY_TIMEOUT_JITTER

    def handshake_complete(self) -> None:
        self.retransmit_at = None
        self.attempts = 0
        self.sent_last_minute_handshake = False

    def session_derived(self, now: float) -> None:
        self.zero_at = now + ZERO_AFTER

    def stop(self) -> None:
        self.retransmit_at = self.keepalive_at = self.new_handshake_at = None
        self.zero_at = self.persistent_at = None
        self.attempts = 0
        self.need_another_keepalive = False

    # --- expiry ----------------------------------------------------------------------
    def earliest(self) -> float | None:
        best: float | None = None
        for t in (self.retransmit_at, self.keepalive_at, self.new_handshake_at, self.zero_at,
                  self.persistent_at):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def expired(self, now: float) -> list[str]:
        """What is due at ``now``, each cleared (or re-armed) as it fires."""
        due: list[str] = []
        if self.retransmit_at is not None and self.retransmit_at <= now:
            self.retransmit_at = None
            if self.attempts > MAX_HANDSHAKE_ATTEMPTS:  # wireguard-go: 1 + 19 initiations
                due.append(GIVE_UP)
                self.keepalive_at = None
                if self.zero_at is None:
                    self.zero_at = now + ZERO_AFTER
            else:
                self.attempts += 1
                due.append(RETRANSMIT)
        if self.keepalive_at is not None and self.keepalive_at <= now:
            self.keepalive_at = None
            due.append(KEEPALIVE)
            if self.need_another_keepalive:
                self.need_another_keepalive = False
                self.keepalive_at = now + KEEPALIVE_TIMEOUT
        if self.new_handshake_at is not None and self.new_handshake_at <= now:
            self.new_handshake_at = None
            due.append(NEW_HANDSHAKE)
        if self.zero_at is not None and self.zero_at <= now:
            self.zero_at = None
            due.append(ZERO_KEYS)
        if self.persistent_at is not None and self.persistent_at <= now:
            self.persistent_at = None
            due.append(PERSISTENT)
        return due
