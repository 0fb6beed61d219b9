"""Many peers against one server: the load driver behind ``simpletun load``.

One ``simpletun-wg`` server runs in a namespace; ``wg setconf`` gives it M peers in one
request (timed). In a second namespace this process holds N of those peers as sans-IO
initiators: each a :class:`~simpletun.wireguard.core.WireGuard` of its own, with its own
key and ONE UDP socket on its own port, all driven by one epoll loop with the time passed
in. Each initiator seals one ICMP echo request (ping-sized, from its tunnel address to
the server's), which, with no session yet, is staged and starts the handshake exactly as
a packet from a device would; when the response arrives the staged echo goes out on the
new session (confirming it), the server's kernel answers it through the tunnel, and the
driver opens the reply and checks it is the echo reply for that peer.

Reported: the ``wg setconf`` time, handshakes per second, the time until the last peer
is through (first initiation to the last verified echo reply), failures by reason, the
server's RSS (``VmRSS`` of the ``simpletun-wg`` process) before configuring, after
configuring and after all sessions, RSS per configured peer, and the time of one
allowed-IPs lookup (``AllowedIPs.lookup_v4``) with 1 and with M peers, in this process.

**Pacing, and what is honest.** The server treats more than ``core.LOAD_THRESHOLD`` (2048)
handshake messages in one second as load: an initiation without a valid mac2 then gets a
cookie reply instead of a Diffie-Hellman. A real WireGuard initiator (wireguard-go, the
Linux module, and our core) takes the cookie and sends nothing more until its
retransmission timer (REKEY_TIMEOUT, 5 s plus jitter) fires; the retry, carrying mac2, is
admitted only at a per-source-host rate. The driver's initiators are unmodified cores, so
they behave exactly so: nothing here shortcuts a cookie. What the driver chooses is when
each peer *starts*: ``rate`` initiations per second (default :data:`DEFAULT_RATE`, just
under the server's load threshold, as a fleet of peers that does not all boot in the
same millisecond), or all at once with ``rate=0`` (a storm: every peer
past the threshold gets a cookie and comes through on its 5 s retry, which the report
shows as cookie replies and retransmissions). Both are real behaviour; the report says
which was used.

A lost echo request or reply is sent again once a second (as ping does), counted; a peer
that is not through at the deadline is a failure by the reason it got stuck at.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import ipaddress
import os
import random
import resource
import select
import signal
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from types import FrameType

from ..control import uapi_client
from ..errors import SimpletunError
from ..packets import icmp, ip
from ..signals import STOP_SIGNALS
from ..wireguard import keys
from ..wireguard.allowedips import AllowedIPs
from ..wireguard.core import LOAD_THRESHOLD, LOAD_WINDOW, WireGuard
from ..wireguard.messages import COOKIE_REPLY, INITIATION
from ..wireguard.peer import Peer
from .netns import Lab, Namespace, inside, veth
from .wghost import WgInterface, wg_exe

DEFAULT_PEERS = 1000
MAX_PEERS = 20000  # one UDP socket (one fd, one port) each
MAX_SETCONF_PEERS = 200000
#: initiations per second by default: under the server's load threshold (see above)
DEFAULT_RATE = int(LOAD_THRESHOLD / LOAD_WINDOW * 0.95)
DEFAULT_TIMEOUT = 60.0
ECHO_RESEND = 1.0  # seconds: an echo without its reply is sent again (as ping does)
PING_PAYLOAD = 56  # ping's default: 56 bytes of data, an 84-byte IPv4 packet

#: the tunnel: the server is .1, configured peer i (0-based) is the (i + 2)-th address
TUNNEL = ipaddress.IPv4Network("10.64.0.0/10")
SERVER_TUNNEL = TUNNEL.network_address + 1
UNDERLAY_SERVER = "198.18.0.1"
UNDERLAY_DRIVER = "198.18.0.2"
UNDERLAY_PREFIX = 24
SERVER_PORT = 51820

# why a peer did not get through (failures by reason)
NO_RESPONSE = "no-handshake-response"
NO_REPLY = "no-echo-reply"
BAD_REPLY = "wrong-echo-reply"


class LoadError(SimpletunError):
    """The load run cannot start (not root, no tun device, a count out of range)."""


# --- pure parts -------------------------------------------------------------------------

def tunnel_address(index: int) -> ipaddress.IPv4Address:
    """The tunnel address of configured peer ``index`` (0-based)."""
    address = TUNNEL.network_address + 2 + index
    if address not in TUNNEL or address == TUNNEL.broadcast_address:
        raise LoadError(f"peer {index} does not fit in {TUNNEL}")
    return address


def payload_for(index: int) -> bytes:
    """The echo data of peer ``index``: its number, then a fixed pattern (56 bytes)."""
    head = b"simpletun load %08d " % index
    return (head + bytes(range(PING_PAYLOAD)))[:PING_PAYLOAD]


def echo_request(index: int, seq: int = 1) -> bytes:
    """The IPv4 ICMP echo request peer ``index`` sends to the server's tunnel address: ping
    sized (84 bytes), identifier ``index & 0xffff``, data :func:`payload_for`."""
    body = struct.pack("!HH", index & 0xFFFF, seq) + payload_for(index)
    message = icmp.build_icmp4(icmp.ECHO_REQUEST, 0, body)
    return ip.build_ipv4(tunnel_address(index).packed, SERVER_TUNNEL.packed, ip.PROTO_ICMP,
                         message, ident=index & 0xFFFF)


def check_echo_reply(packet: bytes | bytearray | memoryview, index: int) -> str | None:
    """None if ``packet`` is the server's echo reply to peer ``index``'s request (any
    sequence number); otherwise what is wrong with it, one line."""
    try:
        header = ip.parse_ipv4(bytes(packet))
    except ValueError as exc:
        return f"not an IPv4 packet ({exc})"
    if header.src != SERVER_TUNNEL.packed or header.dst != tunnel_address(index).packed:
        return (f"from {ipaddress.IPv4Address(header.src)} to "
                f"{ipaddress.IPv4Address(header.dst)}, not {SERVER_TUNNEL} to "
                f"{tunnel_address(index)}")
    if header.proto != ip.PROTO_ICMP:
        return f"protocol {header.proto}, not ICMP"
    body = bytes(packet[header.header_len:header.total_len])
    from ..packets.checksum import checksum

    if checksum(body) != 0:
        return "bad ICMP checksum"
    try:
        message = icmp.parse_icmp(body)
    except ValueError as exc:
        return f"bad ICMP ({exc})"
    if message.type != icmp.ECHO_REPLY:
        return f"ICMP type {message.type}, not an echo reply"
    if message.ident != index & 0xFFFF:
        return f"echo identifier {message.ident}, not {index & 0xFFFF}"
    if message.body[4:] != payload_for(index):
        return "echo data is not what was sent"
    return None


def setconf_text(private_key: bytes, listen_port: int, publics: Sequence[bytes]) -> str:
    """A ``wg setconf`` file: the interface, then one peer per public key, peer i allowed
    its tunnel address (:func:`tunnel_address`) as a /32."""
    out = ["[Interface]", f"PrivateKey = {keys.to_base64(private_key)}",
           f"ListenPort = {listen_port}", ""]
    for i, public in enumerate(publics):
        out += ["[Peer]", f"PublicKey = {keys.to_base64(public)}",
                f"AllowedIPs = {tunnel_address(i)}/32", ""]
    return "\n".join(out)


def check_counts(peers: int, setconf_peers: int | None, rate: float) -> int:
    """The number of configured peers (``setconf_peers`` or ``peers``); LoadError when a
    count is out of range."""
    if not 1 <= peers <= MAX_PEERS:
        raise LoadError(f"--peers {peers}: give 1 to {MAX_PEERS} (one UDP socket each)")
    configured = peers if setconf_peers is None else setconf_peers
    if not peers <= configured <= MAX_SETCONF_PEERS:
        raise LoadError(f"--setconf-peers {configured}: give {peers} (--peers) to "
                        f"{MAX_SETCONF_PEERS}")
    if rate < 0:
        raise LoadError(f"--rate {rate:g}: give initiations per second, or 0 for all at once")
    return configured


def lookup_seconds(table: AllowedIPs[int], packet: bytes, rounds: int = 200000) -> float:
    """Seconds per ``lookup_v4`` of ``packet``'s destination in ``table`` (best of 3)."""
    best = float("inf")
    lookup = table.lookup_v4
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(rounds):
            lookup(packet, 16)
        best = min(best, (time.perf_counter() - t0) / rounds)
    return best


def routing_tables(count: int) -> tuple[AllowedIPs[int], AllowedIPs[int], bytes, bytes]:
    """A table of 1 peer and one of ``count`` peers (each a /32 from
    :func:`tunnel_address`, valued by its index), and packets from the server to the first
    and to the last peer."""
    small: AllowedIPs[int] = AllowedIPs()
    small.insert(ipaddress.IPv4Network(f"{tunnel_address(0)}/32"), 0)
    large: AllowedIPs[int] = AllowedIPs()
    for i in range(count):
        large.insert(ipaddress.IPv4Network(f"{tunnel_address(i)}/32"), i)
    first = ip.build_ipv4(SERVER_TUNNEL.packed, tunnel_address(0).packed, ip.PROTO_ICMP, b"")
    last = ip.build_ipv4(SERVER_TUNNEL.packed, tunnel_address(count - 1).packed,
                         ip.PROTO_ICMP, b"")
    return small, large, first, last


def routing_figures(count: int) -> tuple[float, float]:
    """(seconds per lookup with 1 peer, with ``count`` peers): the packet to the last peer
    (any would do: a lookup is one hash probe per prefix length in use)."""
    small, large, first, last = routing_tables(count)
    return lookup_seconds(small, first), lookup_seconds(large, last)


# --- the report -------------------------------------------------------------------------

@dataclass
class Report:
    peers: int
    setconf_peers: int
    rate: float  # initiations per second asked for; 0: all at once
    setconf_seconds: float = 0.0
    through: int = 0  # peers whose echo reply came back and checked
    handshakes: int = 0
    handshake_seconds: float = 0.0  # first initiation to the last handshake done
    handshakes_per_second: float = 0.0
    through_seconds: float = 0.0  # first initiation to the last verified echo reply
    initiations_sent: int = 0
    cookie_replies: int = 0
    echo_resends: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    server_handshakes: int = 0  # peers with a handshake in the server's `wg show dump`
    rss_before_kb: int = 0
    rss_configured_kb: int = 0
    rss_sessions_kb: int = 0
    rss_per_peer_bytes: float = 0.0  # (after sessions - before) / configured peers
    rss_per_configured_peer_bytes: float = 0.0  # (after configuring - before) / configured
    lookup_ns_1: float = 0.0
    lookup_ns_n: float = 0.0
    server_drops: dict[str, int] = field(default_factory=dict)
    wrong_replies: dict[str, int] = field(default_factory=dict)  # what was wrong, how often
    interface: str = ""  # the server's interface (its UAPI socket is gone after the run)

    @property
    def ok(self) -> bool:
        return self.through == self.peers and not self.failures

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}

    def lines(self) -> list[str]:
        rate = f"{self.rate:g}/s" if self.rate else "all at once"
        failures = ", ".join(f"{n} {why}" for why, n in sorted(self.failures.items()))
        return [
            f"peers: {self.peers} driven, {self.setconf_peers} configured; "
            f"initiations started {rate}",
            f"wg setconf of {self.setconf_peers} peers: {self.setconf_seconds:.2f} s",
            f"handshakes: {self.handshakes} in {self.handshake_seconds:.2f} s "
            f"({self.handshakes_per_second:.0f}/s); {self.initiations_sent} initiations "
            f"sent, {self.cookie_replies} cookie replies",
            f"through (echo reply checked): {self.through}/{self.peers}, the last "
            f"{self.through_seconds:.2f} s after the first initiation; "
            f"{self.echo_resends} echoes sent again",
            f"failures: {failures or 'none'}",
            f"server RSS: {self.rss_before_kb} KiB before, {self.rss_configured_kb} KiB "
            f"configured, {self.rss_sessions_kb} KiB with sessions; per configured peer "
            f"{self.rss_per_configured_peer_bytes / 1024:.1f} KiB configured, "
            f"{self.rss_per_peer_bytes / 1024:.1f} KiB with sessions",
            "server drops: " + (", ".join(f"{n} {why}" for why, n in
                                          sorted(self.server_drops.items())) or "none"),
            f"allowed-IPs lookup: {self.lookup_ns_1:.0f} ns with 1 peer, "
            f"{self.lookup_ns_n:.0f} ns with {self.setconf_peers}",
        ]


# --- the initiators ---------------------------------------------------------------------

class Initiator:
    """One simulated peer: its own core, key and UDP socket."""

    __slots__ = ("core", "echo_due", "failure", "handshake_at", "index", "peer", "request",
                 "sock", "through_at")

    def __init__(self, index: int, private: bytes, server_public: bytes,
                 server: tuple[str, int], sock: socket.socket, wall_offset: float) -> None:
        self.index = index
        self.core = WireGuard(wall_offset=wall_offset, rng=random.Random(index))
        self.core.set_private_key(private)
        self.peer: Peer = self.core.add_peer(server_public)
        self.peer.endpoint = server
        self.core.add_allowed(self.peer, ipaddress.IPv4Network("0.0.0.0/0"))
        self.sock = sock
        self.request = echo_request(index)
        self.handshake_at: float | None = None
        self.through_at: float | None = None
        self.echo_due: float | None = None
        self.failure: str | None = None

    def send_echo(self, now: float) -> None:
        """Seal the echo request (with no session: staged, and a handshake starts)."""
        size = len(self.request)
        slot = bytearray(16 + size + 32)
        slot[16:16 + size] = self.request
        n = self.core.seal(self.peer, memoryview(slot), size, now)
        if n:
            self.core.outbox.append((slot[:n], self.peer.endpoint))  # type: ignore[arg-type]

    def flush(self) -> int:
        """Send what the core put in its outbox; returns how many initiations went."""
        initiations = 0
        for message, address in self.core.outbox:
            if message[0] == INITIATION:
                initiations += 1
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                self.sock.sendto(message, address)
        self.core.outbox.clear()
        return initiations


@dataclass
class DriveResult:
    initiators: list[Initiator]
    started: float
    initiations: int = 0
    cookies: int = 0
    resends: int = 0
    wrong: Counter[str] = field(default_factory=Counter)


def drive(initiators: list[Initiator], *, rate: float, timeout: float,
          clock: Callable[[], float] = time.monotonic) -> DriveResult:
    """Start every initiator (``rate`` per second; 0: all at once) and run the epoll loop
    until each is through or ``timeout`` seconds passed."""
    ep = select.epoll(len(initiators) + 1)
    by_fd = {}
    for init in initiators:
        by_fd[init.sock.fileno()] = init
        ep.register(init.sock.fileno(), select.EPOLLIN)
    buf = bytearray(65536)
    view = memoryview(buf)
    plain = memoryview(bytearray(65536))
    heap: list[tuple[float, int, Initiator]] = []
    seq = 0
    started = clock()
    result = DriveResult(initiators, started)
    deadline = started + timeout
    waiting = len(initiators)
    launched = 0

    def schedule(init: Initiator) -> None:
        nonlocal seq
        at = init.core.next_timer
        if init.echo_due is not None and (at is None or init.echo_due < at):
            at = init.echo_due
        if at is not None:
            seq += 1
            heapq.heappush(heap, (at, seq, init))

    try:
        while waiting:
            now = clock()
            if now >= deadline:
                break
            while launched < len(initiators) and (
                    not rate or launched <= (now - started) * rate):
                init = initiators[launched]
                launched += 1
                init.send_echo(now)
                result.initiations += init.flush()
                schedule(init)
            while heap and heap[0][0] <= now:
                _at, _, init = heapq.heappop(heap)
                if init.through_at is not None:
                    continue
                init.core.tick(now)
                if init.echo_due is not None and init.echo_due <= now:
                    init.echo_due = now + ECHO_RESEND
                    result.resends += 1
                    init.send_echo(now)
                result.initiations += init.flush()
                schedule(init)
            wake = deadline
            if launched < len(initiators):
                wake = min(wake, started + launched / rate if rate else now)
            if heap:
                wake = min(wake, heap[0][0])
            for fd, _events in ep.poll(max(0.0, wake - clock())):
                init = by_fd[fd]
                while True:
                    try:
                        n, source = init.sock.recvfrom_into(buf)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # an ICMP error queued on the socket: nothing to read
                    now = clock()
                    if n and buf[0] == COOKIE_REPLY:
                        result.cookies += 1
                    size = init.core.open(view[:n], source, now, plain)
                    if init.handshake_at is None and init.peer.last_handshake is not None:
                        init.handshake_at = now
                        init.echo_due = now + ECHO_RESEND
                    if size and init.through_at is None:
                        wrong = check_echo_reply(plain[:size], init.index)
                        if wrong is None:
                            init.through_at = now
                            init.echo_due = None
                            waiting -= 1
                        else:
                            result.wrong[wrong] += 1
                            init.failure = BAD_REPLY
                    result.initiations += init.flush()
                    init.core.events.clear()
                schedule(init)
    finally:
        ep.close()
    for init in initiators:
        if init.through_at is None and init.failure is None:
            init.failure = NO_RESPONSE if init.handshake_at is None else NO_REPLY
    return result


# --- sockets in the driver's namespace --------------------------------------------------

def raise_fd_limit(needed: int) -> None:
    """Make sure this process may open ``needed`` more files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (max(want, soft), max(want, hard) if hard != -1 else hard))
    except (ValueError, OSError):
        raise LoadError(f"cannot open {needed} UDP sockets: the open-file limit is {hard} "
                        f"(raise it: ulimit -n {want})") from None


def open_sockets(ns: Namespace, count: int) -> list[socket.socket]:
    """``count`` non-blocking UDP sockets in ``ns``, each on its own port."""
    socks: list[socket.socket] = []
    try:
        with inside(ns.name):
            for _ in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.setblocking(False)
                s.bind((UNDERLAY_DRIVER, 0))
    except OSError as exc:
        for s in socks:
            s.close()
        if exc.errno == errno.EADDRINUSE:
            raise LoadError(f"ran out of UDP ports after {len(socks)} sockets") from None
        raise
    return socks


# --- the server -------------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    """VmRSS of process ``pid`` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def preflight() -> None:
    if os.geteuid() != 0:
        raise LoadError("simpletun load needs root (it makes network namespaces and a tun "
                        "device): run it with sudo")
    if not os.path.exists("/dev/net/tun"):
        raise LoadError("/dev/net/tun is missing: load the tun module (modprobe tun)")
    wg_exe()


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and friends end the run the way Ctrl-C does (everything torn down). Only in
    this process: a child forked meanwhile (pyroute2's netns helpers, a subprocess before
    its exec) that gets one dies of it as it would have, instead of unwinding our stack
    and tearing the run down from under us."""
    owner = os.getpid()

    def stop(signo: int, _frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signo, signal.SIG_DFL)
            os.kill(os.getpid(), signo)
            return
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in STOP_SIGNALS if s != signal.SIGINT}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run(*, peers: int = DEFAULT_PEERS, setconf_peers: int | None = None,
        rate: float = DEFAULT_RATE, timeout: float = DEFAULT_TIMEOUT, prefix: str = "stload",
        progress: Callable[[str], None] | None = None) -> Report:
    """Stand up the server and ``peers`` initiators, run, tear everything down, report."""
    configured = check_counts(peers, setconf_peers, rate)
    preflight()
    raise_fd_limit(peers)
    say = progress or (lambda _m: None)
    report = Report(peers=peers, setconf_peers=configured, rate=rate)
    say(f"making {configured} keys")
    privates = [keys.generate_private() for _ in range(peers)]
    publics = [keys.public_from_private(k) for k in privates]
    publics += [keys.public_from_private(keys.generate_private())
                for _ in range(configured - peers)]
    with _signals_interrupt(), Lab(prefix) as lab:
        server_ns, driver_ns = lab.host("server"), lab.host("driver")
        veth(server_ns, "eth0", driver_ns, "eth0",
             a_addrs=[f"{UNDERLAY_SERVER}/{UNDERLAY_PREFIX}"],
             b_addrs=[f"{UNDERLAY_DRIVER}/{UNDERLAY_PREFIX}"])
        say("starting simpletun-wg")
        with WgInterface(server_ns, "simpletun-wg", env={"WG_PROCESS_FOREGROUND": "1"}) as wg:
            report.interface = wg.name
            wg.address(f"{SERVER_TUNNEL}/{TUNNEL.prefixlen}")
            wg.up()
            assert wg.proc is not None
            pid = wg.proc.pid
            server_private = keys.from_base64(wg.private_key)
            server_public = keys.from_base64(wg.public_key)
            text = setconf_text(server_private, SERVER_PORT, publics)
            time.sleep(0.2)  # let the fresh process settle before the first RSS figure
            report.rss_before_kb = rss_kb(pid)
            say(f"wg setconf with {configured} peers")
            t0 = time.monotonic()
            done = server_ns.run([wg_exe(), "setconf", wg.name, "/dev/stdin"], input=text,
                                 timeout=max(60.0, configured / 100))
            report.setconf_seconds = time.monotonic() - t0
            if done.returncode != 0:
                raise LoadError(f"wg setconf failed: {done.stderr.strip()}; simpletun-wg "
                                f"said: {wg.log().strip()[-500:]}")
            report.rss_configured_kb = rss_kb(pid)
            say(f"{peers} initiators")
            socks = open_sockets(driver_ns, peers)
            try:
                wall = time.time() - time.monotonic()
                initiators = [Initiator(i, privates[i], server_public,
                                        (UNDERLAY_SERVER, SERVER_PORT), socks[i], wall)
                              for i in range(peers)]
                say("running")
                result = drive(initiators, rate=rate, timeout=timeout)
            finally:
                for s in socks:
                    s.close()
            report.rss_sessions_kb = rss_kb(pid)
            grown = report.rss_sessions_kb - report.rss_before_kb
            report.rss_per_peer_bytes = grown * 1024 / configured
            report.rss_per_configured_peer_bytes = (
                (report.rss_configured_kb - report.rss_before_kb) * 1024 / configured)
            _fill(report, result)
            with contextlib.suppress(SimpletunError, subprocess.TimeoutExpired):
                dump = wg.show_dump()
                report.server_handshakes = sum(1 for p in dump.peers if p.latest_handshake)
            report.server_drops = _server_drops(wg)
    say("routing lookups")
    one, many = routing_figures(configured)
    report.lookup_ns_1, report.lookup_ns_n = one * 1e9, many * 1e9
    return report


def _server_drops(wg: WgInterface) -> dict[str, int]:
    """The server's drop counters by reason, what ``simpletun wg-drops`` prints (empty if
    it cannot be asked)."""
    with contextlib.suppress(OSError, ValueError, SimpletunError):
        return {k: v for k, v in uapi_client.stats(wg.name).items() if v}
    return {}


def _fill(report: Report, result: DriveResult) -> None:
    inits = result.initiators
    report.initiations_sent = result.initiations
    report.cookie_replies = result.cookies
    report.echo_resends = result.resends
    report.wrong_replies = dict(result.wrong)
    shaken = [i.handshake_at for i in inits if i.handshake_at is not None]
    through = [i.through_at for i in inits if i.through_at is not None]
    report.handshakes = len(shaken)
    report.through = len(through)
    if shaken:
        report.handshake_seconds = max(shaken) - result.started
        report.handshakes_per_second = len(shaken) / max(report.handshake_seconds, 1e-9)
    if through:
        report.through_seconds = max(through) - result.started
    report.failures = dict(Counter(i.failure for i in inits if i.failure is not None
                                   and i.through_at is None))
