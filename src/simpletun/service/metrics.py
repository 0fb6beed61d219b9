"""An opt-in Prometheus endpoint (``--metrics ADDR:PORT``, ``Metrics =`` in a config file).

Nothing is counted for it: at each scrape a collector asks each tunnel's control socket
(:mod:`simpletun.control.status`, what ``simpletun show`` reads) and turns the answer into
metrics, so the tunnel's loop pays only for answering ``get=1`` and ``stats=1``, and the
HTTP server's thread never touches a tunnel's state. The server is ``prometheus_client``'s
WSGI app over the standard library's server, with its own registry (no process or GC
metrics of whichever process serves it), in daemon threads.

Metrics (labels ``interface``, and ``public_key`` in base64 per peer; a plaintext tunnel's
peer is ``public_key="plaintext"``)::

    simpletun_up                                 1: the tunnel answered this scrape
    simpletun_info{transport,wire,role}          1
    simpletun_peers                              configured (encrypted) or connected peers
    simpletun_drops_total{reason}                dropped by reason
    simpletun_peer_receive_bytes_total           bytes from the peer (wg's rx_bytes)
    simpletun_peer_transmit_bytes_total
    simpletun_peer_receive_packets_total         transport messages (plaintext: packets)
    simpletun_peer_transmit_packets_total
    simpletun_peer_latest_handshake_seconds      UNIX time of the latest handshake (0: none)
    simpletun_peer_latest_handshake_age_seconds  seconds since then (only after one)

A tunnel that does not answer during a scrape is absent, but ``simpletun_up`` 0.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..control import status
from ..control.uapi import format_endpoint
from ..errors import ControlSocketError, SimpletunError
from ..wireguard import keys

ASK_TIMEOUT = 2.0  # seconds a tunnel has to answer, per request, during a scrape


class MetricsUnavailable(SimpletunError):
    """The metrics endpoint cannot listen where it was asked to (port in use, no such
    address)."""


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``127.0.0.1:9586``, ``[::1]:9586``, ``localhost:9586``; port 0: any
    free one) as ``(host, port)``; ValueError with a one-line reason otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:9586 or "
                         "[::1]:9586")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{text!r}: the port is a number from 0 to 65535")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"{text!r}: '[' without ']' (an IPv6 address is [ADDRESS]:PORT)")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{text!r}: an IPv6 address is written in brackets: [ADDRESS]:PORT")
    elif not all(c.isalnum() or c in "-." for c in host):
        raise ValueError(f"{text!r}: {host!r} is neither an IP address nor a host name")
    return host, int(port_text)


def _peer_label(key: bytes | None) -> str:
    return keys.to_base64(key) if key is not None else "plaintext"


class TunnelCollector(Collector):
    """Metrics of the tunnels ``interfaces()`` names, read from their control sockets at
    each scrape (``directories``: where those are)."""

    def __init__(self, interfaces: Callable[[], list[str]], *,
                 directories: tuple[str, ...] = status.DIRECTORIES,
                 clock: Callable[[], float] = time.time) -> None:
        self._interfaces = interfaces
        self._directories = directories
        self._clock = clock

    def _read(self, name: str) -> status.TunnelStatus | None:
        directory = status.find(name, self._directories)
        if directory is None:
            return None
        try:
            return status.read(name, directory, timeout=ASK_TIMEOUT)
        except ControlSocketError:
            return None

    def collect(self) -> Iterable[Metric]:
        return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        names = list(dict.fromkeys(self._interfaces()))
        tunnels = [(n, self._read(n)) for n in names]
        now = self._clock()
        up = GaugeMetricFamily("simpletun_up", "1 if the tunnel answered on its control "
                               "socket during this scrape", labels=["interface"])
        info = GaugeMetricFamily("simpletun_info", "The tunnel's transport, wire and role",
                                 labels=["interface", "transport", "wire", "role"])
        peers = GaugeMetricFamily("simpletun_peers", "Peers configured (plaintext: "
                                  "connected or seen)", labels=["interface"])
        drops = CounterMetricFamily("simpletun_drops", "Packets and messages dropped, "
                                    "by reason", labels=["interface", "reason"])
        labels = ["interface", "public_key"]
        rx = CounterMetricFamily("simpletun_peer_receive_bytes", "Bytes received from "
                                 "the peer", labels=labels)
        tx = CounterMetricFamily("simpletun_peer_transmit_bytes", "Bytes sent to the peer",
                                 labels=labels)
        rxp = CounterMetricFamily("simpletun_peer_receive_packets", "Packets (encrypted: "
                                  "transport messages) received from the peer", labels=labels)
        txp = CounterMetricFamily("simpletun_peer_transmit_packets", "Packets (encrypted: "
                                  "transport messages) sent to the peer", labels=labels)
        hs = GaugeMetricFamily("simpletun_peer_latest_handshake_seconds", "UNIX time of the "
                               "latest handshake (plaintext: connection); 0: never",
                               labels=labels)
        age = GaugeMetricFamily("simpletun_peer_latest_handshake_age_seconds", "Seconds "
                                "since the latest handshake (only after one)", labels=labels)
        for name, t in tunnels:
            up.add_metric([name], 1 if t is not None else 0)
            if t is None:
                continue
            info.add_metric([name, t.transport, t.wire, t.role], 1)
            peers.add_metric([name], len(t.peers))
            for reason, count in sorted(t.drops.items()):
                drops.add_metric([name, reason], count)
            for p in t.peers:
                key = [name, _peer_label(p.public_key)]
                rx.add_metric(key, p.rx_bytes)
                tx.add_metric(key, p.tx_bytes)
                rxp.add_metric(key, p.rx_packets)
                txp.add_metric(key, p.tx_packets)
                hs.add_metric(key, p.latest_handshake)
                if p.latest_handshake:
                    age.add_metric(key, max(0.0, now - p.latest_handshake))
        yield from (up, info, peers, drops, rx, tx, rxp, txp, hs, age)


#: scrapes served at once; a connection beyond them is closed at once (a flood of
#: connections costs a bounded number of threads, in a process that may be the tunnel's)
MAX_CONNECTIONS = 8
#: seconds a connection may stay silent while its request is read or its answer written
REQUEST_TIMEOUT = 5.0


class _Quiet(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        #: connections closed unserved because every slot was taken
        self.refused = 0
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # its thread releases
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class Endpoint:
    """The metrics HTTP server: bound when made (a busy port fails then), serving from
    :meth:`start` in a daemon thread, until :meth:`close`."""

    def __init__(self, host: str, port: int, interfaces: Callable[[], list[str]], *,
                 directories: tuple[str, ...] = status.DIRECTORIES) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(TunnelCollector(interfaces, directories=directories))
        try:
            family, _t, _p, _c, sockaddr = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as exc:
            raise MetricsUnavailable(f"metrics: cannot listen on {host}: {exc.strerror}"
                                     ) from None
        server_class = type("_Bound", (_Server,), {"address_family": family})
        try:
            self._httpd: WSGIServer = make_server(str(sockaddr[0]), port,
                                                  make_wsgi_app(registry), server_class,
                                                  handler_class=_Quiet)
        except OSError as exc:
            raise MetricsUnavailable(
                f"metrics: cannot listen on {format_endpoint((host, port))}: {exc.strerror or exc}"
                ) from None
        #: the port it listens on (the one picked, when asked for 0)
        self.port: int = self._httpd.server_port
        self.host = host
        self._thread: threading.Thread | None = None

    def start(self) -> Endpoint:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            name="simpletun-metrics", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError):
            self._httpd.server_close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def serve(host: str, port: int, interfaces: Callable[[], list[str]], *,
          directories: tuple[str, ...] = status.DIRECTORIES) -> Endpoint:
    """Serve the metrics of the tunnels ``interfaces()`` names (asked at each scrape) on
    ``host:port`` (port 0: any free one, see ``.port``) until ``.close()``.
    MetricsUnavailable if it cannot listen there."""
    return Endpoint(host, port, interfaces, directories=directories).start()


__all__ = ["Endpoint", "MetricsUnavailable", "TunnelCollector", "parse_address", "serve"]
