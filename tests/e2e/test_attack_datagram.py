"""A live UDP/ICMP session is not displaced by another hello, and what the network can make
the server do stays bounded: a second client is refused (and told so), an attacker's hellos
and junk never reach the device, never get an answer longer than themselves, and never
flood the log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab, Namespace, veth
from simpletun.lab.testbed import Testbed, Watched
from simpletun.wire import datagram as dgram_wire
from simpletun.wire import icmp as icmp_wire


def _bed(lab: Lab, transport: str, underlay: int = 4, *extra: str) -> Testbed:
    bed = Testbed(lab, underlay=underlay)
    bed.start(server_extra=["-t", transport, *extra],
              client_extra=["-t", transport, "--reconnect", *extra])
    return bed


def _third(lab: Lab, bed: Testbed, label: str, v6: bool = False) -> tuple[Namespace, str]:
    """A third host on its own link to the server; and the server's address there."""
    host = lab.host(label)
    veth(bed.server, "veth1", host, "veth0",
         a_addrs=["fd01::1/64" if v6 else "198.51.100.1/24"],
         b_addrs=["fd01::2/64" if v6 else "198.51.100.2/24"])
    return host, "fd01::1" if v6 else "198.51.100.1"


def _client(bed: Testbed, host: Namespace, target: str, transport: str,
            *extra: str) -> Watched:
    args = ["-i", "tun0", "-c", target, "-t", transport, "--address", "10.200.0.3/24", *extra]
    if transport == "udp":
        args += ["-p", str(bed.port)]
    return bed._start(host, args, "second client")


@pytest.mark.parametrize("transport", ["udp", "icmp"])
def test_a_second_client_is_refused_and_the_first_keeps_the_tunnel(lab: Lab,
                                                                   transport: str) -> None:
    bed = _bed(lab, transport)
    assert bed.server_proc is not None and bed.client_proc is not None
    second_host, target = _third(lab, bed, "second")
    second = _client(bed, second_host, target, transport, "--reconnect")
    second.wait_for("serves another client and refused this one", timeout=10)
    # the first client keeps the tunnel all along (old code: the two took turns)
    for _ in range(3):
        ping = bed.client.ping(bed.server_overlay, count=8, interval=0.1, deadline=4)
        assert ping.ok, (ping.output, bed.server_proc.text)
    # without --reconnect the refused client gives up at once, with one line
    third_host = lab.host("third")
    veth(bed.server, "veth2", third_host, "veth0", a_addrs=["203.0.113.1/24"],
         b_addrs=["203.0.113.2/24"])
    third = _client(bed, third_host, "203.0.113.1", transport)
    assert third.proc.wait(15) == 1, third.text
    third.stop()
    assert third.lines[-1].startswith("simpletun: server 203.0.113.1") and \
        "serves another client and refused this one" in third.lines[-1], third.text
    assert "--reconnect" in third.lines[-1]
    # one line each side, not one per retry; the server's log stays small
    assert second.proc.poll() is None, second.text
    assert second.count("serves another client") == 1, second.text
    assert bed.server_proc.count(" connected (") == 1, bed.server_proc.text
    assert 1 <= bed.server_proc.count("refused client") <= 4, bed.server_proc.text
    assert len(bed.server_proc.lines) <= 10, bed.server_proc.text
    second.stop()
    bed.server_proc.stop()
    assert "refused-busy" in bed.server_proc.lines[-1], bed.server_proc.text


def test_a_stopped_client_says_so_and_the_next_gets_in_at_once(lab: Lab) -> None:
    bed = _bed(lab, "udp")
    assert bed.server_proc is not None and bed.client_proc is not None
    bed.client_proc.stop()  # SIGTERM: the client sends CLOSE on its way out
    bed.server_proc.wait_for("disconnected: client stopped")
    host, target = _third(lab, bed, "next")
    nxt = _client(bed, host, target, "udp")  # no --reconnect: must get in at the first try
    nxt.wait_for("connected to")
    assert bed.server_proc.count(" connected (") == 2, bed.server_proc.text


ATTACK = r"""
import json, os, select, socket, struct, sys, time
from simpletun.wire import datagram, native, icmp
transport, target, mtu = sys.argv[1], sys.argv[2], int(sys.argv[3])
v6 = ":" in target
family = socket.AF_INET6 if v6 else socket.AF_INET
sent = {}  # session id -> bytes sent with it (the datagram, without ICMP's echo header)
if transport == "udp":
    s = socket.socket(family, socket.SOCK_DGRAM)
    def send(gram):
        s.sendto(gram, (target, 55555))
else:
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    s = socket.socket(family, socket.SOCK_RAW, proto)
    ident = 4242
    request = icmp.ECHO6_REQUEST if v6 else icmp.ECHO_REQUEST
    seq = [0]
    def send(gram):
        seq[0] = (seq[0] + 1) & 0xFFFF
        head = icmp.head(request, ident, seq[0], icmp.REQUEST_MAGIC)
        s.sendto((head if v6 else icmp.seal4(head, gram)) + gram, (target, 0))
def hello(sid, version=1, truncated=False):
    h = native.encode_hello(native.Hello(tap=False, mtu=mtu, features=3, session=sid))
    if version != 1:  # the version byte comes after the envelope (2 + 40) and the magic
        h = h[:51] + bytes([version]) + h[52:]
    if truncated:  # magic, version, kind: a hello cut short
        h = h[:2 + 40 + 11]
    return datagram.encode(datagram.HELLO, sid, h)
for i in range(150):
    for gram in (os.urandom(i % 40),                               # random bytes
                 hello(os.urandom(8)),                             # hellos, fresh sessions
                 hello(os.urandom(8), version=2),                  # another version
                 hello(os.urandom(8), truncated=True),             # cut short
                 bytes([5]) + os.urandom(8) + os.urandom(60),      # garbage hellos
                 bytes([1]) + os.urandom(8) + os.urandom(100)):    # data, unknown session
        if len(gram) >= 9:
            sent[gram[1:9]] = min(len(gram), sent.get(gram[1:9], 1 << 16))
        send(gram)
    time.sleep(0.002)
replies = too_long = busy = unknown = 0
deadline = time.monotonic() + 1.5
buf = bytearray(65536)
while time.monotonic() < deadline:
    if not select.select([s], [], [], 0.1)[0]:
        continue
    n = s.recv_into(buf)
    gram = bytes(buf[:n])
    if transport == "icmp":
        if not v6:
            gram = gram[(gram[0] & 15) * 4:]
        kind, _c, _sum, got_ident, _seq = icmp.ECHO.unpack_from(gram)
        if got_ident != ident or gram[8:12] != icmp.REPLY_MAGIC:
            continue
        gram = gram[icmp.HEAD_LEN:]
        if not gram:  # a request answered empty (held too long): nothing to compare
            continue
    replies += 1
    sid = gram[1:9]
    if sid not in sent:
        unknown += 1
    elif len(gram) > sent[sid]:
        too_long += 1
    busy += gram[0] == 8  # BUSY
print(json.dumps({"sent": len(sent), "replies": replies, "too_long": too_long,
                  "busy": busy, "unknown": unknown}))
"""


@pytest.mark.parametrize(("transport", "underlay"), [("udp", 4), ("udp", 6), ("icmp", 4),
                                                     ("icmp", 6)],
                         ids=["udp-ipv4", "udp-ipv6", "icmp-ipv4", "icmp-ipv6"])
def test_an_attacker_cannot_take_over_flood_the_log_or_get_more_back(
        lab: Lab, transport: str, underlay: int) -> None:
    bed = _bed(lab, transport, underlay)
    assert bed.server_proc is not None
    v6 = underlay == 6
    attacker, target = _third(lab, bed, "attacker", v6)
    rx_before = link.state(bed.iface, netns=bed.server.name).counters["rx_packets"]
    mtu = dgram_wire.DEFAULT_MTU if transport == "udp" else icmp_wire.DEFAULT_MTU
    done = attacker.run([sys.executable, "-c", ATTACK, transport, target, str(mtu)],
                        timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    # refused, and told so; answered rarely (at most every 0.1 s), never with more bytes
    assert got["busy"] >= 1 and got["replies"] <= 50, got
    assert got["too_long"] == 0 and got["unknown"] == 0, got
    time.sleep(0.3)
    assert link.state(bed.iface, netns=bed.server.name).counters["rx_packets"] == rx_before
    # the client kept its tunnel; the log stayed small; nothing crashed
    ping = bed.client.ping(bed.server_overlay, count=3, interval=0.05)
    assert ping.ok, (ping.output, bed.server_proc.text)
    assert bed.server_proc.count(" connected (") == 1, bed.server_proc.text
    assert len(bed.server_proc.lines) <= 16, bed.server_proc.text
    assert bed.server_proc.proc.poll() is None
    bed.server_proc.stop()
    summary = bed.server_proc.lines[-1]
    assert "shutting down" in summary and "refused-busy" in summary, summary


FLOOD = r"""
import os, socket, sys, time
# datagrams of unknown sessions, about 5,000 a second: each would earn a REJECT
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[3])
junk = bytes([1]) + os.urandom(48)
print("ready", flush=True)
while time.monotonic() < end:
    for _ in range(10):
        s.sendto(junk, (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.002)
"""


def test_a_junk_flood_does_not_starve_the_real_clients_reject(lab: Lab) -> None:
    """After a server restart the client learns from a REJECT that its session is unknown
    and shakes hands at once. Answers to strangers are limited per address, so a flood of
    unknown-session datagrams from elsewhere does not use up the client's answer (with one
    budget for everyone, the client waited for its dead-peer timeout)."""
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(server_extra=["-t", "udp"],
              client_extra=["-t", "udp", "--reconnect", "--keepalive", "0.3"])
    assert bed.server_proc and bed.client_proc
    flooder, target = _third(lab, bed, "flood")
    flood = flooder.popen([sys.executable, "-c", FLOOD, target, str(bed.port), "30"],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None and flood.stdout.readline().strip() == "ready"
        bed.server_proc.proc.send_signal(signal.SIGKILL)
        bed.server_proc.stop()
        bed.start_server("-t", "udp")
        # the client's next keepalive earns a REJECT: well within its 40 s dead-peer timeout
        bed.client_proc.wait_for("does not know this session", timeout=8)
        bed.server_proc.wait_for(" connected (", timeout=5)
        deadline = time.monotonic() + 5
        while not bed.client.ping(bed.server_overlay, count=1, deadline=1).ok:
            assert time.monotonic() < deadline, bed.client_proc.text
    finally:
        flood.kill()
        flood.wait()
