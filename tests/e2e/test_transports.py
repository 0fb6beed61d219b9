"""Transports end to end, over IPv4 and IPv6 underlays: transfers clean and with 2% loss,
roaming, a server restart, and junk from a third namespace."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from simpletun.device import link
from simpletun.lab.bench import dropped, lossy
from simpletun.lab.netns import Lab, Namespace, veth
from simpletun.lab.testbed import Testbed, simpletun_cmd
from simpletun.transport.icmp import ECHO_SYSCTL

MB = 1024 * 1024
TRANSPORTS = ["tcp", "udp", "icmp"]
UNDERLAYS = [4, 6]


def _bed(lab: Lab, transport: str, underlay: int, *extra: str,
         client_extra: tuple[str, ...] = ()) -> Testbed:
    bed = Testbed(lab, underlay=underlay)
    args = ["-t", transport, *extra]
    bed.start(server_extra=args, client_extra=[*args, *client_extra])
    return bed


@pytest.mark.parametrize("underlay", UNDERLAYS, ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("loss", [False, True], ids=["clean", "2pct-loss"])
def test_20mb_transfer(lab: Lab, transport: str, underlay: int, loss: bool) -> None:
    bed = _bed(lab, transport, underlay)
    # every ping must come back: asked before the loss is switched on (over UDP nothing
    # resends a lost ping, so 2 of 100 fail after)
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
    if loss:
        for ns in (bed.server, bed.client):
            lossy(ns, bed.port, 2, icmp_on="veth0")
    size, _digest, _seconds = bed.transfer(20 * MB)
    assert size == 20 * MB
    # and the other way: over ICMP the server may only answer the client's requests
    assert bed.transfer(20 * MB, from_server=True)[0] == 20 * MB
    if loss:
        assert dropped(bed.server) > 0 and dropped(bed.client) > 0


@pytest.mark.parametrize("underlay", UNDERLAYS, ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_roams_mid_transfer(lab: Lab, transport: str, underlay: int) -> None:
    """The client's source address changes mid-transfer. Over UDP and ICMP the server
    follows the session to the new address; over TCP the connection is cut (as a NAT
    rebinding or a lost link would) and the client comes back on a new socket from the new
    address."""
    tcp = transport == "tcp"
    bed = _bed(lab, transport, underlay, client_extra=("--reconnect",) if tcp else ())
    v6 = underlay == 6
    new = "fd00::3" if v6 else "192.0.2.3"
    link.add_address("veth0", f"{new}/{64 if v6 else 24}", netns=bed.client.name, nodad=True)
    result: list[object] = []
    sender = threading.Thread(target=lambda: result.append(bed.transfer(200 * MB)))
    sender.start()
    time.sleep(0.3)
    net = "fd00::/64" if v6 else "192.0.2.0/24"
    done = bed.client.run(["ip", "-6" if v6 else "-4", "route", "replace", net, "dev", "veth0",
                           "src", new])
    assert done.returncode == 0, done.stderr
    if tcp:  # kill the tunnel's connection: the old source stays on it otherwise
        dst = f"[{bed.server_underlay}]" if v6 else bed.server_underlay
        killed = bed.client.run(["ss", "-K", "dst", dst, "dport", "=",
                                 str(bed.port)])
        assert killed.returncode == 0, killed.stderr
    sender.join(120)
    assert result and result[0] != () and isinstance(result[0], tuple), result
    assert bed.server_proc is not None
    shown = {"udp": f"[{new}]:" if v6 else f"{new}:", "icmp": f"{new} (ICMP id ",
             "tcp": f"[{new}]:" if v6 else f"{new}:"}[transport]
    bed.server_proc.wait_for("client roamed from " if not tcp else f"client {shown}")
    assert (f" to {shown}" if not tcp else f"client {shown}") in bed.server_proc.text
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok


@pytest.mark.parametrize("underlay", UNDERLAYS, ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_restart_client_comes_back(lab: Lab, transport: str, underlay: int) -> None:
    bed = _bed(lab, transport, underlay, "--keepalive", "0.5", "--peer-timeout", "3",
               client_extra=("--reconnect",))
    assert bed.server_proc and bed.client_proc
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    bed.server_proc.proc.send_signal(signal.SIGKILL)
    bed.server_proc.stop()
    bed.start_server("-t", transport, "--keepalive", "0.5", "--peer-timeout", "3")
    bed.server_proc.wait_for("connected", timeout=30)
    bed.wait_ready()
    deadline = time.monotonic() + 20
    while not bed.client.ping(bed.server_overlay, count=1, deadline=1).ok:
        assert time.monotonic() < deadline, bed.client_proc.text
    bed.transfer(4 * MB)


def _third_host(lab: Lab, bed: Testbed, v6: bool) -> tuple[Namespace, str]:
    """A third namespace on its own link to the server; and the server's address there."""
    third = lab.host("junk")
    veth(bed.server, "veth1", third, "veth0",
         a_addrs=["fd01::1/64" if v6 else "198.51.100.1/24"],
         b_addrs=["fd01::2/64" if v6 else "198.51.100.2/24"])
    return third, "fd01::1" if v6 else "198.51.100.1"


JUNK = r"""
import os, socket, struct, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
target = (sys.argv[1], 55555)
s = socket.socket(family, socket.SOCK_DGRAM)
ping = """ + repr(bytes.fromhex("0800f7ff00000000") + b"x" * 16) + r"""
for i in range(300):
    s.sendto(os.urandom(i % 200), target)                       # random datagrams
    for kind in (1, 3, 4, 6, 9):                                   # forged headers, wrong session
        s.sendto(bytes([kind]) + os.urandom(8) + os.urandom(i % 120), target)
    s.sendto(bytes([5]) + os.urandom(8) + os.urandom(60), target)  # a garbage hello
if family == socket.AF_INET:
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    for _ in range(20):                                            # foreign pings
        r.sendto(ping, (sys.argv[1], 0))
print("sent")
"""


ICMP_JUNK = r"""
import os, socket, struct, sys
from simpletun.wire import icmp
v6 = ":" in sys.argv[1]
family = socket.AF_INET6 if v6 else socket.AF_INET
r = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
request = icmp.ECHO6_REQUEST if v6 else icmp.ECHO_REQUEST
def send(head, payload):
    r.sendto((head if v6 else icmp.seal4(head, payload)) + payload, (sys.argv[1], 0))
for i in range(300):
    mark = icmp.head(request, i, i, icmp.REQUEST_MAGIC)
    send(mark, os.urandom(i % 200))                              # random payloads, marked
    for kind in (1, 3, 4, 6, 9):                                  # forged headers, wrong session
        send(mark, bytes([kind]) + os.urandom(8) + os.urandom(i % 120))
    send(mark, bytes([5]) + os.urandom(8) + os.urandom(60))      # a garbage hello
    send(icmp.head(request, i, i, icmp.REPLY_MAGIC), os.urandom(20))  # the wrong direction
    if not v6:                                                   # a bad checksum
        r.sendto(bytes(icmp.seal4(mark, b"x"))[:2] + b"\0\1" + mark[4:] + b"x",
                 (sys.argv[1], 0))
print("sent")
"""


@pytest.mark.parametrize("underlay", UNDERLAYS, ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", ["udp", "icmp"])
def test_junk_from_a_third_namespace_is_dropped(lab: Lab, transport: str,
                                                underlay: int) -> None:
    icmp = transport == "icmp"
    bed = _bed(lab, transport, underlay)
    v6 = underlay == 6
    third, target = _third_host(lab, bed, v6)
    sysctl = ECHO_SYSCTL[underlay]
    if icmp:
        assert bed.server.run(["cat", sysctl]).stdout.strip() == "1"  # the kernel stays quiet
    rx_before = link.state(bed.iface, netns=bed.server.name).counters["rx_packets"]
    done = third.run([sys.executable, "-c", ICMP_JUNK if icmp else JUNK, target], timeout=60)
    assert done.stdout.strip() == "sent", done.stderr
    # foreign pings are not tunnel traffic: answered (over ICMP by simpletun, as the kernel
    # would have), once each
    ping = third.ping(target, count=3, interval=0.05)
    assert ping.ok and "DUP" not in ping.output, ping.output
    time.sleep(0.5)
    # keepalives never reach the device, so nothing at all was written into it
    assert link.state(bed.iface, netns=bed.server.name).counters["rx_packets"] == rx_before
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
    bed.transfer(2 * MB)
    assert bed.server_proc is not None
    bed.server_proc.stop()
    summary = bed.server_proc.lines[-1]
    assert "bad-datagram" in summary and "unknown-session" in summary, summary
    if icmp:
        assert v6 or "bad-icmp" in summary, summary
        assert bed.server.run(["cat", sysctl]).stdout.strip() == "0"  # put back on exit


def test_udp_needs_no_classic_and_says_so(lab: Lab) -> None:
    bed = Testbed(lab)
    proc = bed.start_client("-t", "udp", "--classic", wait=False)
    assert proc.proc.wait(20) == 2
    proc.stop()
    assert "the classic wire is TCP only" in proc.text


@pytest.mark.parametrize("transport", ["udp", "icmp"])
def test_client_without_a_server_gives_up_with_one_line(lab: Lab, transport: str) -> None:
    bed = Testbed(lab)
    proc = bed.start_client("-t", transport, wait=False)
    assert proc.proc.wait(30) == 1
    proc.stop()
    shown = "192.0.2.1:55555" if transport == "udp" else "192.0.2.1 (ICMP id "
    assert proc.lines[-1].startswith(f"simpletun: server {shown}"), proc.text
    assert f"did not answer over {transport.upper()} within 5 s" in proc.lines[-1]


SILENT_UDP = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:  # hears every hello, answers none
    s.recv(65536)
"""


@pytest.mark.parametrize("transport", ["udp", "icmp"])
def test_client_gives_up_on_time_when_the_server_never_answers(lab: Lab,
                                                               transport: str) -> None:
    """The hellos back off (0.25 s, 0.5 s, ... 4 s), but no wait runs past the 5 s the
    message promises (it said so after 7.7 s). Over ICMP the server host's kernel echoes
    each hello back, which is no answer."""
    bed = Testbed(lab)
    if transport == "udp":
        silent = bed.server.popen([sys.executable, "-c", SILENT_UDP, str(bed.port)],
                                  stdout=subprocess.PIPE, text=True)
        assert silent.stdout is not None and silent.stdout.readline().strip() == "ready"
    proc = bed.start_client("-t", transport, wait=False)
    proc.wait_for("talking to", timeout=20)
    started = time.monotonic()
    assert proc.proc.wait(20) == 1
    elapsed = time.monotonic() - started
    proc.stop()
    assert f"did not answer over {transport.upper()} within 5 s" in proc.lines[-1], proc.text
    assert elapsed < 5.0 + 1.0, (elapsed, proc.text)  # a bound, not a speed target


def test_icmp_without_raw_sockets_says_so(lab: Lab) -> None:
    bed = Testbed(lab)
    unprivileged = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"]
    done = bed.client.run([*unprivileged, *simpletun_cmd(*bed.client_command("-t", "icmp"))],
                          timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == ("simpletun: the ICMP transport needs raw sockets: run it "
                                   "as root (or with CAP_NET_RAW)"), done.stderr


@pytest.mark.parametrize("offload", [True, False], ids=["super-packets", "no-offload"])
def test_udp_cuts_super_packets_and_merges_them_back(lab: Lab, offload: bool) -> None:
    bed = _bed(lab, "udp", 4, *([] if offload else ["--no-offload"]))
    assert bed.transfer(20 * MB)[0] == 20 * MB
    assert bed.client_proc is not None and bed.server_proc is not None
    bed.client_proc.stop()
    bed.server_proc.stop()
    reads = int(bed.client_proc.lines[-1].split("shutting down: ")[1].split()[0])
    written = int(bed.server_proc.lines[-1].split("shutting down: ")[1].split()[3])
    segments = 20 * MB // 1400
    assert written >= segments  # every segment reached the server's device...
    if offload:  # ...from far fewer device reads on the client: super-packets
        assert reads < segments // 4, (reads, written)
    else:
        assert reads >= segments, (reads, written)
