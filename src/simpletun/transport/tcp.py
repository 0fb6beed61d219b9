"""TCP underlay: a listening socket (dual-stack where the host has IPv6) and connecting
sockets, configured for a tunnel (TCP_NODELAY, keepalive, a user timeout), with every
failure a user can cause turned into a one-line :class:`TransportError`."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from ..errors import SimpletunError

DEFAULT_PORT = 55555
KEEPALIVE_IDLE = 10  # seconds of silence before probing
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = 30_000  # give up on unacknowledged data after this
BACKLOG = 512  # connections the kernel queues before the server accepts them


class TransportError(SimpletunError):
    """The network side failed in a way a user can act on."""


class PeerGone(TransportError):
    """The connection ended (closed, reset, or timed out)."""


class ServerBusy(TransportError):
    """The server serves another live client and turned this one away: try again later."""


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port``, ``[v6]`` or a bare IPv6 address. Anything
    else (unbalanced brackets, a bracketed name, white space, an empty part) is a
    TransportError saying what to give instead."""
    usage = "give an address such as 192.0.2.1, 192.0.2.1:55555 or [fd00::1]:55555"
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            raise TransportError(f"bad server {text!r}: '[' without ']'; {usage}")
        if rest and not rest.startswith(":"):
            raise TransportError(f"bad server {text!r}: only ':PORT' may follow ']'; {usage}")
        port = rest[1:]
        if rest and not port:
            raise TransportError(f"bad server {text!r}: no port after ':'; {usage}")
        if host and ":" not in host:
            raise TransportError(f"bad server {text!r}: brackets are for IPv6 addresses; "
                                 f"{usage}")
    elif "]" in text:
        raise TransportError(f"bad server {text!r}: ']' without '['; {usage}")
    elif text.count(":") == 1:
        host, port = text.split(":")
        if not port:
            raise TransportError(f"bad server {text!r}: no port after ':'; {usage}")
    else:
        host, port = text, ""
    if not host:
        raise TransportError(f"no host in {text!r}: {usage}")
    if any(c.isspace() or c in "[]/@" for c in host) or host.startswith(("-", ".")) or (
            ":" in host and not _is_ipv6(host)):
        raise TransportError(f"bad server {text!r}: {host!r} is neither an address nor a "
                             f"host name; {usage}")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise TransportError(f"bad port in {text!r}: use 1..65535")
    return host, int(port)


def _is_ipv6(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return False
    return True


def tune(sock: socket.socket) -> None:
    """What every tunnel connection gets: no Nagle, keepalive, a user timeout."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


def listen(port: int, host: str | None = None,
           kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    """A listening socket on ``port`` (all addresses, IPv4 and IPv6, unless ``host``); with
    ``kind=SOCK_DGRAM`` a bound UDP socket."""
    candidates: list[tuple[int, str]] = []
    if host is None:
        if socket.has_ipv6:
            candidates.append((socket.AF_INET6, "::"))
        candidates.append((socket.AF_INET, "0.0.0.0"))
    else:
        candidates.append((socket.AF_INET6 if ":" in host else socket.AF_INET, host))
    last: OSError | None = None
    for family, addr in candidates:
        sock = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((addr, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(BACKLOG)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise TransportError(
                    f"port {port} is already in use on this host: stop the other server or "
                    f"pick another port with -p"
                ) from None
            if exc.errno == errno.EACCES:
                raise TransportError(
                    f"not allowed to listen on port {port}: run as root or use a port "
                    "above 1023"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise TransportError(
                    f"cannot listen on {addr}: no interface of this host has that address"
                ) from None
            last = exc  # e.g. IPv6 disabled: try IPv4
    raise TransportError(f"cannot listen on port {port}: {last.strerror if last else '?'}")


def addresses(host: str, port: int) -> Sequence[tuple[int, tuple[str, int]]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise TransportError(
            f"cannot resolve {host!r}: give the server's IP address or a name this host "
            "can resolve"
        ) from None
    return [(family, sockaddr[:2]) for family, _t, _p, _c, sockaddr in infos]  # type: ignore[misc]


def show(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected, tuned socket to ``host:port``, or a TransportError saying why not."""
    reason = "no address"
    for family, sockaddr in addresses(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except TimeoutError:
            sock.close()
            reason = f"no answer within {timeout:g} s (a firewall, or a wrong address?)"
            continue
        except OSError as exc:
            sock.close()
            reason = {
                errno.ECONNREFUSED: "connection refused: is 'simpletun -s' running there, "
                                    "on this port?",
                errno.ENETUNREACH: "network unreachable: no route to it from this host",
                errno.EHOSTUNREACH: "host unreachable",
            }.get(exc.errno or 0, exc.strerror or str(exc))
            continue
        sock.settimeout(None)
        tune(sock)
        return sock
    raise TransportError(f"cannot connect to {show((host, port))}: {reason}")
