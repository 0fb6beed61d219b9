"""``wg-quick up``/``down`` with simpletun-wg as the userspace implementation
(``WG_QUICK_USERSPACE_IMPLEMENTATION=simpletun-wg``; this kernel has no WireGuard module), run
in a namespace with ``ip netns exec`` from a config file, against wireguard-go in another
namespace on the switch: a point-to-point tunnel, then a full tunnel (0.0.0.0/0, ::/0), for
which wg-quick sets a fwmark that our UDP socket must carry (SO_MARK) so the encrypted packets
leave by the underlay instead of looping into the tunnel. ``down`` leaves no interface,
socket, process, rule, route or nft table behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from simpletun.device import link
from simpletun.lab import wghost
from simpletun.lab.netns import Lab, Namespace
from simpletun.lab.wghost import WgHost, WgInterface

from .wgcases import processes_with, transcribed, wait_until

GO = "wireguard-go"
#: .venv/bin: simpletun-wg is on wg-quick's PATH as one executable name
BIN_DIR = os.path.dirname(sys.executable)
PORT = 51830  # ours (ListenPort); the wireguard-go peer listens on 51821
KEEPALIVE = 25
FWMARK = 51820  # wg-quick's first choice (0xca6c), the table of its default route
#: addresses only the peer holds (on its lo), that only the full tunnel reaches
BEYOND4, BEYOND6 = "198.51.100.7", "2001:db8:77::7"
#: the peer's endpoint in the full-tunnel case: off the switch's subnet, behind a default
#: route, where wg-quick's rules send every unmarked packet into the tunnel
FAR_ENDPOINT = "203.0.113.1"


@dataclass
class Setup:
    """``me`` (a bare namespace on the switch, for wg-quick) and ``peer`` (wireguard-go,
    10.77.0.1 and fd77::1, knowing ``me``'s key but not where it is)."""

    me: WgHost
    peer: WgHost
    private_key: str

    @property
    def go(self) -> WgInterface:
        return self.peer.iface


@pytest.fixture
def setup(lab: Lab) -> Iterator[Setup]:
    switch = wghost.Switch(lab)
    peer = switch.join("peer")
    me = switch.join("quick")
    go = WgInterface(peer.ns, GO, listen_port=51821)
    try:
        peer.wg = go
        peer.overlay = ("10.77.0.1/24", "fd77::1/64")
        for cidr in peer.overlay:
            go.address(cidr)
        go.up()
        key = wghost.genkey()
        go.add_peer(wghost.pubkey(key), allowed_ips=["10.77.0.2/32", "fd77::2/128"])
        yield Setup(me, peer, key)
    finally:
        go.stop()


class WgQuick:
    """A config file ``/tmp/wgq<pid>-*/NAME.conf`` (NAME: a fresh interface name) and
    wg-quick run on it inside ``ns``. ``close()`` (in a ``finally``) takes down whatever is
    left: the interface (by ``wg-quick down``), any simpletun-wg still serving it (killed by
    pid), its socket and the file."""

    def __init__(self, ns: Namespace, config: str) -> None:
        self.ns = ns
        self.name = wghost.interface_name()
        self.dir = tempfile.mkdtemp(prefix=f"wgq{os.getpid()}-")
        self.path = os.path.join(self.dir, f"{self.name}.conf")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)
        self.transcript: list[str] = []

    def run(self, verb: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "WG_PROCESS_FOREGROUND"}
        env["WG_QUICK_USERSPACE_IMPLEMENTATION"] = "simpletun-wg"
        env["PATH"] = f"{BIN_DIR}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        done = subprocess.run(["ip", "netns", "exec", self.ns.name, "wg-quick", verb,
                               self.path], env=env, capture_output=True, text=True,
                              timeout=30)
        self.transcript.append(f"$ wg-quick {verb} {self.path}  (exit {done.returncode})\n"
                               f"{done.stdout}{done.stderr}")
        return done

    def up(self) -> str:
        done = self.run("up")
        assert done.returncode == 0, self.transcript[-1]
        return done.stderr

    def down(self) -> str:
        done = self.run("down")
        assert done.returncode == 0, self.transcript[-1]
        return done.stderr

    def wg(self, *args: str) -> str:
        done = self.ns.run([wghost.wg_exe(), *args], timeout=10)
        assert done.returncode == 0, f"wg {' '.join(args)}: {done.stderr}"
        return done.stdout

    def dump(self) -> wghost.Dump:
        return wghost.parse_dump(self.wg("show", self.name, "dump"))

    def exists(self) -> bool:
        return link.exists(self.name, netns=self.ns.name)

    def close(self) -> None:
        if self.exists() or os.path.exists(wghost.socket_path(self.name)):
            self.run("down")
        pids = processes_with(self.name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while (pids := processes_with(self.name)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.exists():  # a process killed before it could delete its device
            self.ns.run(["ip", "link", "delete", "dev", self.name])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(wghost.socket_path(self.name))
        shutil.rmtree(self.dir, ignore_errors=True)


def wg_quick(ns: Namespace, config: str) -> contextlib.AbstractContextManager[WgQuick]:
    return transcribed(WgQuick(ns, config))


def config(s: Setup, allowed_ips: str, endpoint: str) -> str:
    return ("[Interface]\n"
            "Address = 10.77.0.2/24, fd77::2/64\n"
            f"PrivateKey = {s.private_key}\n"
            f"ListenPort = {PORT}\n"
            "\n[Peer]\n"
            f"PublicKey = {s.go.public_key}\n"
            f"AllowedIPs = {allowed_ips}\n"
            f"Endpoint = {endpoint}\n"
            f"PersistentKeepalive = {KEEPALIVE}\n")


def assert_down(q: WgQuick) -> None:
    """The interface, its UAPI socket and its simpletun-wg are gone."""
    assert not q.exists()
    wait_until(f"simpletun-wg for {q.name} exits", lambda: not processes_with(q.name))
    assert not os.path.exists(wghost.socket_path(q.name))
    assert q.name not in q.wg("show", "interfaces").split()


def ping(ns: Namespace, address: str, count: int = 3) -> bool:
    return ns.ping(address, count=count, interval=0.05, deadline=3 if count > 1 else 1).ok


def test_point_to_point(setup: Setup) -> None:
    s = setup
    endpoint = wghost.endpoint_of(s.peer.underlay4, s.go.listen_port or 0)
    with wg_quick(s.me.ns, config(s, "10.77.0.1/32, fd77::1/128", endpoint)) as q:
        said = q.up()
        # our implementation, started by name, daemonized: wg-quick has returned
        assert f"[#] simpletun-wg {q.name}\n" in said, said
        pids = processes_with(q.name)
        assert len(pids) == 1, pids
        with open(f"/proc/{pids[0]}/cmdline", "rb") as f:
            assert b"simpletun-wg" in f.read()
        assert os.path.exists(wghost.socket_path(q.name))
        # what wg reads back is exactly the file, less wg-quick's own Address line
        shown = q.wg("showconf", q.name)
        assert sorted(shown.split("\n")) == sorted(
            line for line in config(s, "10.77.0.1/32, fd77::1/128", endpoint).split("\n")
            if not line.startswith("Address"))
        before = q.dump().peers[0]
        for address in ("10.77.0.1", "fd77::1"):
            assert ping(s.me.ns, address, count=5), address
        dump = q.dump()
        assert dump.interface.listen_port == PORT and dump.interface.fwmark is None
        after = dump.peer(s.go.public_key)
        assert after.endpoint == endpoint
        assert after.allowed_ips == ("10.77.0.1/32", "fd77::1/128")
        assert after.persistent_keepalive == KEEPALIVE
        assert time.time() - 30 < after.latest_handshake <= time.time() + 1
        # five 84-byte and five 104-byte echoes each way, each with 32 bytes of WireGuard
        assert after.tx_bytes - before.tx_bytes >= 5 * (84 + 32) + 5 * (104 + 32), after
        assert after.rx_bytes - before.rx_bytes >= 5 * (84 + 32) + 5 * (104 + 32), after
        # the wireguard-go side learned where we are from the handshake
        assert s.go.show_dump().peers[0].endpoint == f"{s.me.underlay4}:{PORT}"
        text = q.wg("show", q.name)
        print(text)
        for pattern in (rf"listening port: {PORT}\n", rf"peer: {re.escape(s.go.public_key)}\n",
                        rf"endpoint: {re.escape(endpoint)}\n",
                        r"allowed ips: 10\.77\.0\.1/32, fd77::1/128\n",
                        r"latest handshake: (Now|\d+ seconds? ago)\n",
                        r"transfer: [\d.]+ (B|KiB) received, [\d.]+ (B|KiB) sent\n",
                        rf"persistent keepalive: every {KEEPALIVE} seconds"):
            assert re.search(pattern, text), (pattern, text)
        q.down()
        assert_down(q)
        assert not ping(s.me.ns, "10.77.0.1", count=1)
        print("".join(q.transcript))


def routing(ns: Namespace) -> dict[str, str]:
    """The namespace's policy rules, routes (every table) and nft ruleset."""
    cmds = {"ip -4 rule": ["ip", "-4", "rule"], "ip -6 rule": ["ip", "-6", "rule"],
            "ip -4 route": ["ip", "-4", "route", "show", "table", "all"],
            "ip -6 route": ["ip", "-6", "route", "show", "table", "all"],
            "nft": ["nft", "list", "ruleset"]}
    return {name: ns.run(cmd, check=True).stdout for name, cmd in cmds.items()}


def full_tunnel_peer(s: Setup) -> None:
    """The peer's endpoint and the addresses beyond it on its lo, reached through the switch
    by a default route; the addresses beyond only through its tunnel (nft drops the rest)."""
    peer_ns, me_ns = s.peer.ns, s.me.ns
    for cidr in (f"{FAR_ENDPOINT}/32", f"{BEYOND4}/32", f"{BEYOND6}/128"):
        link.add_address("lo", cidr, netns=peer_ns.name, nodad=True)
    peer_ns.run(["nft", "-f", "-"], check=True, input=(
        "table inet beyond {\n chain input {\n  type filter hook input priority 0;\n"
        f'  iifname != "{s.go.name}" ip daddr {BEYOND4} drop\n'
        f'  iifname != "{s.go.name}" ip6 daddr {BEYOND6} drop\n }}\n}}\n'))
    me_ns.run(["ip", "-4", "route", "add", "default", "via", s.peer.underlay4], check=True)
    me_ns.run(["ip", "-6", "route", "add", "default", "via", s.peer.underlay6], check=True)


def test_full_tunnel_sets_a_fwmark_our_socket_carries(setup: Setup) -> None:
    s = setup
    me_ns = s.me.ns
    full_tunnel_peer(s)
    assert ping(me_ns, FAR_ENDPOINT, count=1)
    assert not ping(me_ns, BEYOND4, count=1) and not ping(me_ns, BEYOND6, count=1)
    before = routing(me_ns)
    endpoint = f"{FAR_ENDPOINT}:{s.go.listen_port}"
    with wg_quick(me_ns, config(s, "0.0.0.0/0, ::/0", endpoint)) as q:
        said = q.up()
        assert f"[#] wg set {q.name} fwmark {FWMARK}\n" in said, said
        assert q.wg("show", q.name, "fwmark").strip() == hex(FWMARK)
        assert q.dump().interface.fwmark == FWMARK
        # our UDP socket carries the mark (ss shows it for the socket of our process)
        sockets = me_ns.run(["ss", "-uapne"], check=True).stdout
        ours = [line for line in sockets.splitlines()
                if f":{PORT} " in line and "simpletun-wg" in line]
        assert ours and all(f"fwmark:{hex(FWMARK)}" in line for line in ours), sockets
        assert routing(me_ns) != before
        # through the tunnel, to addresses only the tunnel reaches
        for address in (BEYOND4, BEYOND6):
            assert ping(me_ns, address), address
        # and the handshake went by the underlay: unmarked, it would have looped into the
        # tunnel (the endpoint is behind the default route the rules suppress)
        seen = q.dump().peers[0]
        assert seen.latest_handshake > 0 and seen.endpoint == endpoint
        assert seen.tx_bytes >= 6 * (84 + 32) and seen.rx_bytes >= 6 * (84 + 32), seen
        assert s.go.show_dump().peers[0].endpoint == f"{s.me.underlay4}:{PORT}"
        print(q.wg("show", q.name))
        q.down()
        assert_down(q)
        assert routing(me_ns) == before
        assert not ping(me_ns, BEYOND4, count=1)
        assert ping(me_ns, FAR_ENDPOINT, count=1)
        print("".join(q.transcript))
