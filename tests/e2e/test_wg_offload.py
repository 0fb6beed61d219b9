"""UDP GSO from an application through the engine: a local socket using UDP_SEGMENT must
reach the peer as its datagrams. The engine asks the device for TCP super-packets only
(it cuts TCP; with USO on, GSO_UDP_L4 super-packets would reach it and be dropped as
unsegmentable, as they once were), so the kernel segments UDP before the engine sees it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from simpletun.lab.netns import Lab

from .wgcases import assert_ping, wg_pair

RECEIVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 9999))
    s.settimeout(3.0)
    print("ready", flush=True)
    n = 0
    try:
        while n < 8:
            s.recv(65535)
            n += 1
    except OSError:
        pass
    print(n, flush=True)
""")

SENDER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(17, 103, 1000)  # SOL_UDP, UDP_SEGMENT: 1000-byte datagrams
    s.sendto(b"u" * 8000, (sys.argv[1], 9999))
""")


def test_udp_gso_from_the_device_reaches_the_peer(lab: Lab) -> None:
    check_udp_gso(lab, "simpletun-wg")


def check_udp_gso(lab: Lab, left: str) -> None:
    """8 datagrams sent as one UDP_SEGMENT send from ``left`` reach wireguard-go's side
    (with left = wireguard-go this passes: the control)."""
    with wg_pair(lab, left, "wireguard-go", underlay=4) as p:
        assert_ping(p.left, p.right, 4, count=1)
        rx = p.right.ns.popen([sys.executable, "-c", RECEIVER, p.right.overlay4],
                              stdout=subprocess.PIPE, text=True)
        assert rx.stdout is not None
        assert rx.stdout.readline().strip() == "ready"
        p.left.ns.run([sys.executable, "-c", SENDER, p.right.overlay4], check=True)
        out, _ = rx.communicate(timeout=10)
        assert int(out.strip()) == 8, "datagrams sent with UDP_SEGMENT did not all arrive"
