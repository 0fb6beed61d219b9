"""The native simpletun wire: a versioned handshake, then typed frames of up to 64 KiB
plus headers (pure, sans-IO).

**Handshake.** The client speaks first with a HELLO; the server answers with its own HELLO
(features agreed; on a tun/tap or MTU mismatch its own unchanged HELLO, so that the client
can say what is wrong from its side) or, for what the client cannot judge (another
version), a REFUSE carrying a one-line reason. Both travel *inside a classic
frame* (2-byte length) holding an IPv6 packet from ::1 to ::1 with hop limit 0 and next
header 253 (RFC 3692, experiments) whose payload is the message. A classic peer (the
original C program) writes that frame into its device like any other packet, and its kernel
drops it (a loopback destination arriving on a non-loopback device): the classic peer
survives, never answers, and the client falls back to the classic wire.

HELLO payload: magic ``b"simpletun"``, version (1), kind (1 tun, 2 tap), MTU (u16),
features (u32), session id (8 bytes), queue (u16), queues (u16). With ``--workers`` a
client opens one connection per queue of its multi-queue device, all with one session id;
``queue`` says which this connection is and ``queues`` how many the sender runs (the
session uses as many as the smaller side has). REFUSE payload: magic, version, 0xFF,
then a UTF-8 reason. A reason that starts with :data:`BUSY` says the server is serving
another live client: try again later (an older client shows it as an ordinary refusal).

**Frames.** 4-byte header: type (1 byte), length (3 bytes, big-endian), then the payload.
DATA carries one packet; DATA_VNET carries a 10-byte virtio_net_hdr and a packet (a TCP/UDP
super-packet when offloads are on); KEEPALIVE carries nothing; CLOSE a UTF-8 reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..packets import Malformed
from .classic import encode as classic_encode

MAGIC = b"simpletun"
VERSION = 1
KIND_TUN, KIND_TAP = 1, 2
REFUSE = 0xFF
#: how a refusal that is worth retrying begins: the server serves another live client
BUSY = "busy: "

FEATURE_VNET = 0x01  # DATA_VNET frames: vnet_hdr + (super-)packet, offloads on both devices
FEATURE_KEEPALIVE = 0x02
ALL_FEATURES = FEATURE_VNET | FEATURE_KEEPALIVE

DATA, DATA_VNET, KEEPALIVE, CLOSE = 1, 2, 3, 4
FRAME_TYPES = {DATA, DATA_VNET, KEEPALIVE, CLOSE}
HEADER_LEN = 4
VNET_HDR_LEN = 10
#: largest payload: a 64 KiB super-packet, its vnet_hdr and an Ethernet+VLAN header
MAX_PAYLOAD = 65535 + VNET_HDR_LEN + 18

# the IPv6 envelope of handshake messages
_ENVELOPE_NH = 253
_LOOPBACK6 = bytes(15) + b"\x01"
_HELLO = struct.Struct("!9sBBHI8sHH")
_REFUSE_HEAD = struct.Struct("!9sBB")


class HandshakeError(Malformed):
    """The peer speaks the native protocol but the two sides cannot work together."""


@dataclass(frozen=True)
class Hello:
    tap: bool
    mtu: int
    features: int
    session: bytes  # 8 bytes, chosen by the client
    queue: int = 0
    queues: int = 1
    version: int = VERSION

    @property
    def kind(self) -> str:
        return "tap" if self.tap else "tun"


def _envelope(payload: bytes) -> bytes:
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(payload), _ENVELOPE_NH, 0, _LOOPBACK6,
                       _LOOPBACK6)
    return classic_encode(ipv6 + payload)


def _unwrap(packet: bytes) -> bytes | None:
    """The handshake payload if ``packet`` is a handshake envelope, else None."""
    if (len(packet) < 40 + len(MAGIC) or packet[0] >> 4 != 6 or packet[6] != _ENVELOPE_NH
            or packet[8:40] != _LOOPBACK6 * 2):
        return None
    payload = packet[40:]
    return payload if payload.startswith(MAGIC) else None


def is_handshake(packet: bytes | memoryview) -> bool:
    """Is ``packet`` (a classic frame's content) a handshake envelope?"""
    return _unwrap(bytes(packet[:40 + len(MAGIC)])) is not None


def encode_hello(hello: Hello) -> bytes:
    return _envelope(_HELLO.pack(MAGIC, hello.version, KIND_TAP if hello.tap else KIND_TUN,
                                 hello.mtu, hello.features, hello.session, hello.queue,
                                 hello.queues))


def encode_refuse(reason: str) -> bytes:
    return _envelope(_REFUSE_HEAD.pack(MAGIC, VERSION, REFUSE) + reason.encode()[:1000])


def decode_handshake(packet: bytes) -> Hello | str | None:
    """A handshake packet (the inside of a classic frame): a Hello, a refusal reason (str),
    or None if it is not a handshake at all (an ordinary packet from a classic peer)."""
    payload = _unwrap(packet)
    if payload is None:
        return None
    if len(payload) < _REFUSE_HEAD.size:
        raise HandshakeError("truncated handshake")
    _magic, version, kind = _REFUSE_HEAD.unpack_from(payload)
    if kind == REFUSE:
        return payload[_REFUSE_HEAD.size:].decode(errors="replace")
    if version != VERSION:
        raise HandshakeError(f"peer speaks simpletun protocol version {version}, this side "
                             f"{VERSION}: run the same simpletun version on both sides")
    if len(payload) < _HELLO.size:
        raise HandshakeError("truncated hello")
    _m, _v, kind, mtu, features, session, queue, queues = _HELLO.unpack_from(payload)
    if kind not in (KIND_TUN, KIND_TAP):
        raise HandshakeError(f"peer announced device kind {kind}")
    return Hello(tap=kind == KIND_TAP, mtu=mtu, features=features, session=session, queue=queue,
                 queues=queues)


def agree(local: Hello, remote: Hello) -> Hello:
    """The session both sides can have (features intersected, the fewer queues; the client's
    session id and queue), or HandshakeError with the reason, worded from ``local``'s side."""
    if local.tap != remote.tap:
        raise HandshakeError(f"peer is {remote.kind}, this side is {local.kind}: use -a on "
                             "both sides")
    if local.mtu != remote.mtu:
        raise HandshakeError(f"peer's MTU is {remote.mtu}, this side's {local.mtu}: set the same "
                             f"--mtu on both sides")
    return Hello(tap=local.tap, mtu=local.mtu, features=local.features & remote.features,
                 session=remote.session, queue=remote.queue,
                 queues=min(local.queues, remote.queues))


# --- frames ------------------------------------------------------------------------------

def frame_header(kind: int, length: int) -> bytes:
    if kind not in FRAME_TYPES or not 0 <= length <= MAX_PAYLOAD:
        raise ValueError(f"bad frame: type {kind}, {length} bytes")
    return bytes((kind, length >> 16, (length >> 8) & 0xFF, length & 0xFF))


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    return frame_header(kind, len(payload)) + payload


class FrameError(Malformed):
    """A frame the stream cannot recover from: unknown type or over the size limit."""


class Decoder:
    """Incremental native frame decoder: ``feed`` returns ``(type, payload)`` pairs for the
    frames completed so far. A bad header ends the stream: the frames before it are still
    returned and ``error`` is set (later feeds raise it)."""

    __slots__ = ("_buf", "error", "max_payload")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self.max_payload = max_payload
        self.error: FrameError | None = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Frames completed by ``chunk``, their payloads as bytes."""
        return [(kind, bytes(payload)) for kind, payload in self.feed_views(chunk)]

    def feed_views(self, chunk: bytes | bytearray | memoryview,
                   ) -> list[tuple[int, bytes | memoryview]]:
        """Like :meth:`feed`, without copying: a frame that lies whole inside ``chunk`` comes
        out as a memoryview into it (valid until ``chunk``'s buffer is reused); only a frame
        split across chunks is copied. The hot receive path of the tunnel."""
        if self.error is not None:
            raise self.error
        out: list[tuple[int, bytes | memoryview]] = []
        view = memoryview(chunk)
        carry = self._buf
        if carry:  # finish the frame the last chunk left open
            if len(carry) < HEADER_LEN:
                take = HEADER_LEN - len(carry)
                carry += view[:take]
                view = view[take:]
                if len(carry) < HEADER_LEN:
                    return out
            kind, length = carry[0], (carry[1] << 16) | (carry[2] << 8) | carry[3]
            if not self._valid(kind, length):
                return out
            take = HEADER_LEN + length - len(carry)
            carry += view[:take]
            view = view[take:]
            if len(carry) < HEADER_LEN + length:
                return out
            out.append((kind, bytes(carry[HEADER_LEN:])))
            carry.clear()
        pos, end = 0, len(view)
        while end - pos >= HEADER_LEN:
            kind = view[pos]
            length = (view[pos + 1] << 16) | (view[pos + 2] << 8) | view[pos + 3]
            if not self._valid(kind, length):
                return out
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            out.append((kind, view[pos + HEADER_LEN:stop]))
            pos = stop
        if pos < end:
            carry += view[pos:]
        return out

    def _valid(self, kind: int, length: int) -> bool:
        if kind in FRAME_TYPES and length <= self.max_payload:
            return True
        self.error = FrameError(f"frame of type {kind} and {length} bytes (at most "
                                f"{self.max_payload} of types {sorted(FRAME_TYPES)})")
        self._buf.clear()
        return False


# --- the handshake as state machines (bytes in, outcome out) ----------------------------

@dataclass(frozen=True)
class Outcome:
    """How a connection proceeds: ``native`` with the agreed ``hello``, ``classic``,
    ``refused`` with ``reason``, or ``busy`` (the server serves another client: retry).
    ``leftover`` are stream bytes that belong to the session
    (for classic: everything received, the first frame included); ``reply`` is what the
    server must send before anything else."""

    wire: str
    hello: Hello | None = None
    leftover: bytes = b""
    reply: bytes = b""
    reason: str = ""


def _first_frame(buf: bytearray) -> bytes | None:
    """The first classic frame's packet once it is complete (None until then)."""
    if len(buf) < 2:
        return None
    length = (buf[0] << 8) | buf[1]
    if len(buf) < 2 + length:
        return None
    return bytes(buf[2:2 + length])


class _Handshake:
    """What both sides share: the bytes seen so far, waiting for the first classic frame."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def _first(self, data: bytes) -> bytes | None:
        """The first frame's packet once ``data`` completes it."""
        self._buf += data
        return _first_frame(self._buf)

    def _rest(self, packet: bytes) -> bytes:
        """What followed the first frame: the session's first bytes."""
        return bytes(self._buf[2 + len(packet):])

    def timed_out(self) -> Outcome:
        """The peer stayed silent: a classic peer with nothing to say yet."""
        return Outcome("classic", leftover=bytes(self._buf))


class ClientHandshake(_Handshake):
    """Send :meth:`start`'s bytes, then ``feed`` what arrives until an Outcome, or call
    :meth:`timed_out` when the server stays silent (a classic server never answers)."""

    def __init__(self, hello: Hello) -> None:
        super().__init__()
        self.hello = hello

    def start(self) -> bytes:
        return encode_hello(self.hello)

    def feed(self, data: bytes) -> Outcome | None:
        packet = self._first(data)
        if packet is None:
            return None
        msg = decode_handshake(packet)
        if msg is None:  # a classic server sent a packet first
            return Outcome("classic", leftover=bytes(self._buf))
        if isinstance(msg, str):
            if msg.startswith(BUSY):
                return Outcome("busy", reason=msg[len(BUSY):])
            return Outcome("refused", reason=msg)
        try:  # the server answers a mismatch with its own hello: say why from this side
            agreed = agree(self.hello, msg)
        except HandshakeError as exc:
            return Outcome("refused", reason=str(exc))
        return Outcome("native", hello=agreed, leftover=self._rest(packet))


class ServerHandshake(_Handshake):
    """``feed`` what a new client sends until an Outcome; :meth:`timed_out` if it stays
    silent (a classic client with nothing to send yet)."""

    def __init__(self, local: Hello) -> None:
        super().__init__()
        self.local = local

    def feed(self, data: bytes) -> Outcome | None:
        packet = self._first(data)
        if packet is None:
            return None
        try:
            msg = decode_handshake(packet)
        except HandshakeError as exc:  # e.g. another version: the client cannot judge it
            return Outcome("refused", reason=str(exc), reply=encode_refuse(str(exc)))
        if msg is None:  # a classic client: its first frame is a packet
            return Outcome("classic", leftover=bytes(self._buf))
        if isinstance(msg, str):
            return Outcome("refused", reason=f"client sent a refusal: {msg}")
        try:
            agreed = agree(self.local, msg)
        except HandshakeError as exc:  # answer with our own hello: the client sees why
            return Outcome("refused", reason=str(exc), reply=encode_hello(self.local))
        local = Hello(tap=self.local.tap, mtu=self.local.mtu, features=agreed.features,
                      session=agreed.session, queue=agreed.queue, queues=self.local.queues)
        return Outcome("native", hello=agreed, leftover=self._rest(packet),
                       reply=encode_hello(local))
