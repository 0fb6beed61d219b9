"""The WireGuard cross-platform userspace API (UAPI), as text: pure, no sockets.

A client (``wg``) sends ``get=1\\n\\n`` and reads ``key=value`` lines ending with
``errno=0`` and a blank line, or sends ``set=1\\n``, ``key=value`` lines and a blank line
and reads ``errno=N`` and a blank line. Keys are 64 hex digits; numbers are decimal.

This module mirrors wireguard-go (``device/uapi.go``), the implementation ``wg`` is tested
against: the same keys, the same values accepted, the same answers, and the same sign of
errno (negative: ``errno=-22`` for EINVAL). Unlike wireguard-go, a request is parsed whole
before any of it is applied, so a bad line changes nothing.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from errno import EINVAL, EPROTO

from ..wireguard import keys
from ..wireguard.keys import KEY_LEN

Address = tuple[str, int]  # (host, port); host is an IPv4 or IPv6 literal (IPv6 may carry %zone)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ZERO_KEY = bytes(KEY_LEN)

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]+")
_PREFIX_LEN = re.compile(r"0|[1-9][0-9]{0,2}")
_ZONE = re.compile(r"[A-Za-z0-9_.:@+-]{1,64}")


class UapiError(Exception):
    """A request the UAPI refuses; ``errno`` is the (positive) error number to answer."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message


@dataclass
class PeerSet:
    """One peer's part of a ``set=1`` request, in the order the lines came.

    ``remove``: remove the peer (the other fields then mean nothing). ``update_only``: apply
    only if the peer exists already, never create it. ``replace_allowed_ips``: drop the
    peer's allowed IPs before adding ``allowed_ips``.
    """

    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None  # None: unchanged; 32 zero bytes: clear it
    endpoint: Address | None = None
    persistent_keepalive: int | None = None  # seconds; 0 = off; None: unchanged
    replace_allowed_ips: bool = False
    allowed_ips: list[Network] = field(default_factory=list)


@dataclass
class DeviceSet:
    """A whole ``set=1`` request. ``replace_peers``: remove every peer first. A private key
    is clamped as X25519 does (as wireguard-go stores it); 32 zero bytes clear it."""

    private_key: bytes | None = None  # 32 zero bytes: clear it
    listen_port: int | None = None
    fwmark: int | None = None  # 0 = off
    replace_peers: bool = False
    peers: list[PeerSet] = field(default_factory=list)


@dataclass
class PeerStatus:
    public_key: bytes
    preshared_key: bytes | None
    endpoint: Address | None
    persistent_keepalive: int  # 0 = off
    allowed_ips: list[Network]
    last_handshake_ns: int  # UNIX time in ns; 0 = never
    rx_bytes: int
    tx_bytes: int


@dataclass
class DeviceStatus:
    private_key: bytes | None
    listen_port: int  # 0: not listening (not printed, as wireguard-go)
    fwmark: int
    peers: list[PeerStatus]


# ---------------------------------------------------------------------------------------
# set


def _show(value: str) -> str:
    """A value for an error message: quoted, escaped, never long."""
    return repr(value if len(value) <= 80 else value[:80] + "...")


def _bad(key: str, value: str, why: str) -> UapiError:
    return UapiError(EINVAL, f"invalid {key}={_show(value)}: {why}")


def _key(key: str, value: str) -> bytes:
    if not _HEX_KEY.fullmatch(value):
        raise _bad(key, value, "a key is 64 hex digits")
    return bytes.fromhex(value)


def _uint(key: str, value: str, bits: int) -> int:
    if not _DIGITS.fullmatch(value):
        raise _bad(key, value, "not a decimal number")
    digits = value.lstrip("0") or "0"
    if len(digits) > 20 or int(digits) >= 1 << bits:
        raise _bad(key, value, f"more than {(1 << bits) - 1}")
    return int(digits)


def _true(key: str, value: str) -> bool:
    if value != "true":
        raise _bad(key, value, "the only value is true")
    return True


def _clamp(private_key: bytes) -> bytes:
    """As wireguard-go stores a private key: clamped, unless it is the zero key (unset)."""
    return private_key if keys.is_zero(private_key) else keys.clamp(private_key)


def parse_endpoint(value: str) -> Address:
    """``1.2.3.4:51820`` or ``[fd00::1]:51820`` / ``[fe80::1%eth0]:51820`` (as Go's
    ``netip.ParseAddrPort``: IPv6 in brackets, IPv4 without, no host names)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text:
        raise _bad("endpoint", value, "expected ADDRESS:PORT")
    port = _uint("endpoint", port_text, 16)
    try:
        if host.startswith("["):
            if len(host) < 2 or not host.endswith("]"):
                raise _bad("endpoint", value, "an IPv6 address is written [ADDRESS]:PORT")
            literal = host[1:-1]
            _addr, pct, zone = literal.partition("%")
            if pct and not _ZONE.fullmatch(zone):
                raise _bad("endpoint", value, "bad IPv6 zone")
            return str(ipaddress.IPv6Address(literal)), port
        if ":" in host:
            raise _bad("endpoint", value, "an IPv6 address is written [ADDRESS]:PORT")
        return str(ipaddress.IPv4Address(host)), port
    except ValueError:
        raise _bad("endpoint", value, "not an IP address and port") from None


def parse_allowed_ip(value: str) -> Network:
    """``10.0.0.0/24`` or ``fd00::/64`` (as Go's ``netip.ParsePrefix``; host bits may be set,
    they are masked)."""
    if value.startswith("-"):
        raise _bad("allowed_ip", value,
                   "removing one allowed IP is not supported; use replace_allowed_ips=true")
    addr_text, sep, bits = value.rpartition("/")
    if not sep or not _PREFIX_LEN.fullmatch(bits) or "%" in addr_text:
        raise _bad("allowed_ip", value, "expected ADDRESS/PREFIXLEN")
    try:
        addr = ipaddress.ip_address(addr_text)
        return ipaddress.ip_network((addr, int(bits)), strict=False)
    except ValueError:
        raise _bad("allowed_ip", value, "not an IP network") from None


def _device_line(device: DeviceSet, key: str, value: str) -> None:
    if key == "private_key":
        device.private_key = _clamp(_key(key, value))
    elif key == "listen_port":
        device.listen_port = _uint(key, value, 16)
    elif key == "fwmark":
        device.fwmark = _uint(key, value, 32)
    elif key == "replace_peers":
        device.replace_peers = _true(key, value)
    else:
        raise UapiError(EINVAL, f"invalid UAPI device key {_show(key)} (peer keys come after "
                                "public_key=)")


def _peer_line(peer: PeerSet, key: str, value: str) -> None:
    if key == "remove":
        peer.remove = _true(key, value)
        peer.allowed_ips.clear()
    elif key == "update_only":
        peer.update_only = _true(key, value)
    elif key == "preshared_key":
        peer.preshared_key = _key(key, value)
    elif key == "endpoint":
        peer.endpoint = parse_endpoint(value)
    elif key == "persistent_keepalive_interval":
        peer.persistent_keepalive = _uint(key, value, 16)
    elif key == "replace_allowed_ips":
        peer.replace_allowed_ips = _true(key, value)
        peer.allowed_ips.clear()  # what came before in this request goes too, as wireguard-go
    elif key == "allowed_ip":
        network = parse_allowed_ip(value)
        if not peer.remove:
            peer.allowed_ips.append(network)
    elif key == "protocol_version":
        if value != "1":
            raise _bad(key, value, "only protocol version 1 exists")
    else:
        raise UapiError(EINVAL, f"invalid UAPI peer key {_show(key)}")


def parse_set(body: str) -> DeviceSet:
    """Parse the lines of a ``set=1`` request (what follows ``set=1\\n``), up to and
    optionally including the blank line that ends it. Raises :class:`UapiError` (EINVAL for
    a bad key or value, EPROTO for a line that is not ``key=value``)."""
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    device = DeviceSet()
    peer: PeerSet | None = None
    for number, raw in enumerate(lines):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line == "":
            if number != len(lines) - 1:
                raise UapiError(EPROTO, "text after the blank line that ends a set request")
            break
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(EPROTO, f"line {_show(line)} is not key=value")
        if key == "public_key":
            peer = PeerSet(public_key=_key(key, value))
            device.peers.append(peer)
        elif peer is None:
            _device_line(device, key, value)
        else:
            _peer_line(peer, key, value)
    return device


# ---------------------------------------------------------------------------------------
# get


def format_endpoint(endpoint: Address) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _hex(key: bytes) -> str:
    if len(key) != KEY_LEN:
        raise ValueError(f"a key is {KEY_LEN} bytes, not {len(key)}")
    return key.hex()


def format_get(status: DeviceStatus) -> str:
    """The whole answer to ``get=1``, in wireguard-go's order, ending with ``errno=0`` and
    the blank line."""
    out: list[str] = []
    if status.private_key is not None and status.private_key != ZERO_KEY:
        out.append(f"private_key={_hex(status.private_key)}")
    if status.listen_port:
        out.append(f"listen_port={status.listen_port}")
    if status.fwmark:
        out.append(f"fwmark={status.fwmark}")
    for peer in status.peers:
        secs, nsecs = divmod(peer.last_handshake_ns, 1_000_000_000)
        out.append(f"public_key={_hex(peer.public_key)}")
        out.append(f"preshared_key={_hex(peer.preshared_key or ZERO_KEY)}")
        out.append("protocol_version=1")
        if peer.endpoint is not None:
            out.append(f"endpoint={format_endpoint(peer.endpoint)}")
        out.append(f"last_handshake_time_sec={secs}")
        out.append(f"last_handshake_time_nsec={nsecs}")
        out.append(f"tx_bytes={peer.tx_bytes}")
        out.append(f"rx_bytes={peer.rx_bytes}")
        out.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        out.extend(f"allowed_ip={network}" for network in peer.allowed_ips)
    out.append("errno=0")
    return "\n".join(out) + "\n\n"


def format_errno(errno: int) -> str:
    """The status line of an answer: ``errno=0`` for success, else the error number negated
    (``errno=-22`` for EINVAL), as wireguard-go answers and ``wg`` expects."""
    return f"errno={-abs(errno)}\n\n"
