"""The tunnel end to end, in namespaces: traffic through tun and tap, debug lines, the
server going away with and without --reconnect, junk from the network."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed
from simpletun.tunnel import workers

from ..packets import ping4

MB = 1024 * 1024


@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
def test_traffic_through_the_tunnel(lab: Lab, tap: bool) -> None:
    bed = Testbed(lab, tap=tap)
    bed.start()
    p4 = bed.client.ping(bed.server_overlay, count=5, interval=0.05)
    p6 = bed.client.ping(bed.server_overlay6, count=5, interval=0.05)
    assert p4.ok and p6.ok, p4.output + p6.output
    size, digest, seconds = bed.transfer(8 * MB)
    assert size == 8 * MB and len(digest) == 64 and seconds > 0
    assert bed.client_proc and bed.server_proc
    # without -d: one line per connect, nothing per packet
    assert not any("TAP2NET" in line or "NET2TAP" in line for line in bed.client_proc.lines)
    # one connection per worker (one per CPU on both sides by default)
    assert bed.server_proc.count("client 192.0.2.2:") == workers.default_workers()
    assert link.state(bed.iface, netns=bed.server.name).tun.tap is tap  # type: ignore[union-attr]


def test_debug_prints_a_line_per_packet(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(client_extra=["-d"])
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    assert bed.client_proc is not None
    bed.client_proc.wait_for("NET2TAP", occurrences=2)
    line = next(x for x in bed.client_proc.lines if "TAP2NET " in x)
    assert "bytes from tun0, sending" in line and "to the network" in line
    assert any("NET2TAP " in x and "wrote 84 to tun0" in x
               for x in bed.client_proc.lines), bed.client_proc.text


def test_client_reconnects_when_the_server_comes_back(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(client_extra=["--reconnect"])
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    assert bed.server_proc and bed.client_proc
    bed.server_proc.proc.send_signal(signal.SIGKILL)  # no goodbye
    bed.server_proc.stop()
    bed.client_proc.wait_for("reconnecting in")
    assert not bed.client.ping(bed.server_overlay, count=1, deadline=1).ok
    bed.start_server()
    bed.client_proc.wait_for("connected to 192.0.2.1:55555", timeout=40,
                             occurrences=2 * workers.default_workers())  # again, each worker
    bed.wait_ready()
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
    bed.transfer(2 * MB)


def test_client_without_reconnect_exits_with_one_line(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start()
    assert bed.server_proc and bed.client_proc
    bed.server_proc.stop()  # SIGTERM: the server shuts down cleanly
    assert bed.server_proc.proc.returncode == 0
    assert "shutting down" in bed.server_proc.lines[-1]
    assert bed.client_proc.proc.wait(10) == 1
    bed.client_proc.stop()
    assert bed.client_proc.lines[-1] == (
        "simpletun: server 192.0.2.1:55555 went away: closed by the peer; use --reconnect "
        "to keep trying")
    assert "Traceback" not in bed.client_proc.text


def test_client_cannot_connect(lab: Lab) -> None:
    bed = Testbed(lab)
    proc = bed.start_client(wait=False)
    assert proc.proc.wait(20) == 1
    proc.stop()
    assert proc.lines[-1] == ("simpletun: cannot connect to 192.0.2.1:55555: connection "
                              "refused: is 'simpletun -s' running there, on this port?")


def test_port_in_use(lab: Lab) -> None:
    bed = Testbed(lab)
    bed.start_server()
    second = bed.server.run([sys.executable, "-m", "simpletun", "-i", "tun1", "-s"])
    assert second.returncode == 1
    assert second.stderr.strip() == ("simpletun: port 55555 is already in use on this host: "
                                     "stop the other server or pick another port with -p")


JUNK_SENDER = """
import os, socket, struct, sys, time
kind = sys.argv[1]
s = socket.create_connection(("192.0.2.1", 55555))
try:
    if kind == "random":
        s.sendall(os.urandom(200_000))
    else:
        frame = lambda p: struct.pack("!H", len(p)) + p
        forged, valid = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
        s.sendall(frame(valid) + frame(b"\\x00" * 100) + b"\\x00\\x00" + frame(forged)
                  + frame(os.urandom(60)) + b"\\xff\\xff" + os.urandom(100))
    print(len(s.recv(100)))  # the server closes: 0
except (ConnectionResetError, BrokenPipeError):
    print(0)  # closed while we were still sending
"""


def test_junk_and_oversized_frames_are_dropped_and_the_next_client_served(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    server = bed.start_server()
    forged = bytearray(ping4("10.200.0.2", "10.200.0.1"))
    forged[8] ^= 0xFF  # TTL changed without fixing the checksum: a forged header
    valid = ping4("10.200.0.2", "10.200.0.1")  # proves a classic client: let in, checked
    for kind in ("crafted", "random"):
        done = bed.client.run([sys.executable, "-c", JUNK_SENDER, kind, forged.hex(),
                               valid.hex()])
        assert done.stdout.strip() == "0", done.stderr
    server.wait_for("disconnected")
    crafted = next(x for x in server.lines if "disconnected" in x)
    assert ("sent a frame of 65535 bytes, more than the 1500 this side can carry: refusing "
            "it and closing the connection") in crafted
    assert "dropped" in crafted and "bad-checksum" in crafted and "empty" in crafted
    # random bytes are no client at all: dropped before anything of them is read as packets
    server.wait_for("its first bytes are neither a hello nor a packet")
    # of it all, only the one valid packet reached the device (rx on a tun = written into it)
    assert link.state(bed.iface, netns=bed.server.name).counters["rx_packets"] == 1
    assert server.proc.poll() is None
    bed.start_client()
    bed.wait_ready()
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
    assert link.state(bed.iface, netns=bed.server.name).counters["rx_packets"] >= 4


def test_a_new_client_waits_until_the_live_one_falls_silent(lab: Lab) -> None:
    """A second client (another session) is refused while the live one talks, and served
    once the live one has been silent past the peer timeout."""
    bed = Testbed(lab, ipv6_overlay=False)
    live = ["--keepalive", "0.2", "--peer-timeout", "2"]
    bed.start(server_extra=live, client_extra=live)
    assert bed.server_proc and bed.client_proc
    stale = bed.client_proc
    fresh_cmd = ["-i", "tun1", "--address", "10.200.0.3/24", "-c", bed.server_underlay]
    bed.client_proc = None
    # while the first client is live, a second one is turned away with one line
    refused = bed.client.run([sys.executable, "-m", "simpletun", *fresh_cmd], timeout=30)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "simpletun: server 192.0.2.1:55555 is busy: the server serves another client that "
        "is live"), refused.stderr
    assert "192.0.2.2" not in refused.stderr  # the live client's address is for the log only
    bed.server_proc.wait_for("refused client 192.0.2.2:")
    _signal_tree(stale.proc.pid, signal.SIGSTOP)  # hangs without closing its connections
    try:
        fresh = bed._start(bed.client, [*fresh_cmd, "--reconnect"], "client2")
        fresh.wait_for("connected to", timeout=20)
        bed.server_proc.wait_for("(dead-peer timeout)")
        link.wait_usable("tun1", netns=bed.client.name)
        assert bed.client.ping("10.200.0.1", count=2, interval=0.05, interface="tun1").ok
    finally:
        _signal_tree(stale.proc.pid, signal.SIGCONT)


def _signal_tree(pid: int, sig: int) -> None:
    """``sig`` to ``pid`` and its children (a client's workers)."""
    os.kill(pid, sig)
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        for child in f.read().split():
            os.kill(int(child), sig)


def test_once_exits_after_the_first_client_and_sigint_is_clean(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(server_extra=["--once"])
    assert bed.server_proc and bed.client_proc
    bed.client_proc.proc.send_signal(signal.SIGINT)
    assert bed.client_proc.proc.wait(10) == 0
    bed.client_proc.stop()
    assert "shutting down:" in bed.client_proc.lines[-1]
    assert bed.server_proc.proc.wait(10) == 0  # --once: gone with its client
    bed.server_proc.stop()
    assert "disconnected: closed by the peer" in bed.server_proc.text
    assert " done: " in bed.server_proc.lines[-1] and "received" in bed.server_proc.lines[-1]
    assert not link.exists("tun0", netns=bed.server.name)
