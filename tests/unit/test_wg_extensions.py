"""simpletun's extensions to WireGuard's transport plaintext (EXT_SUPER: a vnet header and a
TCP super-packet; EXT_FRAME: an Ethernet frame on tap), the core's handshake events for
status lines, and :meth:`WireGuard.reconnected` (a TCP link's new connection)."""

from __future__ import annotations

import ipaddress
import struct
import types

from hypothesis import given, settings
from hypothesis import strategies as st

from simpletun.control.uapi import DeviceSet
from simpletun.wireguard.core import HANDSHAKE, NOT_FOR_US, UNKNOWN_PEER
from simpletun.wireguard.engine import Engine
from simpletun.wireguard.messages import EXT_FRAME, EXT_HEADER, EXT_SUPER, INITIATION
from simpletun.wireguard.switch import Switch

from .wgsim import A_TO_B, B_ADDR, Net, Node, ipv4, keepalives, pair, sent, session

VNET = bytes([1, 1]) + struct.pack("<HHHH", 54, 1448, 34, 16)  # NEEDS_CSUM, TCPV4


def _seal(net: Net, src: Node, dst: Node, plain: bytes) -> bytes:
    """``plain`` sealed by ``src`` for ``dst`` on their session (not routed: any bytes)."""
    peer = src.core.peers[dst.public]
    slot = bytearray(16 + len(plain) + 32)
    slot[16:16 + len(plain)] = plain
    n = src.core.seal(peer, memoryview(slot), len(plain), net.now)
    assert n
    return bytes(slot[:n])


def _open(net: Net, node: Node, src: Node, msg: bytes) -> bytes:
    into = bytearray(len(msg))
    n = node.core.open(memoryview(msg), src.address, net.now, memoryview(into))
    return bytes(into[:n])


def _super(packet: bytes, vnet: bytes = VNET) -> bytes:
    return EXT_HEADER.pack(EXT_SUPER, len(vnet) + len(packet)) + vnet + packet


def test_a_super_packet_passes_only_where_extensions_are_on() -> None:
    net, a, b = session()
    plain = _super(ipv4("10.0.0.1", "10.0.0.2", b"s" * 3000))
    assert _open(net, b, a, _seal(net, a, b, plain)) == b""  # a plain WireGuard peer
    assert b.core.drops["bad-inner"] == 1
    b.core.extensions = True
    assert _open(net, b, a, _seal(net, a, b, plain)) == plain
    assert b.core.last_peer is b.core.peers[a.public]


def test_a_super_packet_is_checked_as_any_packet() -> None:
    net, a, b = session()
    b.core.extensions = True
    spoofed = _super(ipv4("10.0.0.99", "10.0.0.2", b"s" * 100))
    assert _open(net, b, a, _seal(net, a, b, spoofed)) == b""
    assert b.core.drops["source-not-allowed"] == 1
    packet = ipv4("10.0.0.1", "10.0.0.2", b"s" * 100)
    # the header's length and the packet's own disagree; or the header overruns the message
    for bad in (EXT_HEADER.pack(EXT_SUPER, 10 + len(packet) - 4) + VNET + packet,
                EXT_HEADER.pack(EXT_SUPER, 10 + len(packet) + 200) + VNET + packet,
                EXT_HEADER.pack(EXT_SUPER, 10) + VNET,
                EXT_HEADER.pack(0x07, len(packet)) + packet,
                EXT_HEADER.pack(EXT_FRAME, len(packet)) + packet):  # a frame on tun
        before = sum(b.core.drops.values())
        assert _open(net, b, a, _seal(net, a, b, bad)) == b""
        assert sum(b.core.drops.values()) == before + 1
    # the first is the packet's own check (its length overruns what the header gives)
    assert b.core.drops["bad-inner"] == 1 and b.core.drops["bad-extension"] == 4


def test_padding_behind_an_extension_is_not_delivered() -> None:
    net, a, b = session()
    b.core.extensions = True
    plain = _super(ipv4("10.0.0.1", "10.0.0.2", b"p" * 7))  # padded to 16 by seal
    msg = _seal(net, a, b, plain)
    assert len(msg) - 32 > len(plain)
    assert _open(net, b, a, msg) == plain


def test_a_tap_core_takes_frames_only() -> None:
    net, a, b = session()
    b.core.tap = b.core.extensions = True
    frame = bytes.fromhex("ffffffffffff" "020000000001" "0806") + b"arp" * 10
    plain = EXT_HEADER.pack(EXT_FRAME, len(frame)) + frame
    assert _open(net, b, a, _seal(net, a, b, plain)) == plain
    assert _open(net, b, a, _seal(net, a, b, A_TO_B)) == b""  # an IP packet: tun on tap
    assert b.core.drops["not-a-frame"] == 1
    runt = EXT_HEADER.pack(EXT_FRAME, 13) + frame[:13]
    assert _open(net, b, a, _seal(net, a, b, runt)) == b""
    assert b.core.drops["bad-extension"] == 1
    assert _open(net, b, a, _seal(net, a, b, _super(A_TO_B))) == b""  # no super on tap
    assert b.core.drops["bad-extension"] == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.booleans())
def test_any_plaintext_is_delivered_whole_or_counted(plain: bytes, tap: bool) -> None:
    net, a, b = session()
    b.core.tap = tap
    b.core.extensions = True
    before = sum(b.core.drops.values())
    got = _open(net, b, a, _seal(net, a, b, plain))
    if got:
        assert plain.startswith(got) or got == plain[:len(got)]
        assert sum(b.core.drops.values()) == before
    else:
        assert sum(b.core.drops.values()) == before + 1


def _caller(net: Net, name: str, address: tuple[str, int], target: Node,
            key: bytes) -> Node:
    """A node b does not know, that takes ``key`` for ``target``'s public key."""
    node = net.node(name, address)
    peer = node.core.add_peer(key)
    node.core.add_allowed(peer, ipaddress.ip_network("0.0.0.0/0"))
    peer.endpoint = target.address
    return node


def test_events_say_who_came_and_who_was_refused() -> None:
    net, a, b = pair()
    net.send(a, A_TO_B)
    net.run()
    assert (HANDSHAKE, B_ADDR, a.core.peers[b.public]) in a.core.events
    assert (HANDSHAKE, a.address, b.core.peers[a.public]) in b.core.events
    b.core.events.clear()
    # a stranger with its own key, knowing b's public key: unknown peer
    stranger = _caller(net, "s", ("192.0.2.9", 1), b, b.public)
    net.send(stranger, A_TO_B)
    net.run()
    assert list(b.core.events) == [(UNKNOWN_PEER, stranger.address, None)]
    # one that took another key for b's: its mac1 does not match
    b.core.events.clear()
    wrong = _caller(net, "w", ("192.0.2.10", 1), b, stranger.public)
    net.send(wrong, A_TO_B)
    net.run()
    assert list(b.core.events) == [(NOT_FOR_US, wrong.address, None)]


def test_events_are_bounded() -> None:
    net, _a, b = pair()
    stranger = _caller(net, "s", ("192.0.2.9", 1), b, b.public)
    net.send(stranger, A_TO_B)
    initiation = sent(net, stranger, INITIATION)[0][1]
    b.core.load_threshold = 10**6  # never under load here: each one reaches the lookup
    for port in range(500):  # a flood of refused initiations keeps the newest 64
        net.deliver(("192.0.2.50", port), b.address, initiation)
    assert b.core.drops["unknown-peer"] == 500
    assert len(b.core.events) == 64 and b.core.events[-1][1] == ("192.0.2.50", 499)


def test_reconnected_without_a_session_initiates_at_once() -> None:
    net, a, b = pair()
    pb = a.core.peers[b.public]
    net.down.add(b.address)  # the link is not up: the first initiation is lost
    a.core.send_keepalive(pb, net.now)
    net.run()
    assert len(sent(net, a, INITIATION)) == 1
    net.down.clear()
    net.now += 1  # well within REKEY_TIMEOUT
    a.core.reconnected(pb, net.now)
    net.run()
    assert len(sent(net, a, INITIATION)) == 2
    assert pb.keypairs.current is not None  # the handshake went through


def test_reconnected_with_a_session_keeps_it_and_shakes_hands_again() -> None:
    net, a, b = session()
    pb, pa = a.core.peers[b.public], b.core.peers[a.public]
    kp = pb.keypairs.current
    net.now += 6
    start = net.now
    rx = pa.rx_bytes
    a.core.reconnected(pb, net.now)
    net.run()
    # the keepalive went on the old session (b took it), and new keys were made at once
    assert keepalives(net, a, since=start) and pa.rx_bytes > rx
    assert len(sent(net, a, INITIATION, since=start)) == 1
    assert pb.keypairs.current is not kp and pb.keypairs.previous is kp
    before = len(b.delivered)
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered[before:] == [A_TO_B]


def test_reconnected_heals_a_restarted_peer_at_once() -> None:
    net, a, b = session()
    pb = a.core.peers[b.public]
    net.now += 1  # soon after the last handshake: a new connection need not wait 5 s
    # b restarts: the same key, no session
    private = b.private
    b.core.remove_all_peers()
    b.core.set_private_key(None)
    b.core.set_private_key(private)
    pa = b.core.add_peer(a.public)
    b.core.add_allowed(pa, ipaddress.ip_network("10.0.0.1/32"))
    a.core.reconnected(pb, net.now)
    net.run()
    before = len(b.delivered)
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered[before:] == [A_TO_B]  # no 15 s wait for the keepalive timer


def test_replacing_all_peers_forgets_their_sessions_and_learned_macs() -> None:
    """wg setconf (replace_peers): nothing the engine keeps may point at a removed peer,
    or frames to a MAC learned behind it would be staged on it and lost."""
    _net, a, b = session()
    peer = a.core.peers[b.public]
    stub = types.SimpleNamespace(core=a.core, sessions={peer: b.address}, switch=Switch(),
                                 companion=None)
    frame = bytes.fromhex("ffffffffffff" "020000000002" "0800") + bytes(46)
    stub.switch.learn(frame, peer, 0.0)
    assert len(stub.switch) == 1
    Engine.uapi_set(stub, DeviceSet(replace_peers=True))  # type: ignore[arg-type]
    assert not a.core.peers and stub.sessions == {} and len(stub.switch) == 0
