"""An attacker on a WireGuard underlay, for the attack tests: forged, replayed and flooding
datagrams built with the core's own codecs (:mod:`simpletun.wireguard.messages`,
:class:`~simpletun.wireguard.cookie.Stamper` for a valid mac1, :func:`noise.create_initiation`
with a throw-away identity), and a UDP socket inside a namespace to send them from.

The builders are pure (bytes out, a ``random.Random`` in where they need chance). The flood
runs as its own process in the attacker's namespace, so it keeps sending while the test
does other things::

    python -m simpletun.lab.wgattack flood HOST PORT SERVER_PUBLIC_KEY [--rate N]

It sends initiations with a valid mac1 for the server's public key and random everything
else (sender index, ephemeral, encrypted static and timestamp, mac2 zero) until SIGTERM or
``--seconds``, takes every answer, and prints one JSON line: what it sent, what came back
by message type, and how many cookie replies decrypt with the mac1 of the initiation they
answer (a genuine cookie reply, not just 64 bytes with a type 3)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..errors import BadKey
from ..packets import l4
from ..tools import pcap
from ..wireguard import crypto, keys, messages, noise
from ..wireguard.cookie import Stamper
from .wghost import ip_packets

Target = tuple[str, int]

_MAC = 16
_SENDER = struct.Struct("<I")


# --- building messages (pure) ----------------------------------------------------------

def with_mac1(msg: bytes | bytearray, server_public: bytes) -> bytes:
    """``msg`` (an initiation or response) with a valid mac1 for ``server_public`` and a
    zero mac2, as a sender without a cookie stamps it."""
    out = bytearray(msg)
    Stamper(server_public).stamp(out, 0.0)
    return bytes(out)


def flip_mac1(msg: bytes | bytearray) -> bytes:
    """``msg`` with one bit of its mac1 flipped: a bad mac1, everything else intact."""
    out = bytearray(msg)
    out[len(out) - 2 * _MAC] ^= 0x01
    return bytes(out)


def mac1_of(msg: bytes | bytearray | memoryview) -> bytes:
    n = len(msg)
    return bytes(msg[n - 2 * _MAC:n - _MAC])


def stranger_initiation(server_public: bytes, sender: int = 1) -> bytes:
    """A real initiation (Noise, fresh TAI64N timestamp, valid mac1) from a throw-away
    identity the server does not know: it costs the server its Diffie-Hellmans and must
    get no answer."""
    local = noise.Local.of(keys.generate_private())
    hs = noise.Handshake(server_public)
    hs.precompute(local)
    msg = noise.create_initiation(local, hs, sender, noise.tai64n(time.time_ns()))
    if msg is None:
        raise ValueError("the server's public key is not usable (a low-order point)")
    return with_mac1(msg, server_public)


def forged_initiation(server_public: bytes, rng: random.Random) -> bytes:
    """An initiation with a valid mac1 for ``server_public`` and random everything else
    (sender index, ephemeral, encrypted static and timestamp): cheap to make by the
    thousand, it passes the mac1 check and costs the server a Diffie-Hellman unless it is
    under load."""
    m = messages.Initiation(rng.getrandbits(32), rng.randbytes(32), rng.randbytes(48),
                            rng.randbytes(28), bytes(_MAC), bytes(_MAC))
    return with_mac1(messages.initiation(m), server_public)


def forged_response(server_public: bytes, receiver: int, rng: random.Random) -> bytes:
    """A handshake response with a valid mac1 to an index ``receiver`` and random the rest."""
    m = messages.Response(rng.getrandbits(32), receiver, rng.randbytes(32), rng.randbytes(16),
                          bytes(_MAC), bytes(_MAC))
    return with_mac1(messages.response(m), server_public)


def typed_garbage(msg_type: int, size: int, rng: random.Random) -> bytes:
    """``size`` bytes that start with a valid type word (``msg_type`` and three zeros) and
    are random after it."""
    return struct.pack("<I", msg_type) + rng.randbytes(max(0, size - 4))


def transport(receiver: int, counter: int, body: bytes) -> bytes:
    """A transport message header for ``receiver``/``counter`` in front of ``body`` (which
    should hold the ciphertext and its tag: at least 16 bytes)."""
    return messages.TRANSPORT_HEADER.pack(messages.TRANSPORT, receiver, counter) + body


def random_datagrams(rng: random.Random, count: int, max_size: int = 1500) -> list[bytes]:
    """Random datagrams of random sizes (0 to ``max_size``) that are no WireGuard message:
    the first four bytes never read as a valid type word."""
    out = []
    for _ in range(count):
        data = bytearray(rng.randbytes(rng.randint(0, max_size)))
        if len(data) >= 4 and 1 <= data[0] <= 4 and not any(data[1:4]):
            data[1] = 0xFF
        out.append(bytes(data))
    return out


def receiver_index(data: bytes) -> int:
    """The receiver index of a response (offset 8), cookie reply or transport message
    (offset 4)."""
    offset = 8 if data[0] == messages.RESPONSE else 4
    return int(_SENDER.unpack_from(data, offset)[0])


def cookie_from(reply: bytes, server_public: bytes, mac1: bytes) -> bytes | None:
    """The cookie in ``reply`` (a cookie reply from the server with ``server_public``) to
    the message whose mac1 was ``mac1``; None if it does not decrypt (not genuine)."""
    m = messages.parse_cookie_reply(reply)
    key = crypto.hash_(crypto.LABEL_COOKIE, server_public)
    return crypto.xopen(key, m.nonce, m.cookie, mac1)


# --- sending from a namespace ----------------------------------------------------------

def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _made_in(netns: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket made inside namespace ``netns`` (this thread enters it for the call only
    and comes back; the socket stays in it)."""
    home = None
    if netns is not None:
        from .netns import _setns

        home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        _setns(netns)
    try:
        return socket.socket(family, kind, proto)
    finally:
        if home is not None:
            from .netns import CLONE_NEWNET, _libc

            _libc.setns(home, CLONE_NEWNET)
            os.close(home)


@contextlib.contextmanager
def socket_in(netns: str | None, family: int = socket.AF_INET) -> Iterator[socket.socket]:
    """A UDP socket made inside namespace ``netns``, closed on the way out."""
    with _made_in(netns, family, socket.SOCK_DGRAM) as sock:
        yield sock


def send_all(netns: str | None, target: Target, datagrams: Iterable[bytes], *,
             gap: float = 0.0) -> int:
    """Send each datagram to ``target`` from one socket in ``netns``; returns how many."""
    n = 0
    with socket_in(netns, _family(target[0])) as sock:
        for data in datagrams:
            sock.sendto(data, target)
            n += 1
            if gap:
                time.sleep(gap)
    return n


# --- the flood (a process of its own) ----------------------------------------------------

class _Stop(Exception):
    pass


def flood(target: Target, server_public: bytes, *, rate: float, seconds: float,
          pool: int = 512, seed: int | None = None) -> dict[str, object]:
    """Send forged initiations (:func:`forged_initiation`, a pool of ``pool`` sent round
    and round) to ``target`` at about ``rate`` per second for ``seconds`` or until SIGTERM;
    read every answer. Returns the summary :func:`main` prints."""
    rng = random.Random(seed)
    msgs = [forged_initiation(server_public, rng) for _ in range(pool)]
    mac1s = {int(_SENDER.unpack_from(m, 4)[0]): mac1_of(m) for m in msgs}
    answers: Counter[str] = Counter()
    genuine = 0
    sent = 0
    names = {1: "initiation", 2: "response", 3: "cookie", 4: "data"}

    def stop(_signo: int, _frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sock = socket.socket(_family(target[0]), socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(target)
    start = time.monotonic()
    try:
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate) + 1
            while sent < due:
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    sock.send(msgs[sent % pool])
                sent += 1
            while True:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                kind = messages.kind(data)
                answers[names[kind] if isinstance(kind, int) else "other"] += 1
                if kind == messages.COOKIE_REPLY:
                    mac1 = mac1s.get(receiver_index(data))
                    if mac1 is not None and cookie_from(data, server_public, mac1):
                        genuine += 1
            select.select([sock], [], [], 0.002)
    except _Stop:
        pass
    finally:
        sock.close()
    return {"sent": sent, "seconds": round(time.monotonic() - start, 3),
            "answers": dict(answers), "genuine_cookies": genuine}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simpletun.lab.wgattack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood", help="forged initiations with a valid mac1, at a rate")
    f.add_argument("host")
    f.add_argument("port", type=int)
    f.add_argument("public_key", help="the server's public key (base64)")
    f.add_argument("--rate", type=float, default=2000.0, help="initiations per second")
    f.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    f.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        public = keys.from_base64(args.public_key)
    except BadKey as exc:
        parser.error(str(exc))
    print("ready", flush=True)
    summary = flood((args.host, args.port), public, rate=args.rate, seconds=args.seconds,
                    seed=args.seed)
    print(json.dumps(summary), flush=True)
    return 0



# --- other links: TCP frames, ICMP echo requests, sockets of any kind ----------------------

def tcp_frame(*msgs: bytes) -> bytes:
    """``msgs`` as the TCP link frames them: each behind a 2-byte big-endian length."""
    return b"".join(struct.pack("!H", len(m)) + m for m in msgs)


def tcp_messages(stream: bytes | bytearray) -> list[bytes]:
    """The messages a TCP link reads from ``stream`` (2-byte lengths; empty frames are
    skipped, a frame left incomplete at the end is never read), as the server decodes
    them (:class:`simpletun.wire.classic.ViewDecoder`)."""
    from ..wire.classic import ViewDecoder

    return [bytes(m) for m in ViewDecoder().feed(bytes(stream))]


def marked_request(ident: int, seq: int, payload: bytes, *, v6: bool = False,
                   checksum: bool = True) -> bytes:
    """An ICMP(v6) echo request with simpletun's request mark in front of ``payload`` (a
    WireGuard message, or nothing: a poll), as a client of the ICMP link sends it. ICMPv4
    gets its checksum (a wrong one with ``checksum=False``); ICMPv6's the kernel fills in."""
    from ..wire import icmp

    head = icmp.head(icmp.ECHO6_REQUEST if v6 else icmp.ECHO_REQUEST, ident, seq,
                     icmp.REQUEST_MAGIC)
    if not v6:
        head = icmp.seal4(head, payload)
        if not checksum:
            head = head[:2] + bytes([head[2] ^ 0xFF]) + head[3:]
    return head + payload


@contextlib.contextmanager
def any_socket_in(netns: str | None, family: int, kind: int,
                  proto: int = 0) -> Iterator[socket.socket]:
    """A socket of any ``kind`` (SOCK_STREAM, SOCK_RAW...) made inside namespace
    ``netns``, as :func:`socket_in` makes UDP ones; closed on the way out."""
    with _made_in(netns, family, kind, proto) as sock:
        yield sock


def connect_in(netns: str | None, target: Target, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to ``target`` from namespace ``netns`` (the caller closes it)."""
    sock = _made_in(netns, _family(target[0]), socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock



# --- reading captures of the other links -----------------------------------------------------

@dataclass(frozen=True)
class Segment:
    """One TCP segment seen on the wire (its payload only, no options)."""

    time: float
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class Echo:
    """One ICMP or ICMPv6 echo message seen on the wire: ``payload`` is what follows the
    8-byte echo header (simpletun's mark, if any, and the message)."""

    time: float
    src: str
    dst: str
    type: int
    ident: int
    seq: int
    payload: bytes

    @property
    def request(self) -> bool:
        return self.type in (8, 128)

    @property
    def mark(self) -> bytes:
        """The 4-byte magic of simpletun's mark, if there is one (else other bytes)."""
        return self.payload[:4]

    @property
    def message(self) -> bytes:
        """The WireGuard message behind the 6-byte mark."""
        return self.payload[6:]


def tcp_segments(records: Iterable[pcap.Record]) -> list[Segment]:
    """The TCP segments in Ethernet capture records."""
    out = []
    for t, src, dst, proto, seg in ip_packets(records):
        if proto != 6:
            continue
        try:
            h = l4.parse_tcp(seg)
        except Exception:
            continue
        out.append(Segment(t, src, dst, h.sport, h.dport, h.seq, h.flags,
                           seg[h.header_len:]))
    return out


def echoes(records: Iterable[pcap.Record]) -> list[Echo]:
    """The ICMP and ICMPv6 echo requests and replies in Ethernet capture records."""
    out = []
    for t, src, dst, proto, msg in ip_packets(records):
        if proto not in (1, 58) or len(msg) < 8 or msg[0] not in (0, 8, 128, 129):
            continue
        kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", msg)
        out.append(Echo(t, src, dst, kind, ident, seq, msg[8:]))
    return out



if __name__ == "__main__":
    sys.exit(main())
