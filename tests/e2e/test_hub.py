"""A ``simpletun -s`` server with three ``simpletun -c`` peers on every transport (issue 14),
each host in its own namespace on one switched underlay (:class:`simpletun.lab.hub.Hub`):

- tun: every client reaches every other (IPv4 and IPv6) through the server's kernel
  routing, by the allowed IPs the server holds for each (/32, /128); the server says when
  forwarding is off; ``wg show`` of the server lists the three with their handshakes;
- tap: the server switches frames between its peers by learned MACs (broadcast to all,
  learned unicast to one);
- identity: a client that comes back with its key takes over its own session; a key the
  server does not know gets nothing back at all; a known peer that claims another's overlay
  address gets its packets dropped and displaces nobody.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from simpletun.lab.hub import Hub, Node, ipv4_packets
from simpletun.lab.netns import Lab, PingResult
from simpletun.lab.wghost import Capture, transfer
from simpletun.tools import pcap

from ..conftest import simpletun

MB = 1024 * 1024
TRANSPORTS = ["udp", "tcp", "icmp"]
NOTE = "note: net.ipv4.ip_forward is 0: peers reach this host but not each other"


@pytest.fixture
def hubs(lab: Lab) -> Iterator[list[Hub]]:
    """The hubs a test makes (append to the list): every process stopped at the end."""
    made: list[Hub] = []
    try:
        yield made
    finally:
        for hub in made:
            hub.close()


def ping(src: Node, dst: Node, family: int = 4, count: int = 2) -> PingResult:
    return src.ns.ping(dst.overlay(family), count=count, interval=0.05, deadline=5)


def background_ping(src: Node, address: str, count: int) -> subprocess.Popen[str]:
    """``count`` pings, 0.1 s apart, from ``src`` to ``address``, while the test goes on."""
    exe = shutil.which("ping")
    assert exe is not None
    return src.ns.popen([exe, "-n", "-c", str(count), "-i", "0.1", "-W", "1", address],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_ping(proc: subprocess.Popen[str], address: str, count: int) -> PingResult:
    out, _ = proc.communicate(timeout=count * 0.1 + 15)
    return PingResult.parse(address, count, out)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_three_peers_reach_each_other(lab: Lab, hubs: list[Hub], transport: str) -> None:
    hub = Hub(lab, transport)
    hubs.append(hub)
    forwarding = transport != "udp"  # off in one case: the server says so, and it matters
    hub.start(forwarding=forwarding)
    c1, _c2, c3 = hub.clients
    server = hub.server
    assert server.proc.count(NOTE) == (0 if forwarding else 1), server.proc.text
    if not forwarding:
        assert not c1.ns.ping(c3.overlay4, count=1, deadline=1).ok  # not without routing
        server.ns.sysctl("net.ipv4.ip_forward", "1")
        server.ns.sysctl("net.ipv6.conf.all.forwarding", "1")
    for src in hub.clients:
        for dst in [server, *hub.clients]:
            if dst is src:
                continue
            for family in (4, 6):
                result = ping(src, dst, family)
                assert result.ok, (f"{src.label} -> {dst.label} over IPv{family}:\n"
                                   f"{result.output}\n{hub.logs()}")
                if dst is not server:  # one router on the way: the server's kernel
                    assert "ttl=63" in result.output, result.output
    size, _digest, _s = transfer(c1.ns, c3.ns, c3.overlay4, 5 * MB)
    assert size == 5 * MB
    dump = hub.dump()
    assert dump.interface.public_key == server.public
    assert sorted(p.public_key for p in dump.peers) == sorted(c.public for c in hub.clients)
    for c in hub.clients:
        peer = dump.peer(c.public)
        assert peer.latest_handshake > 0, peer
        assert peer.allowed_ips == (f"{c.overlay4}/32", f"{c.overlay6}/128"), peer
        assert peer.endpoint is not None and peer.endpoint.startswith(f"{c.underlay4}:"), peer
        assert peer.rx_bytes > 0 and peer.tx_bytes > 0, peer
    # the transfer went in from c1 and out to c3, through the server
    assert dump.peer(c1.public).rx_bytes > 5 * MB and dump.peer(c3.public).tx_bytes > 5 * MB
    assert server.proc.count("session up") == 3, server.proc.text
    assert all(p.proc.poll() is None for n in hub.nodes() for p in n.procs), hub.logs()


def _arp_requests(records: list[bytes], target: str) -> int:
    """ARP requests (who-has) for ``target`` among the Ethernet frames ``records``."""
    want = bytes(int(x) for x in target.split("."))
    return sum(1 for f in records
               if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[38:42] == want)


def _icmp_between(records: Sequence[pcap.Record], a: str, b: str) -> int:
    """IPv4 ICMP frames between ``a`` and ``b`` (either way) among ``records``."""
    return sum(1 for p in ipv4_packets(records) if p.proto == 1 and {p.src, p.dst} == {a, b})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tap_hub_of_three_lans(lab: Lab, hubs: list[Hub], transport: str) -> None:
    hub = Hub(lab, transport, tap=True)
    hubs.append(hub)
    hub.start()
    c1, c2, c3 = hub.clients
    # client 1 asks who has client 2's address: the server floods the broadcast to every
    # peer (and its own device); client 2 answers, and the server learns both MACs
    with Capture(c3.ns, c3.iface, "arp or icmp") as on_c3:
        result = ping(c1, c2, count=1)
        assert result.ok, result.output + hub.logs()
    flooded = [r.data for r in on_c3.records]
    assert _arp_requests(flooded, c2.overlay4) >= 1, flooded
    # learned unicast goes to one peer only: client 3 sees none of 1 <-> 2's pings
    with Capture(c3.ns, c3.iface, "arp or icmp") as on_c3:
        for a, b in ((c1, c2), (c2, c1)):
            result = a.ns.ping(b.overlay4, count=20, interval=0.01, deadline=5)
            assert result.ok, result.output + hub.logs()
    leaked = _icmp_between(on_c3.records, c1.overlay4, c2.overlay4)
    assert leaked == 0, f"client 3 saw {leaked} of 80 unicast frames between 1 and 2"
    for src in hub.clients:  # every LAN reaches every other and the server's own
        for dst in [hub.server, *hub.clients]:
            if dst is not src:
                for family in (4, 6):
                    result = ping(src, dst, family, count=1)
                    assert result.ok, f"{src.label} -> {dst.label}: {result.output}"
    # full-size frames, many at a time (a second's worth of it on a healthy tunnel)
    size, _digest, _s = transfer(c1.ns, c2.ns, c2.overlay4, 5 * MB, timeout=20)
    assert size == 5 * MB
    assert sorted(p.public_key for p in hub.dump().peers) == sorted(
        c.public for c in hub.clients)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_identity(lab: Lab, hubs: list[Hub], transport: str) -> None:
    hub = Hub(lab, transport)
    hubs.append(hub)
    c1, c2, c3 = hub.clients
    # known to the server (allowed IPs its own, 10.9.0.5) but claiming client 2's address
    impostor = hub.add_client("imp", known=True, claims=c2.number)
    stranger = hub.add_client("stranger", known=False)  # a key the server never heard of
    hub.start()
    server = hub.server
    before = hub.dump()
    old_c1 = before.peer(c1.public).endpoint
    old_c2 = before.peer(c2.public).endpoint

    # (b) the stranger: nothing comes back to it, while client 2 pings on
    with Capture(server.ns, "eth0", f"host {stranger.underlay4}") as wire:
        hub.start_client(stranger, "--handshake-timeout", "8", wait=False)
        steady = background_ping(c2, c3.overlay4, 80)  # 8 s: (a) and (c) happen meanwhile

        # (a) client 1 comes back with its key, from a new process (and a new port or id)
        c1.proc.proc.kill()
        c1.proc.stop()
        hub.start_client(c1)
        for dst in (server, c3):
            result = ping(c1, dst)
            assert result.ok, f"c1 -> {dst.label} after its restart:\n{result.output}"
        server.proc.wait_for(f"peer {c1.public} at", occurrences=2)
        after = hub.dump()
        assert [p.public_key for p in after.peers].count(c1.public) == 1
        new_c1 = after.peer(c1.public).endpoint
        assert new_c1 is not None and new_c1.startswith(f"{c1.underlay4}:")
        assert new_c1 != old_c1, (old_c1, new_c1)
        assert [x for x in server.proc.lines if f"peer {c1.public} at" in x][-1].split(
            " at ")[1].startswith(c1.underlay4)

        # (c) the impostor: a session of its own, but its packets claim client 2's source
        hub.start_client(impostor)
        dropped = hub.drops().get("source-not-allowed", 0)
        fake = impostor.ns.ping(server.overlay4, count=5, interval=0.05, deadline=2)
        assert fake.received == 0, fake.output
        assert hub.drops().get("source-not-allowed", 0) >= dropped + 5, hub.drops()
        assert not impostor.ns.ping(c3.overlay4, count=2, interval=0.05, deadline=1).ok

        result = finish_ping(steady, c3.overlay4, 80)
        assert result.ok, f"client 2 lost pings:\n{result.output}\n{hub.logs()}"
        last = hub.dump()
        assert last.peer(c2.public).endpoint == old_c2  # never displaced
        assert server.proc.count(f"peer {c2.public} at") == 1, server.proc.text
        assert sorted(p.public_key for p in last.peers) == sorted(
            [c1.public, c2.public, c3.public, impostor.public])
        status = stranger.proc.proc.wait(25)
    assert status != 0, stranger.proc.text
    assert stranger.proc.count("simpletun: no answer to the handshake from") == 1, \
        stranger.proc.text
    assert stranger.proc.count("session up") == 0
    # not a byte of payload back: no handshake response, no cookie, no ICMP reply (over
    # TCP the kernel's own handshake segments carry none)
    seen = ipv4_packets(wire.records)
    asked = [p for p in seen if p.src == stranger.underlay4 and p.payload_len > 0]
    assert len(asked) >= 2, seen  # its handshakes reached the server (and the capture works)
    answered = [p for p in seen if p.src == server.underlay4 and p.payload_len > 0]
    assert answered == [], answered
    assert server.proc.count(f"refused a handshake from {stranger.underlay4}") >= 1, \
        server.proc.text
    assert stranger.public not in [p.public_key for p in hub.dump().peers]
    done = simpletun("wg-drops", server.iface)
    assert "source-not-allowed" in done.stdout, done.stdout
