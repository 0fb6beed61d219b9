"""A ``simpletun -s`` server with several ``simpletun -c`` clients, each in its own
namespace on one switched underlay (:class:`simpletun.lab.wghost.Switch`: a bridge that
floods every frame), every one with a key pair, for the tests of a hub::

    with Lab("sttest") as lab:
        hub = Hub(lab, "udp", clients=3)
        hub.start()                       # the server, then each client up to "session up"
        assert hub.clients[0].ns.ping(hub.clients[2].overlay4).ok
        hub.dump().peers                  # wg show of the server: one peer per client

The server is ``server`` (underlay 192.0.2.1), client N is ``cN`` (192.0.2.N+1). Overlay:
10.9.0.0/24 and fd09::/64, the server .1/::1, client N .N+1/::N+1. On a tun hub the server
gives each client its host addresses (/32, /128) as allowed IPs; a tap hub gives none (the
server switches frames by learned MACs). Each client names the server once (all IPs).
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..device import link
from ..errors import SimpletunError
from ..packets import ethernet, ip, l4
from ..tools import pcap
from .netns import Lab, Namespace
from .testbed import Watched, key_pair, simpletun_cmd, unique_iface
from .wghost import Dump, Switch, WgHost, parse_dump, wg_exe

OVERLAY4 = ipaddress.IPv4Network("10.9.0.0/24")
OVERLAY6 = ipaddress.IPv6Network("fd09::/64")
TRANSPORTS = ("udp", "tcp", "icmp")


@dataclass
class Node:
    """One simpletun process's host: its namespace on the switch, its key pair, its
    interface name and overlay number (1 for the server), and the process once started."""

    host: WgHost
    label: str
    key: str  # the private key's file
    public: str  # base64
    iface: str
    number: int  # its overlay addresses: the number-th of each overlay network
    #: what the server allows from it (host addresses); a host it claims is not its own
    #: (an impostor's) keeps the allowed IPs the server was told
    allowed: str = ""
    procs: list[Watched] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.allowed:
            self.allowed = (f"{OVERLAY4.network_address + self.number}/32,"
                            f"{OVERLAY6.network_address + self.number}/128")

    @property
    def ns(self) -> Namespace:
        return self.host.ns

    @property
    def underlay4(self) -> str:
        return self.host.underlay4

    @property
    def overlay4(self) -> str:
        return str(OVERLAY4.network_address + self.number)

    @property
    def overlay6(self) -> str:
        return str(OVERLAY6.network_address + self.number)

    def overlay(self, family: int) -> str:
        return self.overlay6 if family == 6 else self.overlay4

    @property
    def addresses(self) -> list[str]:
        """--address values: this node's overlay addresses in the overlay networks."""
        return [f"{self.overlay4}/{OVERLAY4.prefixlen}", f"{self.overlay6}/{OVERLAY6.prefixlen}"]

    @property
    def proc(self) -> Watched:
        if not self.procs:
            raise SimpletunError(f"{self.label}: simpletun not started")
        return self.procs[-1]

    def logs(self) -> str:
        return "\n".join(f"--- {self.label} #{i}:\n{w.text}" for i, w in enumerate(self.procs))


class Hub:
    """A server and ``clients`` clients of ``transport`` (udp, tcp, icmp) on a switch; tun
    or, with ``tap``, tap devices. ``close()`` stops every process it started (the
    namespaces go with the Lab)."""

    def __init__(self, lab: Lab, transport: str = "udp", *, clients: int = 3,
                 tap: bool = False) -> None:
        if transport not in TRANSPORTS:
            raise SimpletunError(f"unknown transport {transport!r}: use one of "
                                 f"{', '.join(TRANSPORTS)}")
        self.lab = lab
        self.transport = transport
        self.tap = tap
        self.switch = Switch(lab)
        self.server = self._node("server", 1)
        self.clients = [self._node(f"c{i}", i + 1) for i in range(1, clients + 1)]
        #: the clients the server's command names (--peer), in order
        self.peers: list[Node] = list(self.clients)
        self.others: list[Node] = []  # added later (add_client)

    def _node(self, label: str, number: int) -> Node:
        host = self.switch.join(label, index=number)
        key, public = key_pair(self.lab.directory, label)
        return Node(host, label, key, public, unique_iface("hb"), number)

    def add_client(self, label: str, *, known: bool, claims: int | None = None) -> Node:
        """Another client host on the switch with a key pair of its own, the next underlay
        address and overlay number; ``known``: the server names its key (--peer, with its
        host addresses as allowed IPs), so add it before ``start_server``. ``claims``: the
        overlay number it configures on its device instead of its own (an impostor's)."""
        n = max(c.host.index for c in [*self.clients, *self.others]) + 1
        node = self._node(label, n)
        if claims is not None:
            node.number = claims
        self.others.append(node)
        if known:
            self.peers.append(node)
        return node

    # -- commands ---------------------------------------------------------------------

    def server_command(self, *extra: str) -> list[str]:
        args = ["-i", self.server.iface, "-s", "-t", self.transport, "-k", self.server.key]
        for c in self.peers:
            args += ["-P", c.public if self.tap else f"{c.public}:{c.allowed}"]
        for a in self.server.addresses:
            args += ["--address", a]
        if self.tap:
            args.append("-a")
        return [*args, *extra]

    def client_command(self, node: Node, *extra: str) -> list[str]:
        args = ["-i", node.iface, "-c", self.server.underlay4, "-t", self.transport,
                "-k", node.key, "-P", self.server.public]
        for a in node.addresses:
            args += ["--address", a]
        if self.tap:
            args.append("-a")
        return [*args, *extra]

    # -- processes --------------------------------------------------------------------

    def _start(self, node: Node, args: Sequence[str]) -> Watched:
        proc = node.ns.popen(simpletun_cmd(*args), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        watched = Watched(proc, f"{node.label} ({node.iface})")
        node.procs.append(watched)
        return watched

    def start_server(self, *extra: str, forwarding: bool = True) -> Watched:
        """The server, with IPv4 and IPv6 forwarding on (or left off) in its namespace."""
        value = "1" if forwarding else "0"
        self.server.ns.sysctl("net.ipv4.ip_forward", value)
        self.server.ns.sysctl("net.ipv6.conf.all.forwarding", value)
        proc = self._start(self.server, self.server_command(*extra))
        proc.wait_for("listening on", timeout=15)
        link.wait_usable(self.server.iface, netns=self.server.ns.name)
        return proc

    def start_client(self, node: Node, *extra: str, wait: bool = True) -> Watched:
        """Client ``node``; with ``wait``, until its session is up and its device usable."""
        proc = self._start(node, self.client_command(node, *extra))
        if wait:
            proc.wait_for("session up", timeout=20)
            link.wait_usable(node.iface, netns=node.ns.name)
        return proc

    def start(self, *, forwarding: bool = True) -> None:
        self.start_server(forwarding=forwarding)
        for c in self.clients:
            self.start_client(c, wait=False)
        for c in self.clients:
            c.proc.wait_for("session up", timeout=20)
            link.wait_usable(c.iface, netns=c.ns.name)

    def nodes(self) -> list[Node]:
        return [self.server, *self.clients, *self.others]

    def logs(self) -> str:
        """Every process's output, to show when a test fails."""
        return "\n".join(n.logs() for n in self.nodes() if n.procs)

    def close(self) -> None:
        for node in self.nodes():
            for proc in node.procs:
                proc.stop()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the server's view ------------------------------------------------------------

    def dump(self) -> Dump:
        """``wg show SERVER dump``."""
        done = subprocess.run([wg_exe(), "show", self.server.iface, "dump"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise SimpletunError(f"wg show {self.server.iface} dump failed: "
                                 f"{done.stderr.strip()}")
        return parse_dump(done.stdout)

    def drops(self) -> dict[str, int]:
        """``simpletun wg-drops SERVER``: the server's drop counters by reason."""
        done = subprocess.run(simpletun_cmd("wg-drops", self.server.iface),
                              capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise SimpletunError(f"simpletun wg-drops {self.server.iface} failed: "
                                 f"{done.stderr.strip()}")
        counts: dict[str, int] = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
        return counts


# -- what went on the wire --------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    """One IPv4 packet seen in a capture: protocol (1 ICMP, 6 TCP, 17 UDP), addresses and
    the length of what it carries above its transport header (a TCP segment's data)."""

    proto: int
    src: str
    dst: str
    payload_len: int


def ipv4_packets(records: Sequence[pcap.Record]) -> list[Sent]:
    """The IPv4 packets in Ethernet capture records (anything unreadable is skipped)."""
    out: list[Sent] = []
    for rec in records:
        try:
            frame = ethernet.parse_frame(rec.data)
            if frame.ethertype != 0x0800:
                continue
            body = rec.data[frame.offset:]
            h = ip.parse_ipv4(body)
            seg = body[h.header_len:h.total_len]
            if h.proto == 6:
                payload = len(seg) - l4.parse_tcp(seg).header_len
            elif h.proto == 17:
                payload = len(seg) - 8
            else:
                payload = len(seg)
        except Exception:  # anything odd on the wire is not ours to read
            continue
        out.append(Sent(h.proto, str(ipaddress.IPv4Address(h.src)),
                        str(ipaddress.IPv4Address(h.dst)), payload))
    return out
