"""The native wire end to end: offloads on, off and mixed, fallback to and from the classic
wire, and a tun/tap mismatch refused with one line on each side."""

from __future__ import annotations

import os
import signal
import time

import pytest

from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed

MB = 1024 * 1024


@pytest.mark.parametrize(("server_extra", "client_extra", "server_says", "client_says"), [
    ([], [], "(native wire, offloads on)", "(native wire, offloads on)"),
    (["--no-offload"], ["--no-offload"], "(native wire)", "(native wire)"),
    (["--no-offload"], [], "(native wire)", "(native wire)"),  # mixed: offloads need both
    ([], ["--no-offload"], "(native wire)", "(native wire)"),
    (["--classic"], [], None, "(classic wire)"),  # a classic server never answers the hello
    ([], ["--classic"], "(classic wire)", None),  # a classic client sends packets at once
], ids=["offload", "no-offload", "server-no-offload", "client-no-offload", "classic-server",
        "classic-client"])
def test_wires_carry_a_transfer(lab: Lab, server_extra: list[str], client_extra: list[str],
                                server_says: str | None, client_says: str | None) -> None:
    bed = Testbed(lab)
    bed.start(server_extra=server_extra, client_extra=client_extra)
    assert bed.server_proc and bed.client_proc
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
    assert bed.client.ping(bed.server_overlay6, count=3, interval=0.05).ok
    bed.transfer(12 * MB)
    if client_says:
        bed.client_proc.wait_for(f"connected to 192.0.2.1:55555 {client_says}")
    if server_says:
        bed.server_proc.wait_for(f"connected {server_says}")
    if server_says is None:  # the classic server logs plainly: its device got the hello
        bed.server_proc.wait_for("client 192.0.2.2:")


def test_offloaded_transfer_moves_super_packets(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start()
    bed.transfer(16 * MB)
    assert bed.client_proc and bed.server_proc
    bed.client_proc.stop()
    bed.server_proc.wait_for("queue 0: client 192.0.2.2")  # one line per worker
    bed.server_proc.wait_for("queue 1: client 192.0.2.2")
    lines = [x for x in bed.server_proc.lines if "disconnected" in x]
    received = sum(int(x.split("packets sent, ")[1].split(" received")[0]) for x in lines)
    # 16 MiB in 1500-byte packets would be over 11000; super-packets make it far fewer
    assert 0 < received < 3000, lines


def test_tun_tap_mismatch_is_refused_on_both_sides(lab: Lab) -> None:
    bed = Testbed(lab)
    bed.start_server()
    bed.tap = True
    client = bed.start_client(wait=False)
    assert client.proc.wait(20) == 1
    client.stop()
    assert client.lines[-1] == ("simpletun: server 192.0.2.1:55555 refused: peer is tun, this "
                                "side is tap: use -a on both sides")
    assert bed.server_proc is not None
    bed.server_proc.wait_for("refused client 192.0.2.2:")
    assert bed.server_proc.lines[-1].endswith("peer is tap, this side is tun: use -a on both sides")


def test_keepalives_hold_an_idle_session_and_a_silent_peer_is_dropped(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    live = ["--workers", "1", "--keepalive", "0.2", "--peer-timeout", "1"]
    bed.start(server_extra=live, client_extra=[*live, "--reconnect"])
    assert bed.server_proc and bed.client_proc
    time.sleep(2.5)  # idle far longer than the timeout: only keepalives flow
    assert "disconnected" not in bed.client_proc.text + bed.server_proc.text
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    os.kill(bed.server_proc.proc.pid, signal.SIGSTOP)  # alive for TCP, silent for us
    try:
        bed.client_proc.wait_for("nothing heard from the peer for 1 s (dead-peer timeout); "
                                 "reconnecting in")
    finally:
        os.kill(bed.server_proc.proc.pid, signal.SIGCONT)
    bed.client_proc.wait_for("connected to 192.0.2.1:55555", occurrences=2)
    bed.server_proc.wait_for("client 192.0.2.2:", occurrences=2)
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
