"""Behaviour a review of issue 13 found differing from wireguard-go (the core, the engine's
UAPI handling, the device side), each fixed and kept here as a regression test."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Any

from simpletun.control.uapi import PeerSet
from simpletun.device import vnet
from simpletun.device.side import DeviceSide
from simpletun.packets.checksum import checksum, pseudo4
from simpletun.transport import udp
from simpletun.wire import segment
from simpletun.wireguard.engine import Engine
from simpletun.wireguard.messages import INITIATION, RESPONSE

from .wgsim import A_TO_B, B_ADDR, B_TO_A, Net, pair


def test_responder_does_not_initiate_right_after_its_response() -> None:
    net, a, b = pair()
    net.send(a, A_TO_B)
    src, dst, init = net.wire.pop(0)
    assert init[0] == INITIATION
    net.deliver(src, dst, init)
    net.collect()
    assert [m[0] for _s, _d, m in net.wire] == [RESPONSE]
    net.wire.clear()  # the response is still on its way to a
    # b's device has a packet for a before a's first transport message arrived: staged
    assert net.send(b, B_TO_A) == 0
    # wireguard-go: no initiation within REKEY_TIMEOUT of the response it just sent; the
    # staged packet leaves when a's keepalive confirms the session
    assert [m[0] for _s, _d, m in net.wire if m[0] == INITIATION] == []


class _StubEngine:
    """What Engine._set_peer touches: the core and the socket."""

    def __init__(self, net: Net) -> None:
        self.core = net.nodes[("192.0.2.1", 51820)].core
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.switch = None

    def endpoint(self, host: str, port: int) -> Any:
        return Engine.endpoint(self, host, port)  # type: ignore[arg-type]


def test_staged_packets_leave_when_the_endpoint_is_set() -> None:
    net, a, b = pair()
    pb = a.core.peers[b.public]
    pb.endpoint = None  # configured without an endpoint
    assert net.send(a, A_TO_B) == 0  # staged; no handshake possible yet
    assert pb.staged and not net.wire
    stub = _StubEngine(net)
    try:
        Engine._set_peer(stub, PeerSet(public_key=b.public, endpoint=B_ADDR),  # type: ignore[arg-type]
                         net.now)
    finally:
        stub.sock.close()
    # an initiation goes to the new endpoint at once
    assert [m[0] for m, _to in a.core.outbox] == [INITIATION]


# --- the device side: TCP segments decrypted from the network merged into one write -----------

SRC4, DST4 = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])


def _segment(seq: int, payload: bytes, *, good: bool = True) -> memoryview:
    """A whole IPv4 TCP segment (checksums complete, as a peer's device sends it), or one whose
    TCP checksum is wrong."""
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, seq, 7, 5 << 4, 0x10, 65535, 0, 0)
                    + payload)
    struct.pack_into("!H", tcp, 16, checksum(tcp, pseudo4(SRC4, DST4, 6, len(tcp))))
    if not good:
        tcp[16] ^= 0x55
    ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0)
                   + SRC4 + DST4)
    struct.pack_into("!H", ip, 10, checksum(ip))
    return memoryview(bytes(ip + tcp))


class _FakeTun:
    """A tun device as DeviceSide writes to it: each write one datagram of a unix socket
    pair, so the writes can be read back one by one."""

    name = "fake0"
    tap = False
    vnet_hdr_size = vnet.VNET_HDR_LEN

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.theirs.setblocking(False)

    def fileno(self) -> int:
        return self.ours.fileno()

    def write_parts(self, *parts: Any) -> int:
        return os.writev(self.ours.fileno(), parts)

    def written(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.theirs.recv(1 << 17))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


def test_a_segment_with_a_bad_tcp_checksum_is_not_merged() -> None:
    tun = _FakeTun()
    side = DeviceSide(tun, mtu=1420, offloads=0)  # type: ignore[arg-type]
    packets = [_segment(1000, b"x" * 1000), _segment(2000, b"y" * 1000, good=False),
               _segment(3000, b"z" * 500)]
    assert [e - s for s, e in segment.runs(packets)] == [3]  # they do make one run
    try:
        side.deliver_segments(packets)
        writes = tun.written()
    finally:
        tun.close()
    assert writes, "nothing was written"
    for written in writes:
        h = vnet.unpack(written[:vnet.VNET_HDR_LEN])
        body = written[vnet.VNET_HDR_LEN:]
        # the bad segment may reach the device only as itself, its checksum for the
        # kernel to check: never inside a super-packet whose checksum the kernel fills in
        assert not (h.flags & vnet.F_NEEDS_CSUM and b"y" * 1000 in body)


# --- the engine: the device deleted while datagrams still arrive -------------------------------


class _DeletedSide:
    """A device side whose device was deleted (``ip link del``, ``wg-quick down``): every
    write fails with EBADFD, as a tun fd's does then."""

    def _gone(self, *_args: Any) -> None:
        raise OSError(errno.EBADFD, os.strerror(errno.EBADFD))

    deliver = deliver_authenticated = deliver_segments = _gone


class _NetStub:
    """What Engine._from_network touches, around a core that has a session with ``a``."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.side = _DeletedSide()
        self.dev = type("Dev", (), {"name": "wgtest0"})()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.link = udp.Endpoint(self.sock)
        self.tap = False
        self._out: dict[Any, Any] = {}
        self._rbuf = bytearray(65536 + 64)
        self._plain = bytearray(65536 + 64)
        self._plain_view = memoryview(self._plain)
        self._receives = 16
        self.stopped = ""

    def stop(self, reason: str = "") -> None:
        self.stopped = reason

    def _flush_outbox(self) -> None:
        self.core.outbox.clear()

    _receive = Engine._receive


def test_a_packet_for_a_deleted_device_stops_the_engine_cleanly() -> None:
    net, a, b = pair()
    net.now = time.monotonic()  # the engine's clock
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered == [A_TO_B]
    peer = a.core.peers[b.public]
    slot = bytearray(16 + len(A_TO_B) + 32)
    slot[16:16 + len(A_TO_B)] = A_TO_B
    n = a.core.seal(peer, memoryview(slot), len(A_TO_B), net.now)
    assert n
    stub = _NetStub(b.core)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(bytes(slot[:n]), stub.sock.getsockname())
        Engine._from_network(stub)  # type: ignore[arg-type]
    finally:
        stub.sock.close()
    assert stub.stopped, "the engine should stop: its device is gone"
