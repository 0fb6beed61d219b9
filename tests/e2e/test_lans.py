"""Two LANs joined by tap devices in Linux bridges, and a routed network behind the far
gateway, as the tutorial describes. Six namespaces:

    hostA --- gwA [br0: lanA + tap0] --- wan (router) --- gwB [br0: lanB + tap0] --- hostB
                                                            |
                                                            +--- hostR (10.60.0.0/24, routed)
"""

from __future__ import annotations

import subprocess
import sys

from simpletun.device import link
from simpletun.lab.netns import Lab, veth
from simpletun.lab.testbed import Watched

from ..conftest import simpletun


def test_two_lans_bridged_and_a_routed_network(lab: Lab) -> None:
    host_a, gw_a, wan, gw_b, host_b, host_r = (lab.host(n) for n in
                                               ("hostA", "gwA", "wan", "gwB", "hostB", "hostR"))
    # the underlay: gwA 198.51.100.2 -- wan -- 203.0.113.2 gwB, routed by wan
    veth(gw_a, "wan0", wan, "toA", a_addrs=["198.51.100.2/24"], b_addrs=["198.51.100.1/24"])
    veth(gw_b, "wan0", wan, "toB", a_addrs=["203.0.113.2/24"], b_addrs=["203.0.113.1/24"])
    wan.sysctl("net.ipv4.ip_forward", "1")
    link.add_route("203.0.113.0/24", "wan0", via="198.51.100.1", netns=gw_a.name)
    link.add_route("198.51.100.0/24", "wan0", via="203.0.113.1", netns=gw_b.name)
    # the LANs, one subnet across both sites, no routes on the hosts
    veth(host_a, "eth0", gw_a, "lanA", a_addrs=["10.50.0.1/24"])
    veth(host_b, "eth0", gw_b, "lanB", a_addrs=["10.50.0.2/24"])
    procs = []
    for gw, lan, args in ((gw_a, "lanA", ["-s"]), (gw_b, "lanB", ["-c", "198.51.100.2"])):
        assert simpletun("mktun", "tap0", "--tap", "--up", ns=gw).returncode == 0
        link.add_bridge("br0", netns=gw.name)
        link.set_master(lan, "br0", netns=gw.name)
        link.set_master("tap0", "br0", netns=gw.name)
        proc = gw.popen([sys.executable, "-m", "simpletun", "-i", "tap0", "-a", *args],
                        stderr=subprocess.PIPE, text=True)
        procs.append(Watched(proc, gw.name))
        procs[-1].wait_for("listening on" if "-s" in args else "connecting to")
    procs[1].wait_for("connected to")

    ping = host_a.ping("10.50.0.2", count=5, interval=0.05)
    assert ping.ok, ping.output + procs[0].text + procs[1].text
    assert host_b.ping("10.50.0.1", count=2).ok

    # routing: a network behind gwB, reached from hostA through the bridged tunnel
    link.add_address("br0", "10.50.0.254/24", netns=gw_b.name)
    veth(gw_b, "netR", host_r, "eth0", a_addrs=["10.60.0.1/24"], b_addrs=["10.60.0.2/24"])
    gw_b.sysctl("net.ipv4.ip_forward", "1")
    link.add_route("10.60.0.0/24", "eth0", via="10.50.0.254", netns=host_a.name)
    link.add_route("0.0.0.0/0", "eth0", via="10.60.0.1", netns=host_r.name)
    routed = host_a.ping("10.60.0.2", count=3, interval=0.05)
    assert routed.ok, routed.output


def test_route_option_reaches_a_network_behind_the_far_end(lab: Lab) -> None:
    """tun mode: --route on each end, forwarding on the gateways."""
    host_a, gw_a, gw_b, host_r = (lab.host(n) for n in ("hostA", "gwA", "gwB", "hostR"))
    veth(gw_a, "wan0", gw_b, "wan0", a_addrs=["192.0.2.1/24"], b_addrs=["192.0.2.2/24"])
    veth(host_a, "eth0", gw_a, "lan0", a_addrs=["10.70.0.2/24"], b_addrs=["10.70.0.1/24"])
    veth(host_r, "eth0", gw_b, "lan0", a_addrs=["10.60.0.2/24"], b_addrs=["10.60.0.1/24"])
    for gw in (gw_a, gw_b):
        gw.sysctl("net.ipv4.ip_forward", "1")
    link.add_route("0.0.0.0/0", "eth0", via="10.70.0.1", netns=host_a.name)
    link.add_route("0.0.0.0/0", "eth0", via="10.60.0.1", netns=host_r.name)
    server = Watched(gw_a.popen(
        [sys.executable, "-m", "simpletun", "-i", "tun0", "-s", "--address", "10.201.0.1/30",
         "--route", "10.60.0.0/24"], stderr=subprocess.PIPE, text=True), "gwA")
    server.wait_for("listening on")
    client = Watched(gw_b.popen(
        [sys.executable, "-m", "simpletun", "-i", "tun0", "-c", "192.0.2.1", "--address",
         "10.201.0.2/30", "--route", "10.70.0.0/24"], stderr=subprocess.PIPE,
        text=True), "gwB")
    client.wait_for("connected to")
    assert "10.60.0.0/24" in {str(r) for r in link.routes("tun0", netns=gw_a.name)}
    ping = host_a.ping("10.60.0.2", count=3, interval=0.05)
    assert ping.ok, ping.output + server.text + client.text
