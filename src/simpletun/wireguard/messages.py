"""WireGuard's four messages on the wire (whitepaper 5.4), pure: sizes, layouts and one
validating parser. Integers are little-endian; the type is one byte followed by three zero
bytes, so the first four bytes read as a little-endian integer equal the type.

:func:`kind` is the one gate every datagram passes: it names the message or the reason it
is dropped, never raises."""

from __future__ import annotations

import struct
from typing import NamedTuple

INITIATION, RESPONSE, COOKIE_REPLY, TRANSPORT = 1, 2, 3, 4

INITIATION_LEN = 148
RESPONSE_LEN = 92
COOKIE_REPLY_LEN = 64
TRANSPORT_HEADER_LEN = 16
TAG_LEN = 16
TRANSPORT_MIN_LEN = TRANSPORT_HEADER_LEN + TAG_LEN  # a keepalive
#: the largest transport message: a 64 KiB packet, its padding and the tag
TRANSPORT_MAX_LEN = TRANSPORT_HEADER_LEN + 65535 + 16 + TAG_LEN

#: simpletun's extensions, for peers that are both simpletun (docs/design.md): a transport
#: message's plaintext that starts with a byte whose high nibble is 0 (an IP packet's is 4
#: or 6) is an extension header, the kind, a zero byte and the length of what follows (so
#: the padding behind it is known):
#: EXT_SUPER: a virtio_net_hdr (10 bytes) and the TCP super-packet it describes (up to
#: 64 KiB in one message, over TCP between simpletun peers); EXT_FRAME: an Ethernet frame
#: (tap tunnels).
EXT_SUPER, EXT_FRAME = 0x01, 0x02
EXT_HEADER = struct.Struct("!BxH")
EXT_LEN = EXT_HEADER.size  # 4

# type word, sender, ephemeral, static (32+16), timestamp (12+16), mac1, mac2
_INITIATION = struct.Struct("<II32s48s28s16s16s")
# type word, sender, receiver, ephemeral, empty (0+16), mac1, mac2
_RESPONSE = struct.Struct("<III32s16s16s16s")
# type word, receiver, nonce, cookie (16+16)
_COOKIE_REPLY = struct.Struct("<II24s32s")
# type word, receiver, counter
TRANSPORT_HEADER = struct.Struct("<IIQ")

assert _INITIATION.size == INITIATION_LEN
assert _RESPONSE.size == RESPONSE_LEN
assert _COOKIE_REPLY.size == COOKIE_REPLY_LEN


class Initiation(NamedTuple):
    sender: int
    ephemeral: bytes
    static: bytes  # encrypted
    timestamp: bytes  # encrypted
    mac1: bytes
    mac2: bytes


class Response(NamedTuple):
    sender: int
    receiver: int
    ephemeral: bytes
    empty: bytes  # encrypted nothing: the tag alone
    mac1: bytes
    mac2: bytes


class CookieReply(NamedTuple):
    receiver: int
    nonce: bytes
    cookie: bytes  # encrypted


_SIZES = {INITIATION: INITIATION_LEN, RESPONSE: RESPONSE_LEN, COOKIE_REPLY: COOKIE_REPLY_LEN}


def kind(data: bytes | bytearray | memoryview) -> int | str:
    """The message type of ``data`` if it is well-formed as one (size and reserved bytes),
    else the drop reason: ``runt``, ``bad-type``, ``bad-size``."""
    n = len(data)
    if n < 4:
        return "runt"
    t = data[0]
    if data[1] or data[2] or data[3] or not 1 <= t <= 4:
        return "bad-type"
    if t == TRANSPORT:
        if n < TRANSPORT_MIN_LEN:
            return "bad-size"
        if n > TRANSPORT_MAX_LEN:
            return "oversized"
        return t
    return t if n == _SIZES[t] else "bad-size"


def parse_initiation(data: bytes | bytearray | memoryview) -> Initiation:
    return Initiation(*_INITIATION.unpack(data)[1:])


def parse_response(data: bytes | bytearray | memoryview) -> Response:
    return Response(*_RESPONSE.unpack(data)[1:])


def parse_cookie_reply(data: bytes | bytearray | memoryview) -> CookieReply:
    return CookieReply(*_COOKIE_REPLY.unpack(data)[1:])


def initiation(m: Initiation) -> bytearray:
    return bytearray(_INITIATION.pack(INITIATION, *m))


def response(m: Response) -> bytearray:
    return bytearray(_RESPONSE.pack(RESPONSE, *m))


def cookie_reply(m: CookieReply) -> bytes:
    return _COOKIE_REPLY.pack(COOKIE_REPLY, *m)


def padded(size: int, mtu: int) -> int:
    """The plaintext size a packet of ``size`` bytes is padded to: the next multiple of 16,
    never beyond the MTU (whitepaper 5.4.6; wireguard-go's rule for packets above it)."""
    last = size
    if mtu and last > mtu:
        last %= mtu
    p = (last + 15) & ~15
    if mtu and p > mtu:
        p = mtu
    return size + (p - last)
