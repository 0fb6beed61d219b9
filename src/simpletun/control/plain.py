"""The plaintext tunnel's control socket, ``/run/simpletun/IFACE.sock``: the UAPI protocol
of :mod:`.uapi_socket`, read-only.

``get=1`` answers what applies to a tunnel without keys (the listen port of a server),
``stats=1`` its transport, wire, role, drops and its peer's address and counters
(:mod:`.status`), and ``set=1`` is refused with ``errno=-1`` (EPERM), as wireguard-go
refuses what it cannot do. The server is :class:`.uapi_socket.UapiServer`, served from the
tunnel's own loop; this module is its handler and the opening that never stops a tunnel.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from ..device.side import Counters
from ..errors import SimpletunError
from .status import PLAIN_DIRECTORY, PLAINTEXT, PeerStats, Stats
from .uapi import DeviceSet, DeviceStatus, UapiError
from .uapi_socket import UapiServer


@dataclass
class Connection:
    """The peer a plaintext tunnel is connected to now."""

    peer: str  # its address as the tunnel's lines show it: "192.0.2.1:40000"
    wire: str  # "native" or "classic"
    since: float  # UNIX time


class PlainControl:
    """The read-only handler. ``counters``: the tunnel's (cumulative, every connection);
    ``connection``: who it is connected to now (None: nobody); both are asked at each
    request, so they cost the tunnel nothing between requests."""

    def __init__(self, *, role: str, listen_port: int,
                 counters: Callable[[], Counters],
                 connection: Callable[[], Connection | None]) -> None:
        self.role = role
        self.listen_port = listen_port
        self._counters = counters
        self._connection = connection

    def uapi_get(self) -> DeviceStatus:
        return DeviceStatus(private_key=None, listen_port=self.listen_port, fwmark=0,
                            peers=[])

    def uapi_set(self, request: DeviceSet) -> None:
        raise UapiError(errno.EPERM, "a plaintext tunnel's control socket is read-only")

    def uapi_stats(self) -> Stats:
        c = self._counters()
        now = self._connection()
        stats = Stats(transport="tcp", wire=now.wire if now is not None else "none",
                      role=self.role, drops={k: v for k, v in c.drops.items() if v})
        if now is not None or c.to_dev or c.to_net:
            stats.peers.append(PeerStats(
                PLAINTEXT, rx_packets=c.to_dev, tx_packets=c.to_net,
                endpoint=now.peer if now is not None else None,
                connected_sec=int(now.since) if now is not None else 0,
                rx_bytes=c.bytes_to_dev, tx_bytes=c.bytes_to_net))
        return stats


def serve(name: str, handler: PlainControl, *, log: Callable[[str], None],
          directory: str = PLAIN_DIRECTORY) -> UapiServer | None:
    """The control socket of plaintext tunnel ``name``, or None after one line saying why
    not (the directory cannot be made or written, as for an unprivileged tunnel, or the
    name is served already): the tunnel runs on without one."""
    try:
        return UapiServer(name, handler, directory=directory)
    except SimpletunError as exc:
        log(f"note: no control socket ({exc}); 'simpletun show' will not list {name}")
        return None


__all__ = ["Connection", "PlainControl", "serve"]
