"""The sans-IO WireGuard core joined by wgsim's in-memory network: the responder's *next*
keypair, initiation replay and rate limit, cookies under load, source checks, roaming,
transport replay, removing peers, changing keys, pre-shared keys, routing by allowed IPs."""

from __future__ import annotations

import ipaddress

from simpletun.wireguard import cookie, keys, noise
from simpletun.wireguard.core import WireGuard
from simpletun.wireguard.keypair import Keypair
from simpletun.wireguard.messages import COOKIE_REPLY, INITIATION, RESPONSE, TRANSPORT

from .wgsim import A_TO_B, B_TO_A, Net, Node, ipv4, ipv6, pair, sent
from .wgsim import session as _session


def _initiation(frm: Node, to: Node, unix_ns: int, index: int = 1) -> bytes:
    """An initiation from ``frm``'s identity to ``to`` with the timestamp we choose."""
    local = noise.Local.of(frm.private)
    hs = noise.Handshake(to.public)
    hs.precompute(local)
    msg = noise.create_initiation(local, hs, index, noise.tai64n(unix_ns))
    assert msg is not None
    cookie.Stamper(to.public).stamp(msg, 0.0)
    return bytes(msg)


def _open(node: Node, msg: bytes, source: tuple[str, int], now: float) -> int:
    into = bytearray(max(len(msg), 32))
    return node.core.open(memoryview(msg), source, now, memoryview(into))


def test_responder_waits_for_the_initiators_first_message() -> None:
    net, a, b = pair()
    net.send(a, A_TO_B)
    # initiation -> b, response -> a; hold what a sends next
    src, dst, init = net.wire.pop(0)
    net.deliver(src, dst, init)
    net.collect()
    src, dst, resp = net.wire.pop(0)
    assert resp[0] == RESPONSE
    pb = b.core.peers[a.public]
    assert pb.keypairs.next is not None and pb.keypairs.current is None
    net.deliver(src, dst, resp)
    net.collect()
    held = list(net.wire)
    net.wire.clear()
    assert [m[0] for _s, _d, m in held] == [TRANSPORT]
    # b has a packet for a: it may not use *next*; it is staged
    assert net.send(b, B_TO_A) == 0
    assert pb.staged
    assert not [m for _s, _d, m in net.wire if m[0] == TRANSPORT]
    net.wire.clear()  # (b may have started a handshake of its own; drop it)
    # a's first transport message confirms the session; b's staged packet goes
    for s, d, m in held:
        net.deliver(s, d, m)
    net.collect()
    assert pb.keypairs.current is not None and pb.keypairs.next is None
    assert b.delivered == [A_TO_B]
    net.run()
    assert a.delivered == [B_TO_A]


def test_initiation_replay_is_dropped() -> None:
    net, a, b = pair()
    net.send(a, A_TO_B)
    _s, _d, init = net.wire[0]
    net.run()
    assert b.delivered == [A_TO_B]
    net.now += 1
    replies = len(net.history)
    net.deliver(a.address, b.address, init)
    net.collect()
    assert b.core.drops["replayed-initiation"] == 1
    assert len(net.history) == replies  # no answer
    # even from another address, and the session is untouched
    net.deliver(("203.0.113.5", 1), b.address, init)
    assert b.core.drops["replayed-initiation"] == 2
    assert b.core.peers[a.public].endpoint == a.address
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered == [A_TO_B, A_TO_B]


def test_older_initiation_is_dropped() -> None:
    net, a, b = pair()
    t = 1_700_000_000 * 10**9
    assert _open(b, _initiation(a, b, t), a.address, net.now) == 0
    assert len(b.core.outbox) == 1
    b.core.outbox.clear()
    _open(b, _initiation(a, b, t - 10**9), a.address, net.now + 1)
    assert b.core.drops["replayed-initiation"] == 1 and not b.core.outbox


def test_handshake_rate_limit_per_peer() -> None:
    """At most one initiation per 20 ms (50 per second) is consumed from a peer."""
    net, a, b = pair()
    t = 1_700_000_000 * 10**9
    now = net.now
    assert _open(b, _initiation(a, b, t), a.address, now) == 0
    assert len(b.core.outbox) == 1
    _open(b, _initiation(a, b, t + 10**9), a.address, now + 0.01)
    assert b.core.drops["initiation-flood"] == 1
    assert len(b.core.outbox) == 1
    _open(b, _initiation(a, b, t + 2 * 10**9), a.address, now + 0.025)
    assert len(b.core.outbox) == 2 and sum(b.core.drops.values()) == 1
    # another peer is not limited by a's rate
    c = net.node("c", ("192.0.2.3", 51820))
    b.core.add_peer(c.public)
    _open(b, _initiation(c, b, t), c.address, now + 0.026)
    assert len(b.core.outbox) == 3 and sum(b.core.drops.values()) == 1


def test_under_load_cookie_then_through() -> None:
    net, a, b = pair()
    b.core.load_threshold = 0  # every handshake message puts b under load
    net.send(a, A_TO_B)
    net.run()
    assert b.core.cookies_sent == 1 and b.core.drops["under-load"] == 1
    assert [m[0] for _t, m in sent(net, b, COOKIE_REPLY)] == [COOKIE_REPLY]
    assert not sent(net, b, RESPONSE)
    assert not b.delivered and a.core.drops["bad-cookie-reply"] == 0
    # a's retry carries mac2 with the cookie and goes through
    net.advance(6, step=0.5)
    assert b.delivered == [A_TO_B]
    inits = sent(net, a, INITIATION)
    assert len(inits) == 2
    assert inits[0][1][132:] == bytes(16) and inits[1][1][132:] != bytes(16)
    assert b.core.cookies_sent == 1


def test_under_load_cookie_is_bound_to_the_source() -> None:
    net, a, b = pair()
    b.core.load_threshold = 0
    net.send(a, A_TO_B)
    net.run()
    assert b.core.cookies_sent == 1
    # a moves before its retry: the cookie is for the old address, another reply comes
    del net.nodes[a.address]
    a.address = ("192.0.2.77", 4000)
    net.nodes[a.address] = a
    net.advance(6, step=0.5)
    assert not b.delivered and b.core.cookies_sent == 2
    net.advance(6, step=0.5)
    assert b.delivered == [A_TO_B]


def test_not_under_load_by_default() -> None:
    net, _a, b = _session()
    assert not b.core.under_load(net.now) and b.core.cookies_sent == 0


def test_forged_cookie_reply_is_dropped() -> None:
    net, a, b = pair()
    net.down.add(b.address)
    net.send(a, A_TO_B)
    index = a.core.peers[b.public].handshake.local_index
    checker = cookie.Checker(keys.public_from_private(keys.generate_private()))  # wrong key
    fake = checker.reply(bytes(net.history[-1][3]), index, b"x", net.now)
    _open(a, fake, b.address, net.now)
    assert a.core.drops["bad-cookie-reply"] == 1


def test_source_not_allowed_is_dropped() -> None:
    net, a, b = _session()
    net.send(a, ipv4("10.0.0.99", "10.0.0.2"))
    net.send(a, ipv6("fd00::99", "fd00::2"))  # routed by a only if allowed: add a route
    net.run()
    assert b.delivered == [A_TO_B]
    assert b.core.drops["source-not-allowed"] == 1
    a.core.add_allowed(a.core.peers[b.public], ipaddress.ip_network("fd00::/64"))
    net.send(a, ipv6("fd00::99", "fd00::2"))
    net.run()
    assert b.core.drops["source-not-allowed"] == 2
    b.core.add_allowed(b.core.peers[a.public], ipaddress.ip_network("fd00::99/128"))
    net.send(a, ipv6("fd00::99", "fd00::2"))
    net.run()
    assert b.delivered[-1] == ipv6("fd00::99", "fd00::2")


def test_roaming_follows_the_latest_authenticated_source() -> None:
    net, a, b = _session()
    pa = b.core.peers[a.public]
    assert pa.endpoint == a.address
    # an unauthenticated datagram from elsewhere moves nothing
    net.deliver(("203.0.113.9", 9), b.address, b"\x04\0\0\0" + bytes(40))
    assert pa.endpoint == a.address
    # a moves (IPv4, then IPv6): b answers at the new address
    for moves, new in enumerate((("198.51.100.7", 40000), ("2001:db8::7", 40001)), 1):
        del net.nodes[a.address]
        a.address = new
        net.nodes[a.address] = a
        net.send(a, A_TO_B)
        net.run()
        assert pa.endpoint == a.address
        net.send(b, B_TO_A)
        net.run()
        assert a.delivered == [B_TO_A] * moves


def test_replayed_transport_is_dropped() -> None:
    net, a, b = _session()
    net.send(a, A_TO_B)
    _s, _d, msg = net.wire[0]
    net.run()
    assert len(b.delivered) == 2
    net.deliver(a.address, b.address, msg)
    net.deliver(("203.0.113.1", 1), b.address, msg)  # from elsewhere: no roaming either
    assert len(b.delivered) == 2
    assert b.core.drops["replay"] == 2
    assert b.core.peers[a.public].endpoint == a.address


def test_removing_a_peer_stops_it_at_once() -> None:
    net, a, b = _session()
    net.send(a, A_TO_B)
    in_flight = list(net.wire)
    b.core.remove_peer(a.public)
    for s, d, m in in_flight:
        net.deliver(s, d, m)
    net.wire.clear()
    assert b.delivered == [A_TO_B]
    assert b.core.drops["unknown-index"] == 1
    assert b.core.route(memoryview(B_TO_A)) is None
    assert b.core.indices == {} and a.public not in b.core.peers
    # its initiations are refused too, and its timers are silent
    net.advance(60, step=1)
    assert not b.core.outbox
    assert b.delivered == [A_TO_B]
    assert b.core.drops["unknown-peer"] >= 1
    assert not [m for t, s, _d, m in net.history if s == b.address and t > net.now - 59]


def test_changing_the_private_key_ends_sessions() -> None:
    net, a, b = _session()
    old = b.core.peers[a.public].keypairs.current
    assert old is not None
    old_public = b.public
    b.private = keys.generate_private()
    b.core.set_private_key(b.private)
    assert old.send is None
    assert b.core.peers[a.public].keypairs.all() == []
    assert not [v for v in b.core.indices.values() if isinstance(v, Keypair)]
    net.send(a, A_TO_B)  # on a's old session: b no longer knows it
    net.run()
    assert b.core.drops["unknown-index"] == 1
    assert b.delivered == [A_TO_B]
    # a learns b's new key: a new session works
    a.core.remove_peer(old_public)
    assert a.core.peers == {}
    nb = a.core.add_peer(b.public)
    a.core.add_allowed(nb, ipaddress.ip_network("10.0.0.2/32"))
    nb.endpoint = b.address
    net.advance(6)
    net.send(a, A_TO_B)
    net.advance(6)
    assert b.delivered[-1] == A_TO_B and len(b.delivered) == 2


def test_same_private_key_again_keeps_sessions() -> None:
    _net, a, b = _session()
    kp = b.core.peers[a.public].keypairs.current
    b.core.set_private_key(b.private)
    assert b.core.peers[a.public].keypairs.current is kp and kp is not None and kp.send


def test_psk_mismatch_fails_the_handshake() -> None:
    net, a, b = pair()
    a.core.set_preshared(a.core.peers[b.public], bytes(range(32)))
    b.core.set_preshared(b.core.peers[a.public], bytes(range(1, 33)))
    net.send(a, A_TO_B)
    net.advance(12, step=0.5)
    assert not b.delivered
    assert a.core.drops["bad-response"] >= 2
    assert a.core.peers[b.public].keypairs.current is None


def test_psk_match_works() -> None:
    net, a, b = pair(psk=bytes(range(32)))
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered == [A_TO_B]


def test_unknown_peer_gets_no_answer() -> None:
    net, _a, b = pair()
    stranger = net.node("s", ("192.0.2.9", 51820))
    pb = stranger.core.add_peer(b.public)
    stranger.core.add_allowed(pb, ipaddress.ip_network("0.0.0.0/0"))
    pb.endpoint = b.address
    net.send(stranger, ipv4("10.9.9.9", "10.0.0.2"))
    net.run()
    assert b.core.drops["unknown-peer"] == 1
    assert not sent(net, b, RESPONSE) and not b.delivered


def test_three_nodes_route_by_longest_prefix() -> None:
    net = Net(3)
    h = net.node("hub", ("192.0.2.10", 51820))
    a = net.node("a", ("192.0.2.11", 51820))
    b = net.node("b", ("192.0.2.12", 51820))
    ha, ah = net.link(h, a, "10.0.0.0/8", "10.0.0.0/16", endpoint_of_a=True)
    hb, bh = net.link(h, b, "10.0.0.0/8", "10.0.5.0/24", endpoint_of_a=True)
    h.core.add_allowed(ha, ipaddress.ip_network("fd00::/64"))
    h.core.add_allowed(hb, ipaddress.ip_network("fd00::5/128"))
    a.core.add_allowed(ah, ipaddress.ip_network("fd00::/16"))
    b.core.add_allowed(bh, ipaddress.ip_network("fd00::/16"))
    a.core.add_allowed(a.core.peers[h.public], ipaddress.ip_network("fd00::/16"))
    b.core.add_allowed(b.core.peers[h.public], ipaddress.ip_network("fd00::/16"))
    core: WireGuard = h.core
    assert core.route(memoryview(ipv4("10.1.0.1", "10.0.5.7"))) is hb
    assert core.route(memoryview(ipv4("10.1.0.1", "10.0.9.1"))) is ha
    assert core.route(memoryview(ipv4("10.1.0.1", "10.1.0.1"))) is None
    assert core.route(memoryview(ipv6("fd01::1", "fd00::5"))) is hb
    assert core.route(memoryview(ipv6("fd01::1", "fd00::6"))) is ha
    assert core.route(memoryview(ipv6("fd01::1", "fd01::6"))) is None
    # a -> hub -> b, both families: the hub forwards what it delivered
    for packet in (ipv4("10.0.1.1", "10.0.5.7"), ipv6("fd00::1", "fd00::5")):
        net.send(a, packet)
        net.run()
        assert h.delivered[-1] == packet
        net.send(h, packet)
        net.run()
        assert b.delivered[-1] == packet
    # b -> hub -> a
    back = ipv4("10.0.5.7", "10.0.1.1")
    net.send(b, back)
    net.run()
    net.send(h, h.delivered[-1])
    net.run()
    assert a.delivered == [back]
    # a may not use a source inside b's narrower prefix
    net.send(a, ipv4("10.0.5.9", "10.0.9.9"))
    net.run()
    assert h.core.drops["source-not-allowed"] == 1
    assert len(h.delivered) == 3
