"""Configuration files in the wg-quick format, parsed and written without I/O (issue 16).

A file is what ``wg-quick`` reads, so an existing WireGuard configuration works unchanged:

- ``[Interface]``: PrivateKey, ListenPort, FwMark (``wg``'s keys) and Address, DNS, MTU,
  Table, PreUp, PostUp, PreDown, PostDown, SaveConfig (``wg-quick``'s);
- ``[Peer]``: PublicKey, PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive;
- and simpletun's own, in ``[Interface]``, for what WireGuard lacks: ``Transport``
  (udp, tcp or icmp), ``Tap`` (true or false), ``Workers`` (a count), ``Wire``
  (wireguard, or the plaintext ``native`` or ``classic`` TCP wire), ``User`` and
  ``Group`` (who the tunnel runs as once set up), ``Metrics`` (ADDR:PORT of a Prometheus
  endpoint).

As in ``wg`` and ``wg-quick``: section names and keys are case-insensitive, ``#`` starts a
comment (but the hooks keep their whole line, as wg-quick runs it), whitespace inside a
value does not matter (``AllowedIPs = 10.0.0.2/32, fd00::2/128``), a key given twice keeps
the last value but for the list keys (Address, DNS, AllowedIPs, the hooks), which add up,
and several ``[Interface]`` sections are one. What ``wg`` would refuse is refused here
too, each time with one line naming the file, the line and the key
(:class:`~simpletun.errors.ConfigError`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..control.uapi import format_endpoint
from ..errors import BadKey, ConfigError
from ..wireguard import keys

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TRANSPORTS = ("udp", "tcp", "icmp")
WIRES = ("wireguard", "native", "classic")
MAX_WORKERS = 64


@dataclass
class Peer:
    public_key: bytes
    preshared_key: bytes | None = None
    allowed_ips: list[IPNetwork] = field(default_factory=list)
    endpoint: tuple[str, int] | None = None  # (host or name, port); IPv6 without brackets
    persistent_keepalive: int | None = None  # seconds; None: off
    line: int = 0  # where its section begins


@dataclass
class Interface:
    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    addresses: list[IPInterface] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)  # servers (addresses)...
    dns_search: list[str] = field(default_factory=list)  # ...and search domains
    mtu: int | None = None
    table: str | None = None  # "off", "auto", or a table number or name
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False
    # simpletun's own
    transport: str = "udp"
    tap: bool = False
    workers: int | None = None
    wire: str = "wireguard"
    user: str | None = None
    group: str | None = None
    metrics: tuple[str, int] | None = None  # (host, port)
    #: the line each key was last given on (for errors found once the file is read)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Config:
    path: str
    interface: Interface = field(default_factory=Interface)
    peers: list[Peer] = field(default_factory=list)


class _Line:
    """Where a value came from, for the error that names it."""

    def __init__(self, path: str, number: int, key: str) -> None:
        self.path, self.number, self.key = path, number, key

    def error(self, what: str) -> ConfigError:
        return ConfigError(f"{self.path}:{self.number}: {self.key}: {what}")


def _key(at: _Line, value: str) -> bytes:
    try:
        return keys.from_base64(value)
    except BadKey:
        raise at.error("not a key: give the 44 characters 'wg genkey' or 'wg pubkey' "
                       "prints") from None


def _int(at: _Line, value: str, low: int, high: int, *, off: bool = False,
         base: int = 10) -> int | None:
    if off and value.lower() == "off":
        return None
    try:
        n = int(value, 0 if base == 0 else 10)
    except ValueError:
        n = -1
    if not low <= n <= high:
        raise at.error(f"{value!r} is not a number from {low} to {high}"
                       + (" (or off)" if off else ""))
    return n


def _bool(at: _Line, value: str) -> bool:
    if value.lower() in ("true", "yes", "on", "1"):
        return True
    if value.lower() in ("false", "no", "off", "0"):
        return False
    raise at.error(f"{value!r} is not true or false")


def _choice(at: _Line, value: str, choices: tuple[str, ...]) -> str:
    if value.lower() not in choices:
        raise at.error(f"{value!r} is not one of {', '.join(choices)}")
    return value.lower()


def _items(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _address(at: _Line, value: str) -> IPInterface:
    try:
        return ipaddress.ip_interface(value)
    except ValueError:
        raise at.error(f"{value!r} is not an address with a prefix "
                       "(10.0.0.1/24, fd00::1/64)") from None


def _network(at: _Line, value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise at.error(f"{value!r} is not a network (10.0.0.0/24, fd00::/64, 0.0.0.0/0)"
                       ) from None


def _endpoint(at: _Line, value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
        if ":" in host:
            sep = ""  # an IPv6 address needs brackets to carry a port
    if not sep or not host:
        raise at.error(f"{value!r} is not HOST:PORT (192.0.2.1:51820, [2001:db8::1]:51820, "
                       "vpn.example.com:51820)")
    number = _int(at, port, 1, 65535)
    assert number is not None
    return host, number


_INTERFACE_KEYS = ("privatekey", "listenport", "fwmark", "address", "dns", "mtu", "table",
                   "preup", "postup", "predown", "postdown", "saveconfig", "transport",
                   "tap", "workers", "wire", "user", "group", "metrics")
_PEER_KEYS = ("publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive")
_HOOKS = ("preup", "postup", "predown", "postdown")


def parse(text: str, path: str = "<config>") -> Config:
    """The configuration ``text`` (read from ``path``, named in errors)."""
    config = Config(path)
    section = ""
    peer: Peer | None = None
    seen: set[bytes] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.split("#", 1)[0]
        line = "".join(stripped.split())
        if not line:
            continue
        if line.startswith("["):
            name = line.lower()
            if name == "[interface]":
                section = "interface"
            elif name == "[peer]":
                section = "peer"
                _finish(config, peer, seen)
                peer = Peer(b"", line=number)
            else:
                raise ConfigError(f"{path}:{number}: {line}: not a section: "
                                  "give [Interface] or [Peer]")
            continue
        key, eq, value = line.partition("=")
        at = _Line(path, number, key)
        if not eq or not key:
            raise ConfigError(f"{path}:{number}: {raw.strip()!r}: not KEY = VALUE")
        lower = key.lower()
        if not section:
            raise at.error("outside a section: put it under [Interface] or [Peer]")
        if section == "interface":
            if lower not in _INTERFACE_KEYS:
                where = " (a [Peer] key)" if lower in _PEER_KEYS else ""
                raise at.error(f"not a key of [Interface]{where}")
            if lower in _HOOKS:  # the whole line after '=', comments and all
                value = raw.partition("=")[2].strip()
            _interface(config.interface, at, lower, value)
            config.interface.lines[lower] = number
        else:
            assert peer is not None
            if lower not in _PEER_KEYS:
                where = " (an [Interface] key)" if lower in _INTERFACE_KEYS else ""
                raise at.error(f"not a key of [Peer]{where}")
            _peer(peer, at, lower, value)
    _finish(config, peer, seen)
    _keys_for_the_wire(config)
    return config


def _keys_for_the_wire(config: Config) -> None:
    """WireGuard's peers are their keys; the plaintext wires have none (and one peer: the
    server a client connects to, or none for a server)."""
    it, path = config.interface, config.path
    if it.wire == "wireguard":
        for p in config.peers:
            if not p.public_key:
                raise ConfigError(f"{path}:{p.line}: [Peer]: no PublicKey in this section")
        return
    plain = f"the plaintext {it.wire} wire has no keys: drop it, or use Wire = wireguard"
    if it.private_key is not None:
        raise ConfigError(f"{path}:{it.lines['privatekey']}: PrivateKey: {plain}")
    for p in config.peers:
        if p.public_key or p.preshared_key:
            key = "PublicKey" if p.public_key else "PresharedKey"
            raise ConfigError(f"{path}:{p.line}: {key}: {plain}")
    if len(config.peers) > 1:
        raise ConfigError(f"{path}:{config.peers[1].line}: [Peer]: the plaintext {it.wire} "
                          "wire has one peer (the server of a client): give one [Peer]")


def _finish(config: Config, peer: Peer | None, seen: set[bytes]) -> None:
    if peer is None:
        return
    if peer.public_key and peer.public_key in seen:
        raise ConfigError(f"{config.path}:{peer.line}: [Peer]: the same PublicKey as an "
                          "earlier [Peer]: give each peer once")
    seen.add(peer.public_key)
    config.peers.append(peer)


def _interface(it: Interface, at: _Line, key: str, value: str) -> None:
    if key == "privatekey":
        it.private_key = _key(at, value)
    elif key == "listenport":
        it.listen_port = _int(at, value, 0, 65535)
    elif key == "fwmark":
        it.fwmark = _int(at, value, 0, 2**32 - 1, off=True, base=0)
    elif key == "address":
        it.addresses += [_address(at, v) for v in _items(value)]
    elif key == "dns":
        for v in _items(value):
            try:
                ipaddress.ip_address(v)
                it.dns.append(v)
            except ValueError:
                it.dns_search.append(v)
    elif key == "mtu":
        it.mtu = _int(at, value, 68, 65535)
    elif key == "table":
        if not value:
            raise at.error("empty: give off, auto, or a routing table")
        it.table = value
    elif key in _HOOKS:
        getattr(it, {"preup": "pre_up", "postup": "post_up", "predown": "pre_down",
                     "postdown": "post_down"}[key]).append(value)
    elif key == "saveconfig":
        it.save_config = _bool(at, value)
    elif key == "transport":
        it.transport = _choice(at, value, TRANSPORTS)
    elif key == "tap":
        it.tap = _bool(at, value)
    elif key == "workers":
        it.workers = _int(at, value, 1, MAX_WORKERS)
    elif key == "wire":
        it.wire = _choice(at, value, WIRES)
    elif key in ("user", "group"):
        if not value or not all(c.isalnum() or c in "._-" for c in value):
            raise at.error(f"{value!r} is not a {key} name or number")
        setattr(it, key, value)
    elif key == "metrics":
        it.metrics = _endpoint(at, value)


def _peer(peer: Peer, at: _Line, key: str, value: str) -> None:
    if key == "publickey":
        peer.public_key = _key(at, value)
    elif key == "presharedkey":
        peer.preshared_key = _key(at, value)
    elif key == "allowedips":
        peer.allowed_ips += [_network(at, v) for v in _items(value)]
    elif key == "endpoint":
        peer.endpoint = _endpoint(at, value)
    elif key == "persistentkeepalive":
        seconds = _int(at, value, 0, 65535, off=True)
        peer.persistent_keepalive = seconds or None


def render(config: Config) -> str:
    """The file for ``config`` (what SaveConfig writes): :func:`parse` gives it back."""
    it = config.interface
    lines = ["[Interface]"]
    if it.private_key is not None:
        lines.append(f"PrivateKey = {keys.to_base64(it.private_key)}")
    if it.listen_port is not None:
        lines.append(f"ListenPort = {it.listen_port}")
    if it.fwmark is not None:
        lines.append(f"FwMark = {it.fwmark:#x}")
    if it.addresses:
        lines.append(f"Address = {', '.join(str(a) for a in it.addresses)}")
    if it.dns or it.dns_search:
        lines.append(f"DNS = {', '.join(it.dns + it.dns_search)}")
    if it.mtu is not None:
        lines.append(f"MTU = {it.mtu}")
    if it.table is not None:
        lines.append(f"Table = {it.table}")
    for name, hooks in (("PreUp", it.pre_up), ("PostUp", it.post_up),
                        ("PreDown", it.pre_down), ("PostDown", it.post_down)):
        lines.extend(f"{name} = {h}" for h in hooks)
    if it.save_config:
        lines.append("SaveConfig = true")
    if it.transport != "udp":
        lines.append(f"Transport = {it.transport}")
    if it.tap:
        lines.append("Tap = true")
    if it.workers is not None:
        lines.append(f"Workers = {it.workers}")
    if it.wire != "wireguard":
        lines.append(f"Wire = {it.wire}")
    if it.user is not None:
        lines.append(f"User = {it.user}")
    if it.group is not None:
        lines.append(f"Group = {it.group}")
    if it.metrics is not None:
        lines.append(f"Metrics = {format_endpoint(it.metrics)}")
    for p in config.peers:
        lines += ["", "[Peer]"]
        if p.public_key:
            lines.append(f"PublicKey = {keys.to_base64(p.public_key)}")
        if p.preshared_key is not None:
            lines.append(f"PresharedKey = {keys.to_base64(p.preshared_key)}")
        if p.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(str(n) for n in p.allowed_ips)}")
        if p.endpoint is not None:
            lines.append(f"Endpoint = {format_endpoint(p.endpoint)}")
        if p.persistent_keepalive is not None:
            lines.append(f"PersistentKeepalive = {p.persistent_keepalive}")
    return "\n".join(lines) + "\n"


def load(path: str) -> Config:
    """Read and parse ``path``; a file that cannot be read is a ConfigError too."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8)") from None
    return parse(text, path)


__all__ = ["Config", "Interface", "Peer", "load", "parse", "render"]
