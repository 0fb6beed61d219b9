"""``--workers 2`` on the encrypted engine over UDP: between two simpletun sides (pings,
20 MB each way with sha256, sixteen parallel streams, both workers of each side moving
packets, the bytes in ``wg show``), and a simpletun server with two workers against
Debian's wireguard-go in both roles; and what --workers refuses with keys."""

from __future__ import annotations

import os
import re
import signal

import pytest

from simpletun.control import status
from simpletun.device import link
from simpletun.lab import bench, wghost
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed

from ..conftest import simpletun
from .test_interop_simpletun_wg import OURS, THEIRS, bare, interop, ping
from .wgcases import MB, wait_until

WORKERS = ("--workers", "2")


def _worker_packets(text: str) -> list[int]:
    """Packets per worker from the line a tunnel ends with."""
    found = re.findall(r"workers: (.*)", text)
    assert found, text
    return [int(n) for n in re.findall(r"\d+: (\d+) packets", found[-1])]


def test_two_workers_each_side(lab: Lab) -> None:
    bed = Testbed(lab, keys=True)
    bed.start(server_extra=["-t", "udp", *WORKERS], client_extra=["-t", "udp", *WORKERS])
    assert bed.server_proc is not None and bed.client_proc is not None
    assert "2 workers" in bed.server_proc.text
    for target in (bed.server_overlay, bed.server_overlay6):
        assert bed.client.ping(target, count=3, interval=0.05, deadline=5).ok
    bed.transfer(20 * MB)
    bed.transfer(20 * MB, from_server=True)
    # the port and the mark are every worker's: refused through the UAPI while they run
    for setting in (["listen-port", "51000"], ["fwmark", "7"]):
        done = bed.server.run(["wg", "set", bed.iface, *setting])
        assert done.returncode != 0, setting
    # sixteen flows at once: the device's queues spread them over the workers by hash
    # (all of them on one queue is a chance of 2**-15; with four it was 1 in 8, seen)
    mbps, moved = bench.throughput(bed.server, bed.client, bed.server_overlay, 16, 1.0,
                                   "builtin")
    assert mbps is not None and moved > 0
    def transfer() -> tuple[int, int]:
        done = bed.server.run(["wg", "show", bed.iface, "transfer"])
        rx, tx = (int(v) for v in done.stdout.split()[1:3])
        return rx, tx

    # the workers' bytes reach the leader (reported every 0.1 s)
    wait_until("wg show counting the workers' bytes",
               lambda: transfer()[0] > 20 * MB + moved and transfer()[1] > 20 * MB, timeout=3)
    # and their packets (simpletun show): at least one per MTU's worth of what moved
    (peer,) = status.read(bed.iface, status.WG_DIRECTORY).peers
    assert peer.rx_packets > (20 * MB + moved) // 1500 and peer.tx_packets > 20 * MB // 1500, \
        peer
    for proc in (bed.client_proc, bed.server_proc):
        assert proc.stop() == 0
        counts = _worker_packets(proc.text)
        assert len(counts) == 2 and min(counts) > 100, proc.text  # both carried traffic
        assert "Traceback" not in proc.text and "failed" not in proc.text


@pytest.mark.parametrize("role", ["simpletun-client", "simpletun-server"])
def test_two_workers_against_wireguard_go(lab: Lab, role: str) -> None:
    with interop(lab, role, 4, WORKERS) as it:
        if role == "simpletun-server":
            ping(it.go, bare(OURS[0]))
            it.proc.wait_for("session up", timeout=5)
        for ours, theirs in zip(OURS, THEIRS, strict=True):
            ping(it.st, bare(theirs))
            ping(it.go, bare(ours))
        wghost.transfer(it.st.ns, it.go.ns, bare(THEIRS[0]), 20 * MB)
        wghost.transfer(it.go.ns, it.st.ns, bare(OURS[0]), 20 * MB)
        # the workers report their bytes to the leader every 0.1 s
        wait_until("wg show counting the workers' bytes", lambda: min(
            it.ours_of_theirs().rx_bytes, it.ours_of_theirs().tx_bytes) >= 20 * MB, timeout=3)
        theirs = it.theirs_of_ours()
        assert theirs.rx_bytes >= 20 * MB and theirs.tx_bytes >= 20 * MB, theirs
        stats = simpletun("wg-drops", it.iface, ns=it.st.ns).stdout
        assert "replay" not in stats and "steered-elsewhere" not in stats, stats
        assert it.proc.stop() == 0
        assert "Traceback" not in it.proc.text
        assert len(_worker_packets(it.proc.text)) == 2


@pytest.mark.parametrize(("args", "says"), [
    (["-t", "tcp"], "--workers with --key runs over UDP only"),
    (["-t", "icmp"], "--workers with --key runs over UDP only"),
    (["-t", "udp", "-a"], "--workers with --key is for tun devices"),
])
def test_workers_with_keys_refuses_what_it_cannot_do(lab: Lab, args: list[str],
                                                      says: str) -> None:
    bed = Testbed(lab, keys=True)
    done = simpletun(*bed.server_command(*args, *WORKERS), ns=bed.server)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_a_worker_that_dies_ends_the_tunnel_with_an_error(lab: Lab) -> None:
    bed = Testbed(lab, keys=True)
    server = bed.start_server("-t", "udp", *WORKERS)
    pid = server.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(p) for p in f.read().split()]
    assert len(children) == 1  # the follower
    os.kill(children[0], signal.SIGKILL)
    assert server.proc.wait(timeout=10) == 1
    assert "worker 1 ended" in server.text and "Traceback" not in server.text
    assert not link.exists(bed.iface, netns=bed.server.name)  # the device went with it
