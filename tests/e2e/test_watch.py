"""dump on the device of a running tunnel watches it the way tcpdump does (a packet socket)
and never attaches a queue: every flow through the tunnel still arrives, and every packet
shown decodes as IP. respond on such a device is refused, naming the holder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simpletun.device import link
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed, Watched, simpletun_cmd
from simpletun.tools import pcap
from simpletun.tools.describe import describe

from ..conftest import simpletun

FLOWS = 30
PORT = 5002

# accept FLOWS connections one after the other, read each to its end, answer its size
RECEIVER = f"""
import socket, sys
srv = socket.create_server((sys.argv[1], {PORT}))
print("ready", flush=True)
for _ in range({FLOWS}):
    conn, _ = srv.accept()
    with conn:
        total = 0
        while data := conn.recv(65536):
            total += len(data)
        conn.sendall(str(total).encode())
"""

# FLOWS short transfers, each a new connection (a new flow hash); print how many failed
SENDER = f"""
import socket, sys
failed = 0
for _ in range({FLOWS}):
    try:
        with socket.create_connection((sys.argv[1], {PORT}), timeout=3) as c:
            c.sendall(bytes(65536))
            c.shutdown(socket.SHUT_WR)
            if c.recv(100) != b"65536":
                failed += 1
    except OSError:
        failed += 1
print(failed)
"""


def test_dump_watches_a_busy_multiqueue_device_without_disturbing_it(lab: Lab,
                                                                     tmp_path: Path) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(server_extra=["--workers", "2"], client_extra=["--workers", "2"])
    assert bed.server_proc is not None
    bed.server_proc.wait_for("on queue 1 of 2")
    cap_file = tmp_path / "tunnel.pcap"
    dump = Watched(bed.server.popen(simpletun_cmd("dump", bed.iface, "--pcap", str(cap_file)),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                   "dump")
    try:
        dump.wait_for("listening on")
        assert dump.count("watching it through a packet socket") == 1, dump.text
        assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
        # flows opened from the server's side: the device picks their queue by hash
        receiver = bed.client.popen([sys.executable, "-c", RECEIVER, bed.client_overlay],
                                    stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        sent = bed.server.run([sys.executable, "-c", SENDER, bed.client_overlay], timeout=200)
        receiver.kill()
        receiver.wait()
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.strip() == "0", f"{sent.stdout.strip()} of {FLOWS} flows failed"
    finally:
        assert dump.stop() == 0, dump.text
    assert dump.proc.stdout is not None
    lines = dump.proc.stdout.read().splitlines()
    assert len(lines) > FLOWS * 4
    assert not [line for line in lines if "not IP" in line or "IPv" not in line], lines[:5]
    assert any(line.startswith("In  IPv4") and "ICMP echo request" in line for line in lines)
    assert any(line.startswith("Out IPv4") and "ICMP echo reply" in line for line in lines)
    assert sum(line.endswith(", 60 bytes") and "TCP [S]" in line for line in lines) >= FLOWS
    captured = pcap.read(str(cap_file))
    assert captured.linktype == pcap.LINKTYPE_RAW
    assert len(captured.records) == len(lines)
    assert [describe(r.data, tap=False) for r in captured.records] == [line[4:] for line in lines]


def test_respond_on_a_busy_device_is_refused_naming_the_holder(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start()
    assert bed.server_proc is not None
    pid = bed.server_proc.proc.pid
    for args in (["respond", bed.iface], ["dump", bed.iface, "--respond"]):
        done = simpletun(*args, ns=bed.server, timeout=20)
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert f"{bed.iface} is held by pid {pid} (" in done.stderr
        assert f"watch it with 'simpletun dump {bed.iface}'" in done.stderr
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok


def test_dump_watches_a_busy_tap_device_as_ethernet(lab: Lab, tmp_path: Path) -> None:
    bed = Testbed(lab, tap=True, ipv6_overlay=False)
    bed.start()
    cap_file = tmp_path / "tap.pcap"
    dump = Watched(bed.server.popen(simpletun_cmd("dump", bed.iface, "--pcap", str(cap_file)),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                   "dump")
    try:
        dump.wait_for("listening on tap0 (tap, Ethernet)")
        assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
        wrong = simpletun("dump", bed.iface, "--tun", ns=bed.server)
        assert wrong.returncode == 1 and "tap0 is a tap device, not tun" in wrong.stderr
    finally:
        assert dump.stop() == 0, dump.text
    assert dump.proc.stdout is not None
    lines = dump.proc.stdout.read().splitlines()
    assert sum(line.startswith("In  IPv4") and "echo request" in line for line in lines) == 3
    assert sum(line.startswith("Out IPv4") and "echo reply" in line for line in lines) == 3
    captured = pcap.read(str(cap_file))
    assert captured.linktype == pcap.LINKTYPE_ETHERNET
    assert [describe(r.data, tap=True) for r in captured.records] == [line[4:] for line in lines]


def test_dump_with_address_on_a_busy_device_is_refused(lab: Lab) -> None:
    """--address would change the running tunnel's device under it."""
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start()
    assert bed.server_proc is not None
    pid = bed.server_proc.proc.pid
    before = link.addresses(bed.iface, netns=bed.server.name)
    done = simpletun("dump", bed.iface, "--address", "10.201.0.1/24", ns=bed.server, timeout=20)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{bed.iface} is held by pid {pid} (" in done.stderr
    assert done.stderr.rstrip().endswith("drop --address"), done.stderr
    assert link.addresses(bed.iface, netns=bed.server.name) == before
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
