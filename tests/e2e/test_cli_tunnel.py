"""The tunnel's command line in namespaces: what it says at start, what it refuses before
touching anything (a device another tunnel serves, input it cannot use, an MTU the transport
cannot carry), --mac, and a full tunnel (--route default) that keeps the server reachable."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab, Namespace, veth
from simpletun.lab.testbed import Testbed, Watched, key_pair, simpletun_cmd

from ..conftest import simpletun

UNENCRYPTED = ("warning: this tunnel is not encrypted: anyone on the path can read and inject "
               "packets; use it only on trusted networks")
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "  # ISO 8601


def test_start_says_unencrypted_and_debug_lines_have_a_time(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(client_extra=["-d"])
    assert bed.server_proc and bed.client_proc
    for proc in (bed.server_proc, bed.client_proc):
        assert sum(line.endswith(UNENCRYPTED) for line in proc.lines) == 1, proc.text
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    bed.client_proc.wait_for("NET2TAP", occurrences=2)
    debug = [x for x in bed.client_proc.lines if "TAP2NET" in x or "NET2TAP" in x]
    assert debug and all(re.match(STAMP + "(TAP2NET|NET2TAP) ", x) for x in debug), debug


@pytest.mark.parametrize("args", [
    ["-s", "-p", "5556"],
    ["-c", "192.0.2.1", "-p", "5556"],
    ["-s", "-t", "udp", "-p", "5556", "-k", "{key}", "-P", "{pub}"],
], ids=["server", "client", "udp"])
def test_a_device_another_tunnel_serves_is_refused_naming_it(lab: Lab,
                                                             args: list[str]) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    first = bed.start_server()
    key, pub = key_pair(lab.directory, "k")
    args = [a.format(key=key, pub=pub) for a in args]
    second = bed.server.run(simpletun_cmd("-i", bed.iface, *args), timeout=20)
    assert second.returncode == 1, second.stderr
    pid = first.proc.pid
    assert second.stderr.strip().splitlines() == [
        f"simpletun: {bed.iface} is already served by pid {pid} (python); stop it first "
        "or use another device"]
    assert first.proc.poll() is None  # the first one serves on


def test_workers_on_a_single_queue_device_say_how_to_fix_it(lab: Lab) -> None:
    ns = lab.host("sq")
    assert simpletun("mktun", "stq0", ns=ns).returncode == 0
    done = simpletun("-i", "stq0", "-s", "--workers", "2", ns=ns)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "simpletun: stq0 is a single-queue device and --workers 2 needs one queue per "
        "worker: recreate it with 'simpletun deltun stq0; simpletun mktun stq0 "
        "--multi-queue', or drop --workers")


KEYED = ["-k", "{key}", "-P", "{pub2}"]


@pytest.mark.parametrize("args,message", [
    (["-c", "[fd00::1"], "'[' without ']'"),
    (["-c", "[fd00::1]:x"], "bad port"),
    (["-s", "--address", "10.0.0.1"], "give a prefix, e.g. 10.0.0.1/24"),
    (["-s", "-u", "-a"], "-u (tun) and -a (tap) do not go together: choose one"),
    (["-c", "192.0.2.1", "-t", "icmp", "-p", "5556"], "-p is not used by -t icmp"),
    (["-c", "192.0.2.1:5556", "-t", "icmp"], "ICMP has no ports"),
    (["-s", "-a", "--mtu", "65535"], "a tap device takes at most 65521"),
    (["-s", "-t", "udp", "--mtu", "65476", *KEYED], "UDP over IPv4 carries tun packets of at "
                                                    "most 65475 bytes"),
    (["-c", "[::1]", "-t", "udp", "--mtu", "65496", *KEYED], "UDP over IPv6 carries tun "
                                                             "packets of at most 65495 bytes"),
    (["-s", "-t", "icmp", "--mtu", "65470", *KEYED], "ICMP over IPv4 carries tun packets of "
                                                     "at most 65469 bytes"),
    (["-s", "-t", "udp", "-a", "--mtu", "65439", *KEYED], "at most 65438 bytes"),
    (["-s", "--mac", "02:00:00:00:00:01"], "--mac is for a tap device"),
    (["-s", "-a", "--mac", "01:00:00:00:00:01"], "multicast"),
    # the encrypted tunnel's flags
    (["-s", "-t", "udp"], "-t udp is encrypted only: give --key FILE"),
    (["-c", "192.0.2.1", "-t", "icmp"], "-t icmp is encrypted only"),
    (["-s", "-P", "{pub}"], "--peer needs this side's private key too: --key FILE"),
    (["-s", "-k", "{key}"], "needs the other side's public key: --peer KEY"),
    (["-s", "-k", "/nonexistent/key", "-P", "{pub}"], "cannot read /nonexistent/key"),
    (["-s", "-k", "{junk_file}", "-P", "{pub}"], "holds no WireGuard private key"),
    (["-s", "-k", "{key}", "-P", "not-a-key"], "'not-a-key' is neither a public key"),
    (["-s", "-k", "{key}", "-P", "{pub}:10.0.0.300/32"], "--peer"),
    (["-c", "192.0.2.1", "-k", "{key}", "-P", "{pub}", "-P", "{pub2}"],
     "a client has one peer, its server: give --peer once"),
    (["-s", "-k", "{key}", "-P", "{pub}", "-P", "{pub}"], "the same key is given twice"),
    (["-s", "-k", "{key}", "-P", "{pub}:10.0.0.2/32", "-P", "{pub2}"],
     "give the addresses it may use"),
    (["-s", "--classic", *KEYED], "the classic wire is plaintext"),
    (["-s", "--workers", "2", *KEYED], "--workers with --key runs over UDP only"),
    (["-s", "--once", *KEYED], "--once is for the plaintext TCP wire"),
    (["-s", "-k", "{key}", "-P", "{pub}"], "is this side's own public key (of --key)"),
])
def test_unusable_input_is_a_usage_error_before_anything_changes(
        lab: Lab, args: list[str], message: str) -> None:
    ns = lab.host("use")
    key, pub = key_pair(lab.directory, "k")
    _key2, pub2 = key_pair(lab.directory, "k2")
    junk_file = os.path.join(lab.directory, "junk")
    with open(junk_file, "w") as f:
        f.write("PrivateKey = not one\n")
    args = [a.format(key=key, pub=pub, pub2=pub2, junk_file=junk_file) for a in args]
    done = simpletun("-i", "stx0", *args, ns=ns, timeout=20)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not link.exists("stx0", netns=ns.name)
    echo = "/proc/sys/net/ipv4/icmp_echo_ignore_all"
    assert ns.run(["cat", echo]).stdout.strip() == "0"


def test_a_peer_key_may_be_a_file(lab: Lab) -> None:
    """-P takes the file 'simpletun pubkey' wrote, as well as the key itself."""
    bed = Testbed(lab, keys=True, ipv6_overlay=False)
    for name, public in (("server", bed.server_public), ("client", bed.client_public)):
        path = os.path.join(lab.directory, f"{name}.pub")
        with open(path, "w") as f:
            f.write(public + "\n")
    bed.server_public = os.path.join(lab.directory, "server.pub")
    bed.client_public = os.path.join(lab.directory, "client.pub") + ":10.200.0.2/32"
    bed.start(server_extra=["-t", "udp"], client_extra=["-t", "udp"])
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    shown = bed.server.run(["wg", "show", bed.iface, "allowed-ips"]).stdout
    assert shown.split()[1:] == ["10.200.0.2/32"], shown


def test_a_bad_server_name_fails_before_the_device_is_touched(lab: Lab) -> None:
    ns = lab.host("name")
    assert simpletun("mktun", "stn0", ns=ns).returncode == 0
    before = link.state("stn0", netns=ns.name)
    done = simpletun("-i", "stn0", "-c", "no-such-host.invalid", "--mtu", "1400", "--address",
                     "10.0.0.2/24", ns=ns)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "simpletun: cannot resolve 'no-such-host.invalid': give the server's IP address or a "
        "name this host can resolve"]
    after = link.state("stn0", netns=ns.name)
    assert (after.mtu, after.up) == (before.mtu, before.up)
    assert link.addresses("stn0", netns=ns.name) == []


def test_no_address_says_the_device_is_down_and_how_to_set_it_up(lab: Lab) -> None:
    ns = lab.host("bare")
    proc = Watched(ns.popen(simpletun_cmd("-i", "stb0", "-s"),
                            stderr=subprocess.PIPE, text=True), "server")
    proc.wait_for("listening on")
    assert sum("stb0 has no address and is down: give --address CIDR" in x
               and "ip link set stb0 up" in x for x in proc.lines) == 1, proc.text
    assert not link.state("stb0", netns=ns.name).up
    proc.stop()
    # with an address: no such line
    proc = Watched(ns.popen(simpletun_cmd("-i", "stb0", "-s", "--address",
                                          "10.0.0.1/24"), stderr=subprocess.PIPE, text=True),
                   "server")
    proc.wait_for("listening on")
    assert not any("is down" in x for x in proc.lines), proc.text
    proc.stop()


def test_mac_of_a_tap_tunnel(lab: Lab) -> None:
    bed = Testbed(lab, tap=True, ipv6_overlay=False)
    bed.start(server_extra=["--mac", "02:53:54:00:00:01"])
    assert link.state(bed.iface, netns=bed.server.name).mac == "02:53:54:00:00:01"
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok


def test_an_overlay_address_over_the_servers_address_is_warned_about(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start_server()
    client = bed.start_client("--address", "192.0.2.50/24", wait=False)
    client.wait_for("warning: --address 192.0.2.50/24 covers the server's underlay address "
                    "192.0.2.1")


# (client underlay, router's two sides, server underlay, reachable only through the tunnel,
#  overlay client/server, what the routes are given as)
FULL = {
    4: ("198.51.100.2/24", "198.51.100.1/24", "203.0.113.1/24", "203.0.113.2/24", "192.0.2.99",
        ("10.200.0.2/24", "10.200.0.1/24")),
    6: ("fd51::2/64", "fd51::1/64", "fd52::1/64", "fd52::2/64", "fd99::99",
        ("fd20::2/64", "fd20::1/64")),
}


def _full_tunnel_hosts(lab: Lab, v: int) -> tuple[Namespace, Namespace]:
    """client --- router --- server, each end with a default route via the router; the
    server also has an address the router cannot reach: only the tunnel can."""
    c_addr, rc_addr, rs_addr, s_addr, far, _overlay = FULL[v]
    client, router, server = lab.host("cl"), lab.host("rt"), lab.host("sv")
    veth(client, "eth0", router, "toC", a_addrs=[c_addr], b_addrs=[rc_addr])
    veth(server, "eth0", router, "toS", a_addrs=[s_addr], b_addrs=[rs_addr])
    router.sysctl("net.ipv4.ip_forward" if v == 4 else "net.ipv6.conf.all.forwarding", "1")
    default = "default" if v == 4 else "default6"
    link.add_route(default, "eth0", via=rc_addr.split("/")[0], netns=client.name)
    link.add_route(default, "eth0", via=rs_addr.split("/")[0], netns=server.name)
    link.add_address("lo", f"{far}/{32 if v == 4 else 128}", netns=server.name, nodad=True)
    return client, server


def _host_routes(ns: Namespace) -> list[str]:
    return [str(n) for n in link.routes("eth0", netns=ns.name) if n.prefixlen == n.max_prefixlen]


@pytest.mark.parametrize("v,routes", [
    (4, ["default"]), (4, ["0.0.0.0/1", "128.0.0.0/1"]), (6, ["::/0"])],
    ids=["default", "halves", "ipv6"])
def test_full_tunnel_keeps_the_server_reachable(lab: Lab, v: int, routes: list[str]) -> None:
    client, server = _full_tunnel_hosts(lab, v)
    _c, rc_addr, _rs, s_addr, far, (c_overlay, s_overlay) = FULL[v]
    target, gateway = s_addr.split("/")[0], rc_addr.split("/")[0]
    assert not client.ping(far, count=1, deadline=1).ok  # not without the tunnel
    srv = Watched(server.popen(simpletun_cmd("-i", "tun0", "-s", "--address", s_overlay,
                                             "--workers", "1"),
                               stderr=subprocess.PIPE, text=True), "server")
    srv.wait_for("listening on")
    args = ["-i", "tun0", "-c", target, "--address", c_overlay, "--workers", "1"]
    for net in routes:
        args += ["--route", net]
    cli = Watched(client.popen(simpletun_cmd(*args), stderr=subprocess.PIPE, text=True),
                  "client")
    cli.wait_for("connected to", timeout=15)
    for ns in (client, server):
        link.wait_usable("tun0", netns=ns.name)
    host = f"{target}/{32 if v == 4 else 128}"
    assert _host_routes(client) == [host]
    tunnel_routes = {str(n) for n in link.routes("tun0", netns=client.name)}
    halves = {"0.0.0.0/1", "128.0.0.0/1"} if v == 4 else {"::/1", "8000::/1"}
    assert halves <= tunnel_routes
    half = "128.0.0.0/1" if v == 4 else "8000::/1"
    assert cli.count(f"note: --route {half} covers the server {target}: it stays reachable "
                     f"through the underlay ({target} via {gateway} dev eth0)") == 1, cli.text
    ping = client.ping(far, count=3, interval=0.1)
    assert ping.ok, ping.output + cli.text + srv.text
    assert client.ping(target, count=1).ok  # the server itself, via the underlay
    assert cli.proc.poll() is None and cli.count("connected to") == 1, cli.text
    assert cli.stop() == 0
    assert _host_routes(client) == []
    assert link.routes("eth0", netns=client.name)  # the underlay's own routes stay
    srv.stop()


def test_the_tunnel_process_keeps_pyroute2_out() -> None:
    """The route work is netlink in a forked child: pyroute2 stays out of this process."""
    code = ("import sys; import simpletun.cli.tunnel; "
            "print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def _persistent_full_tunnel(lab: Lab) -> tuple[Namespace, Watched, list[str], str, str]:
    """A full-tunnel set-up on a device made with mktun: the client host, the running
    server, the client's command, the server's underlay address and a far address."""
    client, server = _full_tunnel_hosts(lab, 4)
    _c, _rc, _rs, s_addr, far, (c_overlay, s_overlay) = FULL[4]
    target = s_addr.split("/")[0]
    assert simpletun("mktun", "tun0", ns=client).returncode == 0
    srv = Watched(server.popen(simpletun_cmd("-i", "tun0", "-s", "--address", s_overlay,
                                             "--workers", "1"),
                               stderr=subprocess.PIPE, text=True), "server")
    srv.wait_for("listening on")
    args = simpletun_cmd("-i", "tun0", "-c", target, "--address", c_overlay, "--workers", "1",
                         "--route", "default")
    return client, srv, args, target, far


def test_full_tunnel_on_a_persistent_device_cleans_up_and_starts_again(lab: Lab) -> None:
    """On a device made with mktun the routes outlive the process: the tunnel removes the
    ones it added (the halves and the host route) on exit, or all IPv4 would go into a dead
    device, and the next run would fail ("that route exists already")."""
    client, srv, args, target, far = _persistent_full_tunnel(lab)
    for run in (1, 2):
        cli = Watched(client.popen(args, stderr=subprocess.PIPE, text=True), f"client {run}")
        cli.wait_for("connected to", timeout=15)
        assert _host_routes(client) == [f"{target}/32"]
        assert {"0.0.0.0/1", "128.0.0.0/1"} <= {str(n) for n in
                                                link.routes("tun0", netns=client.name)}
        ping = client.ping(far, count=2, interval=0.1)
        assert ping.ok, ping.output + cli.text + srv.text
        assert cli.stop() == 0, cli.text
        assert _host_routes(client) == [], cli.text
        assert not {"0.0.0.0/1", "128.0.0.0/1"} & {str(n) for n in
                                                   link.routes("tun0", netns=client.name)}
        ping = client.ping(target, count=1)  # through the underlay's default route again
        assert ping.ok, ping.output
    srv.stop()


def test_full_tunnel_takes_routes_a_killed_run_left_as_given(lab: Lab) -> None:
    """A run killed with SIGKILL cannot clean up: its routes stay on the persistent device.
    The next run takes those that leave through its device as given (no "that route exists
    already"), and leaves them as it found them."""
    client, srv, args, target, far = _persistent_full_tunnel(lab)
    killed = Watched(client.popen(args, stderr=subprocess.PIPE, text=True), "killed client")
    killed.wait_for("connected to", timeout=15)
    killed.proc.kill()
    killed.proc.wait()
    left = {str(n) for n in link.routes("tun0", netns=client.name)}
    assert {"0.0.0.0/1", "128.0.0.0/1"} <= left
    cli = Watched(client.popen(args, stderr=subprocess.PIPE, text=True), "client")
    cli.wait_for("connected to", timeout=15)
    ping = client.ping(far, count=2, interval=0.1)
    assert ping.ok, ping.output + cli.text + srv.text
    assert cli.stop() == 0, cli.text
    assert {str(n) for n in link.routes("tun0", netns=client.name)} == left
    assert _host_routes(client) == [f"{target}/32"]  # the killed run's, left as found
    srv.stop()
