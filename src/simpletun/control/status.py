"""What a running tunnel says about itself on its control socket, as data.

Two answers are read and merged into one :class:`TunnelStatus` per tunnel (with a
:class:`PeerStatus` per peer): ``get=1``, wg's fields (:func:`parse_get`: keys, listen port,
fwmark, per peer endpoint, allowed IPs, latest handshake, bytes, persistent keepalive), and
``stats=1``, simpletun's extension (:class:`Stats`, written by :func:`format_stats` in the
tunnel and read back by :func:`parse_stats`): the transport, the wire, the role, counters
and drops by reason, and per peer the packets each way (and for a plaintext tunnel, whose
``get=1`` has no peers, the peer's endpoint and bytes too).

The ``stats=1`` answer, ``key=value`` lines then ``errno=0`` and a blank line::

    transport=udp              tcp, udp or icmp
    wire=wireguard             wireguard, native, classic; none: no connection now
    role=server                server, client; peer: simpletun-wg (wg decides)
    counter.cookies-sent=0     other counters
    drop.bad-tag=3             drops by reason
    peer=<64 hex digits>       a peer of an encrypted tunnel, then its lines; a plaintext
    peer=plaintext             tunnel's connected peer
    endpoint=192.0.2.1:40000   (plaintext) the peer's address
    connected_sec=1700000000   (plaintext) when its connection came, UNIX time
    rx_bytes=1  tx_bytes=1     (plaintext) bytes each way
    rx_packets=1               packets received from the peer (authenticated ones)
    tx_packets=1               packets sent to it

Nothing here touches a socket but the thin client at the end (:func:`read`,
:func:`running`). Everything parsed comes from another process: a bad line is skipped,
never an exception, so one odd tunnel cannot break ``show`` for the others.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

from ..errors import ControlSocketError
from ..wireguard import keys
from . import uapi

#: where encrypted tunnels serve the UAPI (one directory for every network namespace)
WG_DIRECTORY = "/var/run/wireguard"
#: where plaintext tunnels serve their read-only control socket
PLAIN_DIRECTORY = "/run/simpletun"
DIRECTORIES = (WG_DIRECTORY, PLAIN_DIRECTORY)
PLAINTEXT = "plaintext"  # the peer id of a plaintext tunnel's peer
#: the wires of a plaintext tunnel (``none``: no connection now); any other is encrypted
PLAIN_WIRES = ("native", "classic", "none")
_MAX_ANSWER = 64 << 20


@dataclass
class PeerStats:
    """One peer's lines in ``stats=1``."""

    peer: str  # 64 hex digits, or PLAINTEXT
    rx_packets: int = 0
    tx_packets: int = 0
    # a plaintext peer only (an encrypted one has these in get=1)
    endpoint: str | None = None
    connected_sec: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class Stats:
    """The ``stats=1`` answer."""

    transport: str = ""
    wire: str = ""
    role: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    peers: list[PeerStats] = field(default_factory=list)


def _safe(value: str) -> str:
    """A value that cannot break the line format (no newline, no '=' in keys)."""
    return value.replace("\n", " ").replace("\r", " ")


def format_stats(stats: Stats) -> str:
    """The whole ``stats=1`` answer, ending with ``errno=0`` and the blank line."""
    out: list[str] = []
    for key in ("transport", "wire", "role"):
        value = getattr(stats, key)
        if value:
            out.append(f"{key}={_safe(value)}")
    out.extend(f"counter.{_safe(k)}={v}" for k, v in sorted(stats.counters.items()))
    out.extend(f"drop.{_safe(k)}={v}" for k, v in sorted(stats.drops.items()))
    for p in stats.peers:
        out.append(f"peer={p.peer}")
        if p.endpoint is not None:
            out.append(f"endpoint={_safe(p.endpoint)}")
        if p.peer == PLAINTEXT:
            out.append(f"connected_sec={p.connected_sec}")
            out.append(f"rx_bytes={p.rx_bytes}")
            out.append(f"tx_bytes={p.tx_bytes}")
        out.append(f"rx_packets={p.rx_packets}")
        out.append(f"tx_packets={p.tx_packets}")
    out.append("errno=0")
    return "\n".join(out) + "\n\n"


def answer_pairs(text: str) -> tuple[list[tuple[str, str]], int | None]:
    """The ``key=value`` lines of an answer before its ``errno`` line, and that errno
    (None: the answer has none, e.g. cut short)."""
    pairs: list[tuple[str, str]] = []
    for line in text.split("\n"):
        key, sep, value = line.rstrip("\r").partition("=")
        if not sep:
            continue
        if key == "errno":
            try:
                return pairs, int(value)
            except ValueError:
                return pairs, None
        pairs.append((key, value))
    return pairs, None


def _int(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else None


def parse_stats(text: str) -> Stats:
    """A ``stats=1`` answer as :class:`Stats`; lines it does not know, or with bad values,
    are skipped (a newer tunnel may say more)."""
    stats = Stats()
    pairs, _errno = answer_pairs(text)
    peer: PeerStats | None = None
    for key, value in pairs:
        number = _int(value)
        if key == "peer":
            peer = PeerStats(value)
            stats.peers.append(peer)
        elif peer is None:
            if key in ("transport", "wire", "role"):
                setattr(stats, key, value)
            elif key.startswith("drop.") and number is not None:
                stats.drops[key[5:]] = number
            elif key.startswith("counter.") and number is not None:
                stats.counters[key[8:]] = number
        elif key == "endpoint":
            peer.endpoint = value
        elif key in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "connected_sec") \
                and number is not None:
            setattr(peer, key, number)
    return stats


def parse_get(text: str) -> uapi.DeviceStatus:
    """A ``get=1`` answer as :class:`uapi.DeviceStatus` (the inverse of
    :func:`uapi.format_get`); bad lines are skipped."""
    device = uapi.DeviceStatus(private_key=None, listen_port=0, fwmark=0, peers=[])
    pairs, _errno = answer_pairs(text)
    peer: uapi.PeerStatus | None = None
    for key, value in pairs:
        number = _int(value)
        if key == "public_key":
            try:
                public = bytes.fromhex(value)
            except ValueError:
                peer = None
                continue
            if len(public) != keys.KEY_LEN:
                peer = None
                continue
            peer = uapi.PeerStatus(public_key=public, preshared_key=None, endpoint=None,
                                   persistent_keepalive=0, allowed_ips=[],
                                   last_handshake_ns=0, rx_bytes=0, tx_bytes=0)
            device.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                with contextlib.suppress(ValueError):
                    private = bytes.fromhex(value)
                    if len(private) == keys.KEY_LEN:
                        device.private_key = private
            elif key == "listen_port" and number is not None:
                device.listen_port = number
            elif key == "fwmark" and number is not None:
                device.fwmark = number
        else:
            _peer_get(peer, key, value, number)
    return device


def _peer_get(peer: uapi.PeerStatus, key: str, value: str, number: int | None) -> None:
    if key == "preshared_key":
        with contextlib.suppress(ValueError):
            psk = bytes.fromhex(value)
            peer.preshared_key = psk if len(psk) == keys.KEY_LEN and any(psk) else None
    elif key == "endpoint":
        with contextlib.suppress(uapi.UapiError):
            peer.endpoint = uapi.parse_endpoint(value)
    elif key == "allowed_ip":
        with contextlib.suppress(uapi.UapiError):
            peer.allowed_ips.append(uapi.parse_allowed_ip(value))
    elif number is None:
        return
    elif key == "last_handshake_time_sec":
        peer.last_handshake_ns = number * 1_000_000_000 + peer.last_handshake_ns % 1_000_000_000
    elif key == "last_handshake_time_nsec":
        peer.last_handshake_ns = (peer.last_handshake_ns // 1_000_000_000) * 1_000_000_000 \
            + number % 1_000_000_000
    elif key == "rx_bytes":
        peer.rx_bytes = number
    elif key == "tx_bytes":
        peer.tx_bytes = number
    elif key == "persistent_keepalive_interval":
        peer.persistent_keepalive = number


# ---------------------------------------------------------------------------------------
# the merged view


@dataclass
class PeerStatus:
    """One peer of a running tunnel. ``public_key`` None: a plaintext tunnel's peer."""

    public_key: bytes | None
    endpoint: str | None = None  # "192.0.2.1:51820", "[fd00::1]:51820"
    allowed_ips: list[str] = field(default_factory=list)
    latest_handshake: float = 0.0  # UNIX time (plaintext: when it connected); 0: never
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    persistent_keepalive: int = 0  # seconds; 0: off
    preshared_key: bool = False  # one is set (never its value)


@dataclass
class TunnelStatus:
    """One running tunnel: what its ``get=1`` and ``stats=1`` said."""

    name: str
    encrypted: bool
    public_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    transport: str = ""  # "": it did not say (wireguard-go has no stats=1)
    wire: str = ""
    role: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    peers: list[PeerStatus] = field(default_factory=list)


def merge(name: str, get: uapi.DeviceStatus, stats: Stats | None, *,
          encrypted: bool) -> TunnelStatus:
    """One tunnel's view from its two answers (``stats`` None: it has no stats=1)."""
    public = None
    if get.private_key is not None and not keys.is_zero(get.private_key):
        public = keys.public_from_private(get.private_key)
    stats = stats or Stats()
    tunnel = TunnelStatus(name=name, encrypted=encrypted, public_key=public,
                          listen_port=get.listen_port, fwmark=get.fwmark,
                          transport=stats.transport, wire=stats.wire, role=stats.role,
                          counters=dict(stats.counters), drops=dict(stats.drops))
    by_key = {p.peer: p for p in stats.peers}
    for p in get.peers:
        counts = by_key.get(p.public_key.hex())
        tunnel.peers.append(PeerStatus(
            public_key=p.public_key,
            endpoint=uapi.format_endpoint(p.endpoint) if p.endpoint is not None else None,
            allowed_ips=[str(n) for n in p.allowed_ips],
            latest_handshake=p.last_handshake_ns / 1e9,
            rx_bytes=p.rx_bytes, tx_bytes=p.tx_bytes,
            rx_packets=counts.rx_packets if counts else 0,
            tx_packets=counts.tx_packets if counts else 0,
            persistent_keepalive=p.persistent_keepalive,
            preshared_key=p.preshared_key is not None))
    for s in stats.peers:
        if s.peer == PLAINTEXT:
            tunnel.peers.append(PeerStatus(
                public_key=None, endpoint=s.endpoint, latest_handshake=float(s.connected_sec),
                rx_bytes=s.rx_bytes, tx_bytes=s.tx_bytes, rx_packets=s.rx_packets,
                tx_packets=s.tx_packets))
    return tunnel


# ---------------------------------------------------------------------------------------
# the thin client


def socket_path(name: str, directory: str) -> str:
    return os.path.join(directory, f"{name}.sock")


def exchange(path: str, request: str, *, timeout: float = 5.0) -> str:
    """Send ``request`` on the unix socket ``path`` and return the answer (up to its blank
    line). ControlSocketError if nobody answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        data = bytearray()
        try:
            sock.connect(path)
            sock.sendall(request.encode())
            while not data.endswith(b"\n\n") and len(data) < _MAX_ANSWER:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlSocketError(
                f"nothing answers at {path} ({exc.strerror or exc})") from None
    return data.decode("utf-8", errors="replace")


def running(directories: tuple[str, ...] = DIRECTORIES) -> list[tuple[str, str]]:
    """The tunnels that have a control socket: ``(name, directory)``, sorted by name (a
    socket left behind by a dead process is listed too: :func:`read` finds it silent)."""
    found: list[tuple[str, str]] = []
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found += [(n[:-5], directory) for n in names if n.endswith(".sock") and len(n) > 5]
    return sorted(found)


def read(name: str, directory: str, *, timeout: float = 5.0) -> TunnelStatus:
    """Ask the tunnel ``name`` serving in ``directory``: ``get=1`` (it must answer) and
    ``stats=1`` (skipped if refused: wireguard-go). ControlSocketError if it does not
    answer."""
    path = socket_path(name, directory)
    got = exchange(path, "get=1\n\n", timeout=timeout)
    status = answer_pairs(got)[1]
    if status != 0:
        raise ControlSocketError(f"{name} did not answer get=1 at {path} "
                                 f"(errno={status if status is not None else 'none'})")
    stats: Stats | None = None
    with contextlib.suppress(ControlSocketError):
        text = exchange(path, "stats=1\n\n", timeout=timeout)
        if answer_pairs(text)[1] == 0:
            stats = parse_stats(text)
    encrypted = stats is None or stats.wire not in PLAIN_WIRES
    return merge(name, parse_get(got), stats, encrypted=encrypted)


def find(name: str, directories: tuple[str, ...] = DIRECTORIES) -> str | None:
    """The directory whose control socket for ``name`` exists (the first), else None."""
    for directory in directories:
        with contextlib.suppress(OSError):
            if os.path.exists(socket_path(name, directory)):
                return directory
    return None


__all__ = ["DIRECTORIES", "PLAINTEXT", "PLAIN_DIRECTORY", "PLAIN_WIRES", "WG_DIRECTORY",
           "PeerStats", "PeerStatus", "Stats", "TunnelStatus", "answer_pairs", "exchange",
           "find", "format_stats", "merge", "parse_get", "parse_stats", "read", "running",
           "socket_path"]
