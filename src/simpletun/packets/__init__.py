"""Pure parsing and building of the packets a tun/tap device carries (no I/O).

Parsers take bytes and return small named tuples, raising :class:`Malformed` when the
bytes are not what they claim to be; builders return bytes with correct checksums.
"""

from __future__ import annotations


class Malformed(ValueError):
    """The bytes are truncated or inconsistent; the message names what is wrong."""


__all__ = ["Malformed"]
