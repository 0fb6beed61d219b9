"""mac1, mac2 and cookie replies (whitepaper 5.4.4 and 5.4.7), pure.

:class:`Checker` is the responder's side: mac1 proves the sender knows our public key;
under load, mac2 proves it can receive at its address (a cookie we sent there), and
messages without it get a cookie reply instead of a Diffie-Hellman. :class:`Stamper` is the
sender's side: it writes mac1/mac2 into outgoing handshake messages and takes the cookie
from a reply."""

from __future__ import annotations

import os

from . import crypto, messages
from .crypto import LABEL_COOKIE, LABEL_MAC1, hash_, mac

COOKIE_REFRESH = 120.0  # the responder's secret changes, and a cookie expires, after this
_MAC_LEN = 16


def _macs_at(msg: bytes | bytearray | memoryview) -> tuple[int, int]:
    n = len(msg)
    return n - 2 * _MAC_LEN, n - _MAC_LEN


class Checker:
    """Checks the macs of handshake messages sent to us and makes cookie replies."""

    __slots__ = ("_cookie_key", "_mac1_key", "_secret", "_secret_at")

    def __init__(self, public: bytes) -> None:
        self._mac1_key = hash_(LABEL_MAC1, public)
        self._cookie_key = hash_(LABEL_COOKIE, public)
        self._secret = b""
        self._secret_at = -1e18

    def mac1_ok(self, msg: bytes | bytearray | memoryview) -> bool:
        m1, m2 = _macs_at(msg)
        return crypto.equal(mac(self._mac1_key, msg[:m1]), msg[m1:m2])

    def _cookie(self, source: bytes, now: float) -> bytes:
        if now - self._secret_at > COOKIE_REFRESH:
            self._secret, self._secret_at = os.urandom(32), now
        return mac(self._secret, source)

    def mac2_ok(self, msg: bytes | bytearray | memoryview, source: bytes, now: float) -> bool:
        """Whether mac2 is the MAC of the cookie we would give ``source`` (its address and
        port, as bytes) now."""
        if now - self._secret_at > COOKIE_REFRESH:
            return False
        _m1, m2 = _macs_at(msg)
        return crypto.equal(mac(self._cookie(source, now), msg[:m2]), msg[m2:])

    def reply(self, msg: bytes | bytearray | memoryview, receiver: int, source: bytes,
              now: float) -> bytes:
        """The cookie reply to ``msg`` (an initiation or response whose sender index is
        ``receiver``) from ``source``."""
        m1, m2 = _macs_at(msg)
        nonce = os.urandom(24)
        sealed = crypto.xseal(self._cookie_key, nonce, self._cookie(source, now),
                              bytes(msg[m1:m2]))
        return messages.cookie_reply(messages.CookieReply(receiver, nonce, sealed))


class Stamper:
    """Writes mac1/mac2 into the handshake messages we send to one peer, and keeps the
    cookie that peer's replies give us."""

    __slots__ = ("_cookie", "_cookie_at", "_cookie_key", "_last_mac1", "_mac1_key")

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = hash_(LABEL_MAC1, peer_public)
        self._cookie_key = hash_(LABEL_COOKIE, peer_public)
        self._cookie = b""
        self._cookie_at = -1e18
        self._last_mac1 = b""

    def stamp(self, msg: bytearray, now: float) -> None:
        m1, m2 = _macs_at(msg)
        msg[m1:m2] = self._last_mac1 = mac(self._mac1_key, msg[:m1])
        if self._cookie and now - self._cookie_at < COOKIE_REFRESH:
            msg[m2:] = mac(self._cookie, msg[:m2])
        else:
            msg[m2:] = bytes(_MAC_LEN)

    def take(self, reply: messages.CookieReply, now: float) -> bool:
        """Take the cookie of a reply to the last message we stamped; False if it does not
        decrypt (not for that message, forged)."""
        if not self._last_mac1:
            return False
        cookie = crypto.xopen(self._cookie_key, reply.nonce, reply.cookie, self._last_mac1)
        if cookie is None:
            return False
        self._cookie, self._cookie_at = cookie, now
        return True
