"""The Noise_IKpsk2 handshake of WireGuard (whitepaper 5.4.2-5.4.5), pure.

Two messages: the initiator's :func:`create_initiation`, consumed by the responder's
:func:`consume_initiation`; the responder's :func:`create_response`, consumed by
:func:`consume_response`. Then both :func:`derive` the transport keys. A
:class:`Handshake` holds one peer's side in between; this module knows nothing of peers
tables, indices, time or sockets: the caller passes the timestamp in and picks indices.
mac1/mac2 are :mod:`.cookie`'s."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import crypto, messages
from .crypto import ZERO_KEY, hash_, kdf1, kdf2, kdf3
from .keys import generate_private

INITIAL_CHAIN = hash_(crypto.CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAIN, crypto.IDENTIFIER)

# where a handshake stands
ZEROED, INITIATION_CREATED, INITIATION_CONSUMED, RESPONSE_CREATED, RESPONSE_CONSUMED = range(5)

_TAI64_BASE = 0x400000000000000A  # TAI64 label of 1970 (2^62 + 10 leap seconds)
_WHITEN = 0xFFFFFF  # timestamps rounded down to ~16.8 ms, as wireguard-go does


def tai64n(unix_ns: int) -> bytes:
    """TAI64N of a UNIX time in ns: 8-byte big-endian seconds and 4-byte nanoseconds, the
    nanoseconds whitened (rounded down) so the timestamp tells little about the clock."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return struct.pack(">QI", _TAI64_BASE + seconds, nanos & ~_WHITEN)


def _exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes | None:
    """X25519 with a loaded private key (:func:`crypto.dh` loads it from bytes each time,
    which costs as much as the exchange: the library derives the public key on loading);
    None for a low-order point."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        return None


def _ephemeral() -> tuple[bytes, X25519PrivateKey, bytes]:
    """A new ephemeral key: its bytes, the key loaded (once), and its public key."""
    private = generate_private()
    key = X25519PrivateKey.from_private_bytes(private)
    return private, key, key.public_key().public_bytes_raw()


@dataclass(slots=True)
class Local:
    """Our identity: the static key pair (and the private key loaded once: every
    handshake and every peer added uses it)."""

    private: bytes
    public: bytes
    key: X25519PrivateKey = field(repr=False, compare=False)

    @classmethod
    def of(cls, private: bytes) -> Local:
        key = X25519PrivateKey.from_private_bytes(bytes(private))
        return cls(private, key.public_key().public_bytes_raw(), key)


@dataclass(slots=True)
class Handshake:
    """One peer's handshake state (the responder's public key and the pre-shared key are
    the peer's configuration; ``static_static`` is DH(our static, theirs), computed once)."""

    remote_static: bytes
    static_static: bytes | None = None
    preshared: bytes = ZERO_KEY
    state: int = ZEROED
    hash: bytes = b""
    chain: bytes = b""
    ephemeral_private: bytes = b""
    remote_ephemeral: bytes = b""
    local_index: int = 0
    remote_index: int = 0
    #: the greatest initiation timestamp consumed from this peer (replay protection)
    last_timestamp: bytes = bytes(12)

    def precompute(self, local: Local | None) -> None:
        self.static_static = (_exchange(local.key, self.remote_static)
                              if local is not None else None)

    def clear(self) -> None:
        self.state = ZEROED
        self.hash = self.chain = self.ephemeral_private = self.remote_ephemeral = b""
        self.local_index = self.remote_index = 0


def create_initiation(local: Local, hs: Handshake, sender: int, timestamp: bytes
                      ) -> bytearray | None:
    """The initiation to send (mac1/mac2 still zero), or None when the peer's key is
    unusable (a low-order point)."""
    if hs.static_static is None:
        return None
    e_priv, e_key, e_pub = _ephemeral()
    h = hash_(INITIAL_HASH, hs.remote_static)
    ck = kdf1(INITIAL_CHAIN, e_pub)
    h = hash_(h, e_pub)
    shared = _exchange(e_key, hs.remote_static)
    if shared is None:
        return None
    ck, k = kdf2(ck, shared)
    static = crypto.seal(k, 0, local.public, h)
    h = hash_(h, static)
    ck, k = kdf2(ck, hs.static_static)
    stamp = crypto.seal(k, 0, timestamp, h)
    h = hash_(h, stamp)
    hs.state, hs.hash, hs.chain = INITIATION_CREATED, h, ck
    hs.ephemeral_private, hs.local_index = e_priv, sender
    return messages.initiation(messages.Initiation(sender, e_pub, static, stamp,
                                                   bytes(16), bytes(16)))


@dataclass(slots=True)
class Consumed:
    """What an initiation proved: who sent it, and the state to answer with."""

    remote_static: bytes
    timestamp: bytes
    hash: bytes
    chain: bytes
    remote_ephemeral: bytes
    sender: int


def open_initiation(local: Local, msg: messages.Initiation) -> tuple[bytes, bytes, bytes] | str:
    """First half of consuming an initiation, before the peer is known: (remote static,
    hash, chain) or the drop reason."""
    h = hash_(INITIAL_HASH, local.public)
    ck = kdf1(INITIAL_CHAIN, msg.ephemeral)
    h = hash_(h, msg.ephemeral)
    shared = _exchange(local.key, msg.ephemeral)
    if shared is None:
        return "bad-ephemeral"
    ck, k = kdf2(ck, shared)
    static = crypto.open_(k, 0, msg.static, h)
    if static is None:
        return "bad-initiation"
    return static, hash_(h, msg.static), ck


def consume_initiation(hs: Handshake, msg: messages.Initiation, opened: tuple[bytes, bytes, bytes]
                       ) -> Consumed | str:
    """Second half, with the peer found by its static key: decrypt the timestamp. The
    caller checks it is newer than ``hs.last_timestamp`` and then calls :func:`accept`."""
    _static, h, ck = opened
    if hs.static_static is None:
        return "bad-peer-key"
    ck, k = kdf2(ck, hs.static_static)
    stamp = crypto.open_(k, 0, msg.timestamp, h)
    if stamp is None:
        return "bad-initiation"
    return Consumed(hs.remote_static, stamp, hash_(h, msg.timestamp), ck, msg.ephemeral,
                    msg.sender)


def accept(hs: Handshake, c: Consumed) -> None:
    """Take a consumed initiation as this peer's handshake."""
    hs.state, hs.hash, hs.chain = INITIATION_CONSUMED, c.hash, c.chain
    hs.remote_ephemeral, hs.remote_index = c.remote_ephemeral, c.sender
    if c.timestamp > hs.last_timestamp:
        hs.last_timestamp = c.timestamp


def create_response(hs: Handshake, sender: int) -> bytearray | None:
    """The response to a consumed initiation (macs still zero)."""
    if hs.state != INITIATION_CONSUMED:
        return None
    e_priv, e_key, e_pub = _ephemeral()
    h = hash_(hs.hash, e_pub)
    ck = kdf1(hs.chain, e_pub)
    ee = _exchange(e_key, hs.remote_ephemeral)
    se = _exchange(e_key, hs.remote_static)
    if ee is None or se is None:
        return None
    ck = kdf1(ck, ee)
    ck = kdf1(ck, se)
    ck, tau, k = kdf3(ck, hs.preshared)
    h = hash_(h, tau)
    empty = crypto.seal(k, 0, b"", h)
    h = hash_(h, empty)
    hs.state, hs.hash, hs.chain, hs.local_index = RESPONSE_CREATED, h, ck, sender
    hs.ephemeral_private = e_priv
    return messages.response(messages.Response(sender, hs.remote_index, e_pub, empty,
                                               bytes(16), bytes(16)))


def consume_response(local: Local, hs: Handshake, msg: messages.Response) -> str | None:
    """Consume the response to our initiation; None when it verified, else the reason."""
    if hs.state != INITIATION_CREATED:
        return "unexpected-response"
    h = hash_(hs.hash, msg.ephemeral)
    ck = kdf1(hs.chain, msg.ephemeral)
    ee = crypto.dh(hs.ephemeral_private, msg.ephemeral)
    se = _exchange(local.key, msg.ephemeral)
    if ee is None or se is None:
        return "bad-ephemeral"
    ck = kdf1(ck, ee)
    ck = kdf1(ck, se)
    ck, tau, k = kdf3(ck, hs.preshared)
    h = hash_(h, tau)
    if crypto.open_(k, 0, msg.empty, h) is None:
        return "bad-response"
    hs.state, hs.hash, hs.chain = RESPONSE_CONSUMED, hash_(h, msg.empty), ck
    hs.remote_index = msg.sender
    return None


def derive(hs: Handshake) -> tuple[bytes, bytes, bool]:
    """(send key, receive key, we initiated) for the finished handshake, which is zeroed
    (its ephemeral secret and chaining key are gone)."""
    initiator = hs.state == RESPONSE_CONSUMED
    t1, t2 = kdf2(hs.chain, b"")
    hs.clear()
    return (t1, t2, True) if initiator else (t2, t1, False)
