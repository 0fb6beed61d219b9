"""Attacks on a simpletun-wg server from a third namespace on the flooding switch (issue 13):
the server (``right``) has a legitimate wireguard-go peer (``left``) with a live session, and
an attacker (:meth:`WgPair.add_host`) that reaches the underlay and sniffs every frame on it
sends what :mod:`simpletun.lab.wgattack` builds with the core's own codecs:

- transport messages sniffed from the live session, replayed: not delivered, counted
  ``replay``; the server's idea of the peer's endpoint does not move to the attacker;
- random datagrams, truncated and oversized messages, garbage with a valid type byte:
  dropped, counted by reason (``runt``, ``bad-type``, ``bad-size``, ``bad-mac1``,
  ``bad-cookie-reply``, ``unknown-index``, ``bad-tag``), never answered;
- initiations with a bad mac1 (even one otherwise valid, made with the real peer's private
  key): dropped ``bad-mac1``, never answered;
- a flood of initiations with a valid mac1 and random everything else puts the responder
  under load: the attacker gets genuine cookie replies (never a handshake response), while
  a fresh wireguard-go peer handshaking during the flood gets a cookie too, comes back with
  mac2 and gets through, and the live session keeps working;
- packets whose inner source is outside the sending peer's allowed IPs: dropped
  ``source-not-allowed``.

The witness that nothing reached the server's system is its WireGuard device's **rx**
counter: for a tun device the kernel counts a packet the engine *writes* into the device as
received (``rx_packets``, as if it arrived on a wire) and one the engine *reads* as sent
(``tx_packets``). A check at the start of every test pins this: three pings from the peer
raise the server's rx counter by exactly three. The drop counters come from the engine's
UAPI socket (:func:`simpletun.control.uapi_client.stats`); "no answer" is read off a
capture on the attacker's port of the switch, which sees every frame.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from simpletun.control import uapi_client
from simpletun.device import link
from simpletun.lab import wgattack
from simpletun.lab.netns import Lab
from simpletun.lab.wghost import Capture, Datagram, WgHost, WgPair
from simpletun.wireguard import keys, messages, noise

from .wgcases import assert_ping, peer_of, wait_until, wg_pair

GO = "wireguard-go"
US = "simpletun-wg"
#: handshake messages per second that put our responder under load (default 256)
LOAD_THRESHOLD = 20
#: the largest UDP payload over IPv4 and IPv6 (no jumbograms): a transport message of more
#: than 16 + 65535 + 16 + 16 bytes (the core's ``oversized``) cannot come off the wire
UDP_MAX = {4: 65535 - 20 - 8, 6: 65535 - 8}


@dataclass
class Bed:
    p: WgPair
    attacker: WgHost
    family: int

    @property
    def peer(self) -> WgHost:
        return self.p.left

    @property
    def server(self) -> WgHost:
        return self.p.right

    @property
    def target(self) -> tuple[str, int]:
        port = self.server.iface.listen_port
        assert port is not None
        return self.server.underlay(self.family), port

    @property
    def server_public(self) -> bytes:
        return keys.from_base64(self.server.iface.public_key)

    def rx(self) -> int:
        """Packets the server's engine wrote into its device (the kernel's rx)."""
        return link.state(self.server.iface.name, netns=self.server.ns.name).counters[
            "rx_packets"]

    def stats(self) -> Counter[str]:
        return Counter(uapi_client.stats(self.server.iface.name))

    def send(self, datagrams: Sequence[bytes], gap: float = 0.0) -> None:
        wgattack.send_all(self.attacker.ns.name, self.target, datagrams, gap=gap)

    def answers(self, cap: Capture) -> list[Datagram]:
        """What the capture saw sent to the attacker."""
        return [d for d in cap.datagrams() if d.dst == self.attacker.underlay(self.family)]


@contextmanager
def attack_bed(lab: Lab, family: int = 4) -> Iterator[Bed]:
    """The server (simpletun-wg, load threshold LOAD_THRESHOLD), its wireguard-go peer with
    a live session (one ping) over the ``family`` underlay, and a bare attacker on the same
    switch, attacking over that family. Checks the witness on the way: three pings from the
    peer are exactly three more packets in the server's rx counter."""
    with wg_pair(lab, GO, US, underlay=family,
                 right_env={"SIMPLETUN_WG_LOAD_THRESHOLD": str(LOAD_THRESHOLD)}) as p:
        bed = Bed(p, p.add_host("attacker"), family)
        assert_ping(bed.peer, bed.server, count=1)
        before = bed.rx()
        assert_ping(bed.peer, bed.server, count=3)
        assert bed.rx() - before == 3, "the witness: pings are counted in the device's rx"
        yield bed


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def wait_for_drops(bed: Bed, before: Counter[str], expected: dict[str, int]) -> dict[str, int]:
    """Wait until the drops since ``before`` reach ``expected`` (or 5 s), then a little
    more for anything unexpected to show; returns the drops since ``before``."""
    wait_until(f"drops {expected}",
               lambda: all(bed.stats()[k] - before[k] >= n for k, n in expected.items()),
               timeout=5)
    time.sleep(0.2)
    return delta(bed.stats(), before)


def assert_quiet(bed: Bed) -> None:
    """The network's input is counted, not logged: the server said nothing since "up"."""
    said = bed.server.iface.log().splitlines()
    assert len(said) <= 1, said[:20]


def sniff_session(bed: Bed, pings: int = 3) -> list[Datagram]:
    """The datagrams the attacker sees while the peer pings the server ``pings`` times."""
    with Capture(bed.attacker.ns, "eth0") as cap:
        assert_ping(bed.peer, bed.server, count=pings)
        time.sleep(0.1)
    return cap.datagrams()


def to_server(bed: Bed, seen: list[Datagram], wg_type: str) -> list[bytes]:
    return [d.payload for d in seen if d.src == bed.peer.underlay(bed.family)
            and d.dst == bed.server.underlay(bed.family) and d.wg_type == wg_type]


# --- replay ------------------------------------------------------------------------------

def test_replayed_transport_messages_are_not_delivered(lab: Lab) -> None:
    with attack_bed(lab) as bed:
        # sniff a handshake too: the peer's next initiation, forced by a new session
        bed.peer.iface.wg("set", bed.peer.iface.name, "peer", bed.server.iface.public_key,
                          "remove")
        bed.p.connect(bed.peer, bed.server)
        seen = sniff_session(bed, pings=4)
        data = to_server(bed, seen, "data")
        initiations = to_server(bed, seen, "initiation")
        assert len(data) >= 4 and len(initiations) == 1, [d.wg_type for d in seen]
        rx, before = bed.rx(), bed.stats()
        handshake = peer_of(bed.server, bed.peer).latest_handshake
        with Capture(bed.attacker.ns, "eth0") as cap:
            bed.send(data + data + initiations, gap=0.001)
            got = wait_for_drops(bed, before, {"replay": 2 * len(data),
                                               "replayed-initiation": 1})
        assert got == {"replay": 2 * len(data), "replayed-initiation": 1}
        assert bed.rx() == rx, "a replayed packet reached the server's device"
        assert bed.answers(cap) == []
        # authenticated but replayed: no roaming to the attacker, no new handshake
        seen_peer = peer_of(bed.server, bed.peer)
        assert seen_peer.endpoint == bed.peer.endpoint(bed.family)
        assert seen_peer.latest_handshake == handshake
        assert_ping(bed.peer, bed.server, count=2)
        assert bed.rx() == rx + 2


# --- junk --------------------------------------------------------------------------------

@pytest.mark.parametrize("family", [4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
def test_junk_is_dropped_by_reason_and_never_answered(lab: Lab, family: int) -> None:
    with attack_bed(lab, family) as bed:
        biggest = UDP_MAX[family]
        live = wgattack.receiver_index(to_server(bed, sniff_session(bed, pings=1), "data")[0])
        rng = random.Random(13)
        g = wgattack.typed_garbage
        ini, R, C, T = (messages.INITIATION, messages.RESPONSE, messages.COOKIE_REPLY,
                        messages.TRANSPORT)
        sent: dict[str, list[bytes]] = {
            "runt": [b"", b"\x01", b"\x04\0", b"\x01\0\0"],
            # no WireGuard type word: random, type 0 or 5, a reserved byte set
            "bad-type": [*wgattack.random_datagrams(rng, 40), b"\x05\0\0\0" + bytes(144),
                         b"\0\0\0\0" + bytes(28), b"\x01\0\0\x01" + bytes(144),
                         b"\x04\x01\0\0" + bytes(60)],
            # truncated and oversized handshake messages, runt transport messages
            "bad-size": [g(ini, 147, rng), g(ini, 100, rng), g(R, 91, rng), g(C, 63, rng),
                         g(T, 31, rng), g(T, 16, rng), g(ini, 149, rng), g(ini, 1400, rng),
                         g(R, 93, rng), g(C, 65, rng), g(C, biggest, rng)],
            # the right size, a valid type, garbage after it
            "bad-mac1": [g(ini, 148, rng), g(ini, 148, rng), g(R, 92, rng)],
            "bad-cookie-reply": [g(C, 64, rng), g(C, 64, rng)],
            "unknown-index": [g(T, 1000, rng), g(T, 32, rng),
                              wgattack.transport(live ^ 1, 0, rng.randbytes(100))],
            # the live session's index: the tag does not verify, whatever the size
            "bad-tag": [wgattack.transport(live, 1 << 40, rng.randbytes(n))
                        for n in (16, 17, 100, 1400, biggest - 16)],
        }
        expected = {k: len(v) for k, v in sent.items()}
        rx, before = bed.rx(), bed.stats()
        with Capture(bed.attacker.ns, "eth0") as cap:
            datagrams = [d for group in sent.values() for d in group]
            random.Random(7).shuffle(datagrams)
            bed.send(datagrams, gap=0.0005)
            got = wait_for_drops(bed, before, expected)
        assert got == expected
        assert bed.rx() == rx, "junk reached the server's device"
        assert bed.answers(cap) == []
        assert bed.server.iface.running
        assert_quiet(bed)
        assert_ping(bed.peer, bed.server, count=2)


# --- mac1 --------------------------------------------------------------------------------

def test_initiations_with_a_bad_mac1_are_dropped_unanswered(lab: Lab) -> None:
    with attack_bed(lab) as bed:
        server = bed.server_public
        rng = random.Random(1)
        # an initiation as the real peer would make it (its private key, a fresh
        # timestamp): everything valid but mac1, which must be checked first
        local = noise.Local.of(keys.from_base64(bed.peer.iface.private_key))
        hs = noise.Handshake(server)
        hs.precompute(local)
        genuine = noise.create_initiation(local, hs, 7, noise.tai64n(time.time_ns()))
        assert genuine is not None
        bad = [
            wgattack.flip_mac1(wgattack.with_mac1(genuine, server)),
            wgattack.with_mac1(genuine, keys.from_base64(bed.peer.iface.public_key)),  # wrong key
            bytes(genuine),  # mac1 left zero
            *(wgattack.flip_mac1(wgattack.stranger_initiation(server)) for _ in range(3)),
            *(wgattack.flip_mac1(wgattack.forged_initiation(server, rng)) for _ in range(3)),
            wgattack.flip_mac1(wgattack.forged_response(server, 1, rng)),
        ]
        # controls: the same builders with mac1 intact pass it and fail later, unanswered
        strangers = [wgattack.stranger_initiation(server, sender=n) for n in (1, 2)]
        handshake = peer_of(bed.server, bed.peer).latest_handshake
        rx, before = bed.rx(), bed.stats()
        with Capture(bed.attacker.ns, "eth0") as cap:
            bed.send(bad + strangers, gap=0.01)
            got = wait_for_drops(bed, before, {"bad-mac1": len(bad), "unknown-peer": 2})
        assert got == {"bad-mac1": len(bad), "unknown-peer": 2}
        assert bed.answers(cap) == []
        assert bed.rx() == rx
        assert peer_of(bed.server, bed.peer).latest_handshake == handshake
        assert peer_of(bed.server, bed.peer).endpoint == bed.peer.endpoint(bed.family)
        assert_ping(bed.peer, bed.server, count=2)


# --- allowed IPs -------------------------------------------------------------------------

def test_inner_source_outside_the_peers_allowed_ips_is_dropped(lab: Lab) -> None:
    with attack_bed(lab) as bed:
        # the peer's own side lets it send from anywhere (wireguard-go routes by the
        # destination only); the server allows it only 10.77.0.1/32 and fd77::1/128
        peer = bed.peer.iface
        peer.address("10.99.0.1/32")
        peer.address("fd99::1/128")
        assert peer_of(bed.server, bed.peer).allowed_ips == tuple(bed.peer.overlay_hosts())
        rx, before = bed.rx(), bed.stats()
        for source, target in (("10.99.0.1", bed.server.overlay4),
                               ("fd99::1", bed.server.overlay6)):
            done = bed.peer.ns.run(["ping", "-n", "-c", "3", "-i", "0.05", "-W", "1",
                                    "-I", source, target], timeout=10)
            assert " 0 received" in done.stdout, done.stdout + done.stderr
        got = wait_for_drops(bed, before, {"source-not-allowed": 6})
        assert got == {"source-not-allowed": 6}
        assert bed.rx() == rx, "a packet from outside the peer's allowed IPs was delivered"
        # the session itself is fine: the same peer from its allowed addresses
        assert_ping(bed.peer, bed.server, 4, count=2)
        assert_ping(bed.peer, bed.server, 6, count=2)
        assert bed.rx() == rx + 4


# --- the flood ---------------------------------------------------------------------------

def _mac2(d: Datagram) -> bytes:
    return d.payload[-16:]


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
def test_initiation_flood_gets_cookies_and_a_real_peer_still_gets_through(
        lab: Lab, family: int) -> None:
    with attack_bed(lab, family) as bed:
        server, attacker = bed.server, bed.attacker
        # (verbose: wireguard-go says whether our cookie reply decrypted)
        fresh = bed.p.add_host("fresh", impl=GO, env={"LOG_LEVEL": "verbose"})
        bed.p.connect(server, fresh, endpoint=False)
        bed.p.connect(fresh, server)
        host, port = bed.target
        before = bed.stats()
        them = attacker.underlay(family)
        with Capture(attacker.ns, "eth0", f"udp and not src host {them}") as cap:
            flood = attacker.ns.popen(
                [sys.executable, "-m", "simpletun.lab.wgattack", "flood", host, str(port),
                 server.iface.public_key, "--rate", "2000", "--seconds", "40"],
                stdout=subprocess.PIPE, text=True)
            try:
                assert flood.stdout is not None
                assert flood.stdout.readline().strip() == "ready"
                wait_until("the server under load",
                           lambda: bed.stats()["cookies-sent"] > before["cookies-sent"])
                # a fresh peer handshakes during the flood: a cookie first, then its
                # retry with mac2 (wireguard-go waits REKEY_TIMEOUT, 5 s) gets through
                # (ping sends one a second until a reply comes; those queued meanwhile
                # by wireguard-go are answered too)
                got = fresh.ns.run(["ping", "-n", "-c", "1", "-w", "20", server.overlay4],
                                   timeout=30)
                flooding = flood.poll() is None
                fresh_running = fresh.iface.running
                if got.returncode == 0:
                    under_load = bed.stats()["under-load"]
                    # the live session carries on through the flood
                    assert_ping(bed.peer, server, count=3)
                    wait_until("still under load",
                               lambda: bed.stats()["under-load"] > under_load)
            finally:
                flood.terminate()
                out, _ = flood.communicate(timeout=10)
                attacker.ns.procs.remove(flood)
            summary = json.loads(out.splitlines()[-1])
        after = bed.stats()
        got_drops = delta(after, before)
        seen = cap.datagrams()
        fresh_at = fresh.underlay(family)
        t0 = seen[0].time if seen else 0.0
        story = "\n".join(
            f"{d.time - t0:8.3f} {'->' if d.src == fresh_at else '<-'} {d.wg_type}"
            + (" mac2" if d.wg_type == "initiation" and _mac2(d) != bytes(16) else "")
            for d in seen if fresh_at in (d.src, d.dst))
        assert got.returncode == 0, (f"{got.stdout}{got.stderr}\nthe fresh peer on the wire:\n"
                                     f"{story}\ndrops: {got_drops}\nflood: {summary}\n"
                                     f"the fresh wireguard-go still running: {fresh_running}")
        assert flooding, "the flood ended before the peer got through"
        # the attacker: genuine cookie replies only, never a handshake response
        to_attacker = [d.wg_type for d in seen if d.dst == them]
        assert to_attacker and set(to_attacker) == {"cookie"}, Counter(to_attacker)
        assert set(summary["answers"]) == {"cookie"}, summary
        assert summary["genuine_cookies"] == summary["answers"]["cookie"] > 0, summary
        assert summary["sent"] >= 4000, summary  # a few seconds at thousands per second
        assert got_drops["cookies-sent"] >= summary["answers"]["cookie"]
        assert got_drops["under-load"] > summary["sent"] // 2, (got_drops, summary)
        # the fresh peer: its first initiation (mac2 zero) got a cookie, a later one
        # carried mac2 and was answered
        from_fresh = [d for d in seen if d.src == fresh.underlay(family) and d.dst == host]
        to_fresh = [d for d in seen if d.dst == fresh.underlay(family) and d.src == host]
        inits = [d for d in from_fresh if d.wg_type == "initiation"]
        assert inits and _mac2(inits[0]) == bytes(16), [d.wg_type for d in from_fresh]
        assert "cookie" in [d.wg_type for d in to_fresh]
        said = fresh.iface.log()
        assert "Receiving cookie response" in said, said  # taken (wireguard-go 0.0.20220316)
        assert "Could not decrypt invalid cookie response" not in said, said
        answered = [d for d in to_fresh if d.wg_type == "response"]
        assert answered, [d.wg_type for d in to_fresh]
        proven = [d for d in inits if _mac2(d) != bytes(16) and d.time <= answered[0].time]
        assert proven, "the response answered no initiation with a mac2"
        assert peer_of(server, fresh).latest_handshake > 0
        assert peer_of(server, fresh).endpoint == fresh.endpoint(family)
        assert_quiet(bed)
