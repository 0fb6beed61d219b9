"""Interop: simpletun-wg (always ``left``, "us") against Debian's wireguard-go (``right``),
each side initiating in turn (the initiator is the one told where the other is): pings over
both overlays on both underlays, 20 MB each way with sha256 and our counters, a preshared key
(and a mismatched one that must not give a tunnel), persistent keepalives on the wire both
ways, roaming mid-transfer both ways, and an early re-key of ours that wireguard-go accepts
while traffic flows."""

from __future__ import annotations

import threading
import time

import pytest

from simpletun.lab import wghost
from simpletun.lab.netns import Lab
from simpletun.lab.wghost import Endpoints, WgHost, WgPair

from .wgcases import (
    MB,
    UNDERLAYS,
    assert_ping,
    assert_ping_both_ways,
    assert_transfer,
    counters,
    peer_of,
    wait_until,
    wg_pair,
)

US = "simpletun-wg"
GO = "wireguard-go"
INITIATORS = [US, GO]
#: who initiates -> which side of the pair (left: us, right: wireguard-go) knows the endpoint
ENDPOINTS: dict[str, Endpoints] = {US: "left", GO: "right"}


def first_handshake(p: WgPair) -> None:
    """One ping from the initiator: both sides then have a session."""
    initiator = p.right if p.endpoints == "right" else p.left
    other = p.left if initiator is p.right else p.right
    assert_ping(initiator, other, 4, count=1)


@pytest.mark.parametrize("initiator", INITIATORS)
@pytest.mark.parametrize("underlay", UNDERLAYS, ids=["ipv4-underlay", "ipv6-underlay"])
def test_ping_both_overlays(lab: Lab, underlay: int, initiator: str) -> None:
    with wg_pair(lab, US, GO, underlay=underlay, endpoints=ENDPOINTS[initiator]) as p:
        responder = p.right if initiator == US else p.left
        initiating = p.left if initiator == US else p.right
        # the responder has no endpoint until the initiator's handshake reaches it
        assert peer_of(responder, initiating).endpoint is None
        assert_ping_both_ways(p)
        ours, theirs = counters(p)
        # each learned the other's endpoint, over the asked-for underlay
        assert ours.endpoint == p.right.endpoint(underlay)
        assert theirs.endpoint == p.left.endpoint(underlay)
        for seen in (ours, theirs):
            assert seen.latest_handshake > 0
            assert seen.rx_bytes > 12 * 84 and seen.tx_bytes > 12 * 84


def test_20mb_each_way_with_sha256_moves_our_counters(lab: Lab) -> None:
    with wg_pair(lab, US, GO, underlay=4) as p:
        first_handshake(p)
        before, _ = counters(p)
        assert_transfer(p, p.left, p.right, 20 * MB)  # us -> wireguard-go
        assert_transfer(p, p.right, p.left, 20 * MB, family=6)  # wireguard-go -> us
        after, theirs = counters(p)
        assert after.tx_bytes - before.tx_bytes >= 20 * MB
        assert after.rx_bytes - before.rx_bytes >= 20 * MB
        # wireguard-go saw at least as much arrive from us as it sent us
        assert theirs.rx_bytes >= 20 * MB and theirs.tx_bytes >= 20 * MB


@pytest.mark.parametrize("initiator", INITIATORS)
def test_preshared_key(lab: Lab, initiator: str) -> None:
    psk = wghost.genpsk()
    with wg_pair(lab, US, GO, endpoints=ENDPOINTS[initiator], preshared_key=psk) as p:
        assert_ping_both_ways(p)
        ours, theirs = counters(p)
        assert ours.preshared_key == psk == theirs.preshared_key


@pytest.mark.parametrize("initiator", INITIATORS)
def test_a_mismatched_preshared_key_gives_no_tunnel(lab: Lab, initiator: str) -> None:
    with wg_pair(lab, US, GO, endpoints=ENDPOINTS[initiator]) as p:
        p.left.iface.add_peer(p.right.iface, preshared_key=wghost.genpsk())
        p.right.iface.add_peer(p.left.iface, preshared_key=wghost.genpsk())
        initiating, other = (p.left, p.right) if initiator == US else (p.right, p.left)
        with wghost.Capture(p.left.ns, "eth0") as cap:
            result = initiating.ns.ping(other.overlay4, count=2, interval=0.2, deadline=2)
        assert result.received == 0, result.output
        kinds = [d.wg_type for d in cap.datagrams()]
        # the initiation went out and was answered: only the psk is wrong
        assert "initiation" in kinds and "response" in kinds, kinds
        assert "data" not in kinds, kinds
        ours, theirs = counters(p)
        assert ours.latest_handshake == 0 and theirs.latest_handshake == 0


def keepalives_from(p: WgPair, sender: WgHost, receiver: WgHost,
                    seconds: float = 3.5) -> list[wghost.Datagram]:
    """``sender`` told to keep the session alive every second once a session exists (and
    no traffic): the keepalives it sends ``receiver`` on the wire in the next ``seconds``."""
    first_handshake(p)
    sender.iface.set("peer", receiver.iface.public_key, "persistent-keepalive", "1")
    assert peer_of(sender, receiver).persistent_keepalive == 1
    assert peer_of(receiver, sender).persistent_keepalive is None
    with wghost.Capture(p.left.ns, "eth0") as cap:
        time.sleep(seconds)
    return [d for d in cap.datagrams() if d.is_keepalive and d.src == sender.underlay4
            and d.dport == receiver.iface.listen_port]


def test_our_persistent_keepalives_on_the_wire(lab: Lab) -> None:
    with wg_pair(lab, US, GO) as p:
        seen = keepalives_from(p, p.left, p.right)
        assert len(seen) >= 2, f"keepalives from us in 3.5 s: {seen}"


def test_wireguard_gos_persistent_keepalives_reach_us(lab: Lab) -> None:
    with wg_pair(lab, US, GO) as p:
        before = peer_of(p.left, p.right)
        seen = keepalives_from(p, p.right, p.left)
        assert len(seen) >= 2, f"keepalives from wireguard-go in 3.5 s: {seen}"
        # we took them in (authenticated, counted) and the tunnel still works both ways
        assert peer_of(p.left, p.right).rx_bytes - before.rx_bytes >= 32 * len(seen)
        assert_ping_both_ways(p, (4,), count=2)


ROAMS = [(US, 4), (US, 6), (GO, 6)]


@pytest.mark.parametrize("mover,underlay", ROAMS,
                         ids=[f"{m}-moves-ipv{u}" for m, u in ROAMS])
def test_roaming_mid_transfer(lab: Lab, mover: str, underlay: int) -> None:
    """The mover sends a few MB, slowed down (tbf) so that its underlay address changes
    while the transfer runs; the peer follows it to the new address."""
    with wg_pair(lab, US, GO, underlay=underlay) as p:
        first_handshake(p)
        moving, staying = (p.left, p.right) if mover == US else (p.right, p.left)
        done = moving.ns.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                              "rate", "20mbit", "burst", "32kb", "latency", "50ms"])
        assert done.returncode == 0, done.stderr
        size = 4 * MB
        results: list[tuple[int, str, float]] = []
        errors: list[BaseException] = []

        def send() -> None:
            try:
                results.append(p.transfer(moving, staying, size, family=4))
            except BaseException as exc:  # shown by the main thread
                errors.append(exc)

        sender = threading.Thread(target=send)
        before = peer_of(staying, moving).rx_bytes
        sender.start()
        try:
            wait_until("1 MB on its way", lambda: peer_of(staying, moving).rx_bytes - before
                       > MB, timeout=10)
            assert sender.is_alive(), "the transfer ended before the move"
            new = moving.move_underlay(underlay, 9)
        finally:
            sender.join(60)
        assert not sender.is_alive(), "the transfer did not end"
        assert not errors, errors
        assert results and results[0][0] == size
        assert peer_of(staying, moving).endpoint == wghost.endpoint_of(
            new, moving.iface.listen_port or 0)
        assert_ping(staying, moving, 6)


def test_an_early_rekey_of_ours_is_accepted_by_wireguard_go(lab: Lab) -> None:
    """Our session re-keys after 2 s instead of 120; initiations are still at most one per
    REKEY_TIMEOUT (5 s), so 6.5 s of pings see the first handshake and a re-key."""
    with wg_pair(lab, US, GO, endpoints="left",
                 left_env={"SIMPLETUN_WG_REKEY_AFTER_TIME": "2"}) as p:
        with wghost.Capture(p.left.ns, "eth0") as cap:
            first_handshake(p)
            _, theirs = counters(p)
            result = p.left.ns.ping(p.right.overlay4, count=65, interval=0.1, deadline=10)
        assert result.sent - result.received <= 1, result.output
        seen = cap.datagrams()
        initiations = [d for d in seen if d.wg_type == "initiation" and d.src == p.left.underlay4]
        responses = [d for d in seen if d.wg_type == "response" and d.src == p.right.underlay4]
        assert len(initiations) >= 2, [round(d.time - seen[0].time, 2) for d in initiations]
        assert len(responses) == len(initiations)
        # wireguard-go took the new sessions in: its latest handshake moved on
        assert peer_of(p.right, p.left).latest_handshake > theirs.latest_handshake
        assert_ping(p.right, p.left, 6)
