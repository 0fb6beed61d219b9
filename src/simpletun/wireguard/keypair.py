"""Transport keypairs and their rotation (whitepaper 5.4.6 and 6.1), pure.

A :class:`Keypair` is one session's two ChaCha20-Poly1305 keys, the send counter and the
receive replay :class:`~.replay.Window`. Each peer holds three in :class:`Keypairs`:
*current* (what we send with), *previous* (still received, for packets in flight) and
*next* (a session we answered as responder, used for sending only once the initiator's
first transport message proved it has it)."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .replay import REJECT_AFTER_MESSAGES, Window

REKEY_AFTER_MESSAGES = 2**60
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0

__all__ = ["REJECT_AFTER_MESSAGES", "REJECT_AFTER_TIME", "REKEY_AFTER_MESSAGES",
           "REKEY_AFTER_TIME", "Keypair", "Keypairs"]


class Keypair:
    __slots__ = ("created", "generation", "initiator", "local_index", "owner", "receive",
                 "remote_index", "reserved_until", "secrets", "send", "send_counter",
                 "send_limit", "shared", "window")

    def __init__(self, send: bytes, receive: bytes, *, initiator: bool, created: float,
                 local_index: int, remote_index: int, owner: object,
                 shared: int | None = None, generation: int = 0) -> None:
        self.send: ChaCha20Poly1305 | None = ChaCha20Poly1305(send)
        self.receive: ChaCha20Poly1305 | None = ChaCha20Poly1305(receive)
        self.send_counter = 0
        #: several processes send on this keypair (:mod:`.workers`): its counter lives in
        #: slot ``shared`` of their shared table, and this process sends the counters it
        #: reserved there, below ``send_limit``, until ``reserved_until``; ``generation``
        #: is the slot's while it is this keypair's
        self.shared = shared
        self.generation = generation
        self.send_limit = 0
        self.reserved_until = 0.0
        #: the raw keys, kept only where workers must be given the keypair
        self.secrets: tuple[bytes, bytes] | None = (send, receive) if shared is not None \
            else None
        self.window = Window()
        self.initiator = initiator
        self.created = created
        self.local_index = local_index
        self.remote_index = remote_index
        self.owner = owner  # the peer (typed as object: no import cycle)

    def usable_for_sending(self, now: float) -> bool:
        return (self.send is not None and self.send_counter < REJECT_AFTER_MESSAGES
                and now - self.created < REJECT_AFTER_TIME)

    def zero(self) -> None:
        """Forget the keys (the cipher objects hold the only copies, but for ``secrets``
        where workers share the keypair)."""
        self.send = self.receive = None
        self.secrets = None


class Keypairs:
    """A peer's previous, current and next keypairs. Methods return the keypairs that
    fell out, so the caller can forget their indices."""

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None

    def derived(self, kp: Keypair) -> list[Keypair]:
        """A new session: as initiator it becomes current at once; as responder it waits
        in *next*."""
        gone: list[Keypair] = []
        if kp.initiator:
            if self.next is not None:
                if self.current is not None:
                    gone.append(self.current)
                if self.previous is not None:
                    gone.append(self.previous)
                self.previous, self.next = self.next, None
            else:
                if self.previous is not None:
                    gone.append(self.previous)
                self.previous = self.current
            self.current = kp
        else:
            for old in (self.next, self.previous):
                if old is not None:
                    gone.append(old)
            self.next, self.previous = kp, None
        for old in gone:
            old.zero()
        return gone

    def received_with(self, kp: Keypair) -> tuple[bool, list[Keypair]]:
        """A message arrived on ``kp``; if it was *next*, the session is confirmed and
        rotates in. Returns (rotated, keypairs that fell out)."""
        if kp is not self.next:
            return False, []
        gone = [self.previous] if self.previous is not None else []
        self.previous, self.current, self.next = self.current, kp, None
        for old in gone:
            old.zero()
        return True, gone

    def all(self) -> list[Keypair]:
        return [k for k in (self.previous, self.current, self.next) if k is not None]

    def clear(self) -> list[Keypair]:
        gone = self.all()
        for kp in gone:
            kp.zero()
        self.previous = self.current = self.next = None
        return gone
