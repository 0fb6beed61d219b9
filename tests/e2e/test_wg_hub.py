"""simpletun-wg as the hub of a star: three spokes (two wireguard-go, one simpletun-wg) on the
flooding switch, each knowing only the hub, whose allowed IPs on the spoke are the whole
overlay (/24 and /64); the hub holds each spoke's host addresses (/32, /128) and forwards
between them. Every spoke reaches every other through the hub, by allowed IPs alone; removing
a peer on the hub cuts that spoke off at once and leaves the others working."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from simpletun.lab import wghost
from simpletun.lab.netns import Lab
from simpletun.lab.wghost import WgHost

from .wgcases import assert_ping, overlay, peer_of, wg_pair

GO = "wireguard-go"
ST = "simpletun-wg"
#: what each spoke allows from the hub: the whole overlay
OVERLAY_NETS = [str(ipaddress.ip_interface(c).network) for c in wghost.OVERLAY]


@pytest.fixture
def star(lab: Lab) -> Iterator[tuple[WgHost, list[WgHost]]]:
    """(the simpletun-wg hub, its spokes [wireguard-go, wireguard-go,
    simpletun-wg]) with the hub forwarding and every tunnel up."""
    with wg_pair(lab, ST, GO) as p:
        hub = p.left
        spokes = [p.right, p.add_host("spoke2", impl=GO), p.add_host("spoke3", impl=ST)]
        hub.ns.sysctl("net.ipv4.ip_forward", "1")
        hub.ns.sysctl("net.ipv6.conf.all.forwarding", "1")
        for spoke in spokes:
            # the hub: this spoke's host addresses (wg_pair already did so for p.right)
            p.connect(hub, spoke)
            # the spoke: everything in the overlay goes to the hub (replacing p.right's /32s)
            p.connect(spoke, hub, allowed_ips=OVERLAY_NETS)
        yield hub, spokes


def pairs(spokes: list[WgHost]) -> list[tuple[WgHost, WgHost]]:
    return [(a, b) for a in spokes for b in spokes if a is not b]


def pings_at_once(routes: list[tuple[WgHost, WgHost, int]]) -> list[bool]:
    """One ping (1 s deadline) for each (source, destination, family), all at the same
    time; whether each was answered."""
    exe = shutil.which("ping")
    assert exe is not None
    procs = [src.ns.popen([exe, "-n", "-c", "1", "-w", "1", overlay(dst, family)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for src, dst, family in routes]
    try:
        return [proc.wait(5) == 0 for proc in procs]
    finally:
        for (src, _dst, _family), proc in zip(routes, procs, strict=True):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            src.ns.procs.remove(proc)


def test_spokes_reach_each_other_through_the_hub(
        star: tuple[WgHost, list[WgHost]]) -> None:
    hub, spokes = star
    assert [s.iface.impl for s in spokes] == [GO, GO, ST]
    for spoke in spokes:
        assert peer_of(spoke, hub).allowed_ips == tuple(OVERLAY_NETS)
        assert peer_of(hub, spoke).allowed_ips == tuple(spoke.overlay_hosts())
        assert [peer.public_key for peer in spoke.iface.show_dump().peers] == [
            hub.iface.public_key]  # a spoke knows no other spoke: only the hub can carry it
    for family in (4, 6):
        for src, dst in pairs(spokes):
            result = src.ns.ping(overlay(dst, family), count=2, interval=0.05, deadline=5)
            assert result.ok, f"{src.name} -> {dst.name} over IPv{family}:\n{result.output}"
            # one router on the way (the hub's kernel, TTL/hop limit 64 -> 63), not direct
            assert "ttl=63" in result.output, result.output
    dump = hub.iface.show_dump()
    assert sorted(peer.public_key for peer in dump.peers) == sorted(
        s.iface.public_key for s in spokes)
    for spoke in spokes:
        seen = dump.peer(spoke.iface.public_key)
        assert seen.latest_handshake > 0
        assert seen.endpoint == spoke.endpoint(4)
        # 2 spokes x 2 families x 2 pings of >= 84 bytes each way, forwarded both ways
        assert seen.rx_bytes > 8 * 84 and seen.tx_bytes > 8 * 84, seen
        assert seen.allowed_ips == tuple(spoke.overlay_hosts())
    assert dump.interface.public_key == hub.iface.public_key
    assert dump.interface.listen_port == hub.iface.listen_port == 51821


def test_removing_a_peer_on_the_hub_cuts_off_that_spoke_at_once(
        star: tuple[WgHost, list[WgHost]]) -> None:
    hub, spokes = star
    gone, *kept = spokes
    for family in (4, 6):  # every session up first, so what fails next is the removal
        for src, dst in pairs(spokes):
            assert_ping(src, dst, family, count=1)
    hub.iface.set("peer", gone.iface.public_key, "remove")
    shown = hub.iface.wg("show", hub.iface.name).stdout
    assert gone.iface.public_key not in shown
    assert all(s.iface.public_key in shown for s in kept), shown
    assert [peer.public_key for peer in hub.iface.show_dump().peers] == [
        s.iface.public_key for s in kept]
    cut = [(src, dst, family) for family in (4, 6) for other in [*kept, hub]
           for src, dst in ((gone, other), (other, gone))]
    for (src, dst, family), answered in zip(cut, pings_at_once(cut), strict=True):
        assert not answered, f"{src.name} -> {dst.name} over IPv{family} after the removal"
    for family in (4, 6):
        assert_ping(kept[0], kept[1], family)
        assert_ping(kept[1], kept[0], family)
    # the hub holds nothing of the removed spoke: a fresh handshake from it is ignored
    assert len(hub.iface.show_dump().peers) == 2
