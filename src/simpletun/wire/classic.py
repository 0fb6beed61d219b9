"""The classic simpletun wire: every packet as a 2-byte big-endian length, then the packet
bytes; no header, no handshake, the same in both directions (pure, sans-IO).

:func:`encode_header` makes the prefix (send it with the packet in one ``sendmsg``);
:class:`Decoder` takes stream bytes in chunks of any size and returns whole packets;
:class:`ViewDecoder` does the same without copying (views into the chunk), for links that
carry 64 KiB messages.
"""

from __future__ import annotations

import struct

from ..packets import Malformed

HEADER_LEN = 2
MAX_LENGTH = 0xFFFF
#: The original C program reads a frame into a 2000-byte buffer without checking: never
#: send it more.
CLASSIC_PEER_MAX = 2000

_LEN = struct.Struct("!H")


class FrameTooLarge(Malformed):
    """A frame announced more bytes than the device on this side can carry."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes, more than the {limit} this side can carry")
        self.length = length
        self.limit = limit


def encode_header(length: int) -> bytes:
    if not 0 < length <= MAX_LENGTH:
        raise ValueError(f"a classic frame carries 1..{MAX_LENGTH} bytes, not {length}")
    return _LEN.pack(length)


def encode(packet: bytes) -> bytes:
    """One whole frame (header + packet) as a single bytes object."""
    return encode_header(len(packet)) + packet


class Decoder:
    """Incremental frame decoder.

    ``feed(chunk)`` returns the packets completed by ``chunk``, in order. A length above
    ``max_packet`` ends the stream: the packets before it are still returned, ``error`` is
    set to a :class:`FrameTooLarge`, and any later ``feed`` raises it (close the
    connection). Zero-length frames are skipped and counted in ``empty``.
    """

    __slots__ = ("_buf", "empty", "error", "max_packet")

    def __init__(self, max_packet: int = MAX_LENGTH) -> None:
        self._buf = bytearray()
        self.max_packet = max_packet
        self.empty = 0
        self.error: FrameTooLarge | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buf)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        if self.error is not None:
            raise self.error
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        pos, end = 0, len(buf)
        limit = self.max_packet
        while end - pos >= HEADER_LEN:
            length = (buf[pos] << 8) | buf[pos + 1]
            if length > limit:
                self.error = FrameTooLarge(length, limit)
                buf.clear()
                return out
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            if length:
                out.append(bytes(buf[pos + HEADER_LEN:stop]))
            else:
                self.empty += 1
            pos = stop
        if pos:
            del buf[:pos]
        return out


class ViewDecoder:
    """Incremental frame decoder that hands out views instead of copies.

    ``feed(chunk)`` returns the messages completed by ``chunk``, in order: a message that
    lies whole inside ``chunk`` is a memoryview into it (valid until the caller reuses the
    chunk's buffer); only a message split across chunks is copied, once, into a buffer of
    its own that is never reused. Every 2-byte length is valid (there is no limit to
    enforce); zero-length frames are skipped and counted in ``empty``.
    """

    __slots__ = ("_carry", "empty")

    def __init__(self) -> None:
        self._carry = bytearray()
        self.empty = 0

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._carry)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[memoryview]:
        out: list[memoryview] = []
        view = memoryview(chunk)
        carry = self._carry
        if carry:  # finish the frame the last chunk left open
            if len(carry) < HEADER_LEN:
                carry += view[:1]
                view = view[1:]
                if len(carry) < HEADER_LEN:
                    return out
            total = HEADER_LEN + ((carry[0] << 8) | carry[1])
            take = total - len(carry)
            if take:
                carry += view[:take]
                view = view[take:]
                if len(carry) < total:
                    return out
            if total > HEADER_LEN:
                out.append(memoryview(carry)[HEADER_LEN:])
                carry = self._carry = bytearray()  # the view keeps the old one
            else:
                self.empty += 1
                carry.clear()
        pos, end = 0, len(view)
        while end - pos >= HEADER_LEN:
            stop = pos + HEADER_LEN + ((view[pos] << 8) | view[pos + 1])
            if stop > end:
                break
            if stop > pos + HEADER_LEN:
                out.append(view[pos + HEADER_LEN:stop])
            else:
                self.empty += 1
            pos = stop
        if pos < end:
            carry += view[pos:]
        return out
