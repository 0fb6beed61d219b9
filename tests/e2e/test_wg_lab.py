"""The WireGuard test harness (simpletun.lab.wghost, tests/e2e/wgcases.py) proven with
wireguard-go on both sides: pings over both overlays on both underlays, a sha256-checked
transfer, counters, roaming, a sniffing third namespace that sees keepalives, and a
teardown that leaves no namespace, socket or process behind."""

from __future__ import annotations

import os
import shutil
import sys
import time

import pytest

from simpletun.lab import wghost
from simpletun.lab.netns import Lab

from .wgcases import (
    MB,
    UNDERLAYS,
    assert_nothing_left,
    assert_ping,
    assert_ping_both_ways,
    assert_transfer,
    counters,
    peer_of,
    wg_pair,
)

GO = "wireguard-go"


@pytest.mark.parametrize("underlay", UNDERLAYS, ids=["ipv4-underlay", "ipv6-underlay"])
def test_ping_both_overlays_and_counters(lab: Lab, underlay: int) -> None:
    # only one side knows where the other is: the handshake must go that way first
    with wg_pair(lab, GO, GO, underlay=underlay, endpoints="left") as p:
        assert peer_of(p.right, p.left).endpoint is None
        assert peer_of(p.right, p.left).latest_handshake == 0
        assert_ping_both_ways(p)
        seen_by_left, seen_by_right = counters(p)
        # right learned left's endpoint from the handshake, over the asked-for family
        assert seen_by_right.endpoint == p.left.endpoint(underlay)
        assert seen_by_left.endpoint == p.right.endpoint(underlay)
        for peer in (seen_by_left, seen_by_right):
            assert peer.latest_handshake > 0
            # 12 pings of 84/104 bytes each way at least, plus the handshake
            assert peer.rx_bytes > 12 * 84 and peer.tx_bytes > 12 * 84
        assert seen_by_left.allowed_ips == tuple(p.right.overlay_hosts())
        assert seen_by_right.allowed_ips == tuple(p.left.overlay_hosts())
        dump = p.left.iface.show_dump()
        assert dump.interface.public_key == p.left.iface.public_key
        assert dump.interface.private_key == p.left.iface.private_key
        assert dump.interface.listen_port == p.left.iface.listen_port == 51821


def test_transfer_5mb_moves_the_counters(lab: Lab) -> None:
    with wg_pair(lab, GO, GO) as p:
        before_l, before_r = counters(p)
        assert_transfer(p, p.left, p.right, 5 * MB)
        assert_transfer(p, p.right, p.left, 5 * MB, family=6)
        after_l, after_r = counters(p)
        # both directions carried 5 MB of payload (plus headers and encryption)
        assert after_l.tx_bytes - before_l.tx_bytes > 5 * MB
        assert after_r.rx_bytes - before_r.rx_bytes > 5 * MB
        assert after_r.tx_bytes - before_r.tx_bytes > 5 * MB
        assert after_l.rx_bytes - before_l.rx_bytes > 5 * MB


def test_a_third_namespace_reaches_and_sniffs_the_underlay(lab: Lab) -> None:
    with wg_pair(lab, GO, GO) as p:
        attacker = p.add_host("attacker")
        assert attacker.ns.ping(p.right.underlay4, count=1).ok
        assert attacker.ns.ping(p.right.underlay6, count=1).ok
        with wghost.Capture(attacker.ns, "eth0", "udp") as cap:
            assert_ping(p.left, p.right)
            for a, b in ((p.left, p.right), (p.right, p.left)):
                a.iface.set("peer", b.iface.public_key, "persistent-keepalive", "1")
            time.sleep(2.3)  # two persistent keepalives each way, 1 s apart
        assert peer_of(p.left, p.right).persistent_keepalive == 1
        seen = cap.datagrams()
        kinds = [d.wg_type for d in seen]
        assert "initiation" in kinds and "response" in kinds and "data" in kinds, kinds
        # frames between left and right, none to or from the attacker
        assert {(d.src, d.dst) for d in seen} == {
            (p.left.underlay4, p.right.underlay4), (p.right.underlay4, p.left.underlay4)}
        keepalives = [d for d in seen if d.is_keepalive]
        assert {d.src for d in keepalives} == {p.left.underlay4, p.right.underlay4}
        assert all(d.dport in (51821, 51822) for d in keepalives)


def test_roaming_changes_the_endpoint_the_peer_sees(lab: Lab) -> None:
    with wg_pair(lab, GO, GO, underlay=6) as p:
        assert_ping(p.left, p.right)
        new = p.left.move_underlay(6, 9)
        assert new == "fd00::9"
        assert_ping(p.left, p.right)
        assert peer_of(p.right, p.left).endpoint == f"[fd00::9]:{p.left.iface.listen_port}"
        assert_ping(p.right, p.left, 6)


def test_teardown_leaves_nothing_behind() -> None:
    with Lab("sttest") as lab:
        prefix = lab.prefix
        with wg_pair(lab, GO, GO, endpoints="right") as p:
            assert_ping_both_ways(p, (4,))
            names = [h.iface.name for h in p.hosts]
            procs = [h.iface.proc for h in p.hosts]
            assert len(wghost.our_sockets()) == 2
            assert all(len(n) <= 15 for n in names) and len(set(names)) == 2
    assert_nothing_left(prefix, names)
    assert all(proc is not None and proc.poll() is not None for proc in procs)


def test_a_killed_implementation_is_cleaned_up_by_stop(lab: Lab) -> None:
    """SIGKILL leaves the socket file and, for some implementations, the link: stop()
    removes both."""
    host = lab.host("solo")
    iface = wghost.WgInterface(host, GO)
    try:
        assert iface.proc is not None
        iface.proc.kill()
        iface.proc.wait()
        assert os.path.exists(wghost.socket_path(iface.name))
    finally:
        iface.stop()
    assert not os.path.exists(wghost.socket_path(iface.name))
    assert not wghost.link.exists(iface.name, netns=host.name)


def test_an_implementation_that_never_answers_fails_with_its_log(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    host = lab.host("solo")
    monkeypatch.setattr(wghost, "implementation_cmd",
                        lambda impl: ["sh", "-c", "echo no socket from me; sleep 30", impl])
    with pytest.raises(wghost.WgLabError, match=r"no answer on .*after 0.3 s(.|\n)*no socket from me"):
        wghost.WgInterface(host, "fake", timeout=0.3)
    monkeypatch.setattr(wghost, "implementation_cmd",
                        lambda impl: ["sh", "-c", "echo broken >&2; exit 3", impl])
    with pytest.raises(wghost.WgLabError, match=r"exited with status 3(.|\n)*broken"):
        wghost.WgInterface(host, "fake")
    assert not wghost.our_sockets()
    assert not host.procs


def test_implementation_cmd(monkeypatch: pytest.MonkeyPatch) -> None:
    assert wghost.implementation_cmd("wireguard-go") == [shutil.which("wireguard-go")]
    monkeypatch.setattr(wghost.shutil, "which", lambda name: None)
    assert wghost.implementation_cmd("simpletun-wg") == [sys.executable, "-m",
                                                          "simpletun.cli.wg"]
    with pytest.raises(wghost.WgLabError, match="wireguard-go is not installed"):
        wghost.implementation_cmd("wireguard-go")
    with pytest.raises(wghost.WgLabError, match="unknown WireGuard implementation 'boringtun'"):
        wghost.implementation_cmd("boringtun")
    monkeypatch.setattr(wghost.shutil, "which", lambda name: f"/usr/local/bin/{name}")
    assert wghost.implementation_cmd("simpletun-wg") == ["/usr/local/bin/simpletun-wg"]


def test_parse_dump() -> None:
    text = ("cHJpdg==\tcHVi\t51820\toff\n"
            "cGVlcjE=\t(none)\t192.0.2.2:51822\t10.77.0.2/32,fd77::2/128\t1700000000\t1234\t5678\toff\n"
            "cGVlcjI=\tcHNr\t(none)\t(none)\t0\t0\t0\t25\n")
    dump = wghost.parse_dump(text)
    assert dump.interface == wghost.DumpInterface("cHJpdg==", "cHVi", 51820, None)
    assert dump.peers[0] == wghost.DumpPeer("cGVlcjE=", None, "192.0.2.2:51822",
                                            ("10.77.0.2/32", "fd77::2/128"), 1700000000,
                                            1234, 5678, None)
    assert dump.peer("cGVlcjI=") == wghost.DumpPeer("cGVlcjI=", "cHNr", None, (), 0, 0, 0, 25)
    assert wghost.parse_dump("(none)\t(none)\t0\t51820\n").interface.fwmark == 51820
    with pytest.raises(KeyError):
        dump.peer("nobody")
    with pytest.raises(ValueError):
        wghost.parse_dump("garbage\n")


def test_a_preshared_key_and_a_third_peer_on_the_switch(lab: Lab) -> None:
    psk = wghost.genpsk()
    with wg_pair(lab, GO, GO, preshared_key=psk, endpoints="right") as p:
        assert_ping_both_ways(p, (6,))
        assert peer_of(p.left, p.right).preshared_key == psk
        # a hub: a third peer joins the right through the same switch
        third = p.add_host("third", impl=GO)
        assert third.overlay4 == "10.77.0.3" and third.iface.listen_port == 51823
        p.connect(p.right, third, endpoint=False)
        p.connect(third, p.right)
        assert_ping(third, p.right, 4)
        assert_ping(p.right, third, 6)
        assert peer_of(p.right, third).endpoint == third.endpoint(4)
        assert len(p.right.iface.show_dump().peers) == 2


def test_setconf(lab: Lab) -> None:
    host = lab.host("solo")
    with wghost.WgInterface(host, GO) as iface:
        peer = wghost.pubkey(wghost.genkey())
        iface.setconf(f"[Interface]\nPrivateKey = {iface.private_key}\nListenPort = 51999\n\n"
                      f"[Peer]\nPublicKey = {peer}\nAllowedIPs = 10.9.0.0/16, fd09::/64\n"
                      "Endpoint = 192.0.2.77:51820\nPersistentKeepalive = 25\n")
        dump = iface.show_dump()
        assert dump.interface.listen_port == 51999
        assert dump.peers == (wghost.DumpPeer(peer, None, "192.0.2.77:51820",
                                              ("10.9.0.0/16", "fd09::/64"), 0, 0, 0, 25),)
    assert not os.path.exists(wghost.socket_path(iface.name))
    assert not iface.running
