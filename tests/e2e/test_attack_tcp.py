"""Attacks on the TCP server from a third namespace (issue 12, item 2): idle connections,
random bytes, forged classic clients and slowloris must never displace the live client,
reach the server's device, flood its log, or push a real client onto the classic wire."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab, Namespace, veth
from simpletun.lab.testbed import Testbed

from ..packets import ping4

TARGET = "198.51.100.1"  # the server's address on the attacker's link

ATTACK = r"""
import os, socket, struct, sys, time
mode, count, seconds, target = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
forged = bytes.fromhex(sys.argv[5])
held = []
start = time.monotonic()
for i in range(count):
    try:
        s = socket.create_connection((target, 55555), timeout=2)
        if mode == "random":
            s.sendall(os.urandom(64 + i % 1500))
        elif mode == "forged":  # a classic frame of a valid packet: looks like a client
            s.sendall(struct.pack("!H", len(forged)) + forged)
        elif mode == "slowloris":
            s.sendall(b"\0")
        held.append(s)
    except OSError:
        pass
    if len(held) > 400:
        held.pop(0).close()
    time.sleep(max(0.0, start + seconds * (i + 1) / count - time.monotonic()))
print("ready", flush=True)
time.sleep(float(sys.argv[6]))
"""


def _attacker(lab: Lab, bed: Testbed) -> Namespace:
    third = lab.host("attacker")
    veth(bed.server, "veth1", third, "veth0", a_addrs=[f"{TARGET}/24"],
         b_addrs=["198.51.100.2/24"])
    return third


def _attack(ns: Namespace, mode: str, count: int, seconds: float,
            hold: float = 0.0) -> subprocess.Popen[str]:
    forged = ping4("10.200.0.66", "10.200.0.1")
    return ns.popen([sys.executable, "-c", ATTACK, mode, str(count), str(seconds), TARGET,
                     forged.hex(), str(hold)], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)


def _rx(bed: Testbed) -> int:
    return link.state(bed.iface, netns=bed.server.name).counters["rx_packets"]


def _client_tx(bed: Testbed) -> int:
    return link.state(bed.iface, netns=bed.client.name).counters["tx_packets"]


SERVERS = {
    "classic": (["--classic"], ["--classic"]),
    "native-1-worker": (["--workers", "1"], ["--workers", "1"]),
    "native-2-workers": (["--workers", "2"], ["--workers", "2"]),
}


@pytest.mark.parametrize("mode", ["idle", "random", "forged"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_attacker_never_displaces_the_live_client(lab: Lab, server: str, mode: str) -> None:
    server_extra, client_extra = SERVERS[server]
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(server_extra=server_extra, client_extra=client_extra)
    assert bed.server_proc and bed.client_proc
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    third = _attacker(lab, bed)
    lines_before = len(bed.server_proc.lines)
    rx_before, tx_before = _rx(bed), _client_tx(bed)
    attack = _attack(third, mode, 600, 3.0)  # 200 connections a second for 3 s
    try:
        ping = bed.client.ping(bed.server_overlay, count=60, interval=0.05, deadline=8)
        out, err = attack.communicate(timeout=30)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
    assert out.strip() == "ready", err
    time.sleep(0.3)
    assert ping.received >= 0.95 * ping.sent, ping.output
    # the real client was never replaced nor dropped
    assert bed.server_proc.count("replaced by") == 0, bed.server_proc.text
    assert bed.client_proc.count("disconnected") == 0, bed.client_proc.text
    assert bed.server_proc.count("connected (") == bed.client_proc.count("connected to")
    # only what the client's device sent (its pings, and whatever else its host sent)
    # reached the server's device: nothing from the attacker
    received, sent = _rx(bed) - rx_before, _client_tx(bed) - tx_before
    assert received <= sent, (received, sent)
    assert sent <= ping.sent + 5, (sent, ping.sent)
    # 600 connections, a handful of lines
    new_lines = bed.server_proc.lines[lines_before:]
    assert len(new_lines) <= 25, "\n".join(new_lines)
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
    bed.server_proc.stop()
    assert "Traceback" not in bed.server_proc.text


@pytest.mark.parametrize("workers", ["1", "2"])
def test_slowloris_never_pushes_a_client_onto_the_classic_wire(lab: Lab, workers: str) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    server = bed.start_server("--workers", workers)
    third = _attacker(lab, bed)
    attack = _attack(third, "slowloris", 200, 0.5, hold=30)
    try:
        assert attack.stdout is not None
        assert attack.stdout.readline().strip() == "ready"
        client = bed.start_client("--workers", workers, "--reconnect")
        bed.wait_ready()
        client.wait_for("connected to", occurrences=int(workers))
        assert bed.client.ping(bed.server_overlay, count=5, interval=0.05).ok
        # and again: the client comes back (a new session) while the attack goes on
        client.stop()
        server.wait_for("disconnected", occurrences=int(workers))
        client = bed.start_client("--workers", workers, "--reconnect")
        client.wait_for("connected to", occurrences=int(workers))
        bed.wait_ready()
        assert bed.client.ping(bed.server_overlay, count=5, interval=0.05).ok
    finally:
        attack.kill()
        attack.wait()
    assert client.count("(native wire") == int(workers), client.text
    assert "classic wire" not in client.text and "stays idle" not in client.text, client.text
    assert len(server.lines) <= 40, server.text


SILENT_CLASSIC = r"""
import socket, struct, sys
# like the classic C client: connect, send nothing until the device has a packet
s = socket.create_connection((sys.argv[1], 55555), timeout=10)
print("connected", flush=True)
head = s.recv(2, socket.MSG_WAITALL)
(length,) = struct.unpack("!H", head)
packet = s.recv(length, socket.MSG_WAITALL)
print(f"frame {length} proto {packet[9]} dst {socket.inet_ntoa(packet[16:20])}", flush=True)
"""


@pytest.mark.parametrize("server_extra", [[], ["--classic"]], ids=["native", "classic"])
def test_a_silent_classic_client_is_seated_when_nobody_is_live(
        lab: Lab, server_extra: list[str]) -> None:
    """The C client sends nothing until its device has a packet; where nobody is live it
    must still become the client, so that the server side can reach it first."""
    bed = Testbed(lab, ipv6_overlay=False)
    server = bed.start_server("--workers", "1", *server_extra)
    client = bed.client.popen([sys.executable, "-c", SILENT_CLASSIC, bed.server_underlay],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "connected"
        server.wait_for("connected (classic wire)", timeout=5)
        bed.server.ping(bed.client_overlay, count=1, deadline=2)  # goes to the client
        out, err = client.communicate(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert out.strip() == f"frame 84 proto 1 dst {bed.client_overlay}", err


HOLDER = r"""
import socket, struct, sys, time
mode, target, forged, seconds = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((target, 55555), timeout=5)
if mode == "forged":  # one plausible packet: seated as a classic client that spoke
    s.sendall(struct.pack("!H", len(forged)) + forged)
print("connected", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    if mode == "forged":
        s.sendall(b"\0\0")  # an empty frame: no packet, so nobody is heard
    time.sleep(0.5)
"""

#: short timings: the real client's idle session must not time out meanwhile
LIVELY = ["--peer-timeout", "3", "--keepalive", "0.5"]


@pytest.mark.parametrize("mode", ["idle", "empty-frames"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_idle_connection_never_holds_the_seat_against_the_real_client(
        lab: Lab, workers: str, mode: str) -> None:
    """An attacker takes the empty seat and then sends nothing (or only empty classic
    frames): the real client with --reconnect gets in, on the single-process server and on
    the multi-worker one (issue 12 review). Idle, the attacker proved nothing: it holds the
    seat a moment only, well within the default peer timeout of 40 s. With one forged packet
    and then empty frames it is a classic client that fell silent: it holds the seat for
    the peer timeout (3 s here), however many empty frames it sends."""
    timing = LIVELY if mode == "empty-frames" else []
    bed = Testbed(lab, ipv6_overlay=False)
    server = bed.start_server("--workers", workers, *timing)
    forged = ping4("10.200.0.66", "10.200.0.1")
    holder = bed.client.popen([sys.executable, "-c", HOLDER,
                               "idle" if mode == "idle" else "forged", bed.server_underlay,
                               forged.hex(), "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "connected"
        server.wait_for("connected (classic wire)", timeout=5)  # the attacker is seated
        client = bed.start_client("--workers", workers, "--reconnect", *timing, wait=False)
        client.wait_for("connected to", occurrences=int(workers), timeout=12)
        bed.wait_ready()
        assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
        assert holder.poll() is None  # the attacker was still there, trying
    finally:
        holder.kill()
        holder.wait()
    assert server.count("replaced by") >= 1, server.text
    assert client.count("(native wire") == int(workers), client.text
    server.stop()
    assert "Traceback" not in server.text


LATE_HELLO = r"""
import socket, sys, time
from simpletun.wire import native
target, delay, mtu, ping = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
s = socket.create_connection((target, 55555), timeout=10)
time.sleep(delay)  # a lost segment on a long path: the hello comes late
machine = native.ClientHandshake(native.Hello(tap=False, mtu=mtu, features=0, session=b"late-one"))
s.sendall(machine.start())
out = None
give_up = time.monotonic() + 8
while out is None:
    if time.monotonic() > give_up:
        print("no answer", flush=True)
        sys.exit(1)
    data = s.recv(65536)
    if not data:
        print("closed", flush=True)
        sys.exit(1)
    out = machine.feed(data)
print(out.wire, out.reason, flush=True)
sys.stdin.readline()  # the test looked at the server's device
s.sendall(native.encode_frame(native.DATA, ping))
decoder = native.Decoder()
while True:
    frames = [p for kind, p in decoder.feed(s.recv(65536)) if kind == native.DATA]
    if any(p[20] == 0 for p in frames):  # the echo reply (the server's own pings aside)
        print("data icmp type 0", flush=True)
        break
"""


@pytest.mark.parametrize("delay", [1.5, 2.5])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_late_hello_gets_a_native_answer_and_never_reaches_the_device(
        lab: Lab, workers: str, delay: float) -> None:
    """A native client whose hello leaves late (past QUIET_NATIVE with 2.5 s: it was seated
    as a silent classic client meanwhile) is answered on the native wire; the hello is no
    packet for the server's device (issue 12 review)."""
    bed = Testbed(lab, ipv6_overlay=False, mtu=1400)
    server = bed.start_server("--workers", workers)
    # the server's side has packets for the seat all along: none may reach it as a classic
    # frame before its hello, or the client would take the server for a classic one
    pinger = bed.server.popen(["ping", "-q", "-i", "0.2", "-w", "20", bed.client_overlay],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rx = _rx(bed)
    ping = ping4(bed.client_overlay, bed.server_overlay)
    proc = bed.client.popen([sys.executable, "-c", LATE_HELLO, bed.server_underlay, str(delay),
                             "1400", ping.hex()], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        answer = proc.stdout.readline().strip()
        assert answer == "native", (answer, server.text)  # (its stderr: read after it ends)
        time.sleep(0.2)
        assert _rx(bed) == rx, server.text  # the hello was not written into the device
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=10)
    finally:
        pinger.kill()
        pinger.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip() == "data icmp type 0", err  # an echo reply, on the native wire
    assert _rx(bed) == rx + 1
    if delay > 2:
        server.wait_for("sent its hello late: now on the native wire")
    server.stop()
    assert "Traceback" not in server.text
