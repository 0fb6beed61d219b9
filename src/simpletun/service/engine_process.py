"""The engine's process of a ``simpletun up`` tunnel: forked by the supervisor with the
device and the socket open, it makes the WireGuard engine, configures it from the file's
``set=1`` request, starts the workers, drops to User/Group with only the capabilities it
still needs, says it is ready (:class:`Ready`), and runs until SIGTERM (with its summary)
or until the supervisor is gone (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from functools import partial
from typing import Any

from ..config import wgconf
from ..control.uapi import DeviceSet, format_endpoint
from ..device import tuntap
from ..errors import SimpletunError
from ..signals import STOP_SIGNALS, die_with_parent
from . import logs

CAP_NET_RAW = 13


def _drop(it: wgconf.Interface) -> None:
    """To ``User``/``Group``, keeping only what the engine still needs (ICMP's raw sockets:
    CAP_NET_RAW; nothing for its own device and UDP or TCP sockets); the death signal
    again, which a change of user clears."""
    from . import privileges

    assert it.user is not None
    parent = os.getppid()
    privileges.drop(it.user, it.group, keep={CAP_NET_RAW} if it.transport == "icmp" else ())
    _die_with(parent)


def _die_with(parent: int) -> None:
    """SIGTERM when ``parent`` (the supervisor; a follower's leader) goes, however it goes;
    if it went already, now."""
    die_with_parent()
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


class Ready:
    """The engine's word to the supervisor, once: ``R`` (configured, privileges dropped,
    running), or ``E`` and the line that says why not."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def _say(self, data: bytes) -> bool:
        """False if it was said already, or the supervisor no longer listens."""
        if self.fd is None:
            return False
        try:
            os.write(self.fd, data)
        except OSError:
            return False
        finally:
            os.close(self.fd)
            self.fd = None
        return True

    def ok(self) -> None:
        self._say(b"R")

    def failed(self, line: str) -> bool:
        """False if it was said already (the line then goes to the log)."""
        return self._say(b"E" + line.encode())


def _signals(supervisor: int) -> bool:
    """The engine's signals: none blocked (the supervisor waits with them blocked),
    SIGHUP ignored (the supervisor's: reload), a stop signal a KeyboardInterrupt, and
    SIGTERM when the supervisor is gone. False if it is gone already."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def stop(_signo: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for signo in STOP_SIGNALS:
        if signo != signal.SIGHUP:
            signal.signal(signo, stop)
    # a group of its own: a Ctrl-C at the supervisor's terminal is the supervisor's to
    # handle (it stops the engine after PreDown and SaveConfig have asked it)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    die_with_parent()  # end with the supervisor, whatever kills it
    return os.getppid() == supervisor


def main(dev: tuntap.Device, transport: Any, request: DeviceSet, config: wgconf.Config,
         supervisor: int, ready: Ready) -> int:
    """The engine's process: configured, privileges dropped, ready said, run."""
    if not _signals(supervisor):
        return 1
    from ..control.uapi import UapiError
    from ..wireguard.engine import Engine
    from ..wireguard.workers import start_engines

    it = config.interface
    udp_socket = transport if isinstance(transport, socket.socket) else None
    link_ = None if udp_socket is not None else transport
    engine = Engine(dev, link=link_, tap=it.tap, udp_socket=udp_socket,
                    super_packets=it.transport == "tcp", extensions=it.transport == "tcp",
                    log=logs.log)
    try:
        try:
            engine.uapi_set(request)
        except UapiError as exc:
            raise SimpletunError(f"configuring the engine: {exc.message}") from None
        now = time.monotonic()
        where = getattr(link_, "server_address", None) or getattr(link_, "server", None)
        if where is not None:  # a TCP or ICMP client: its one server, a handshake at once
            for peer in engine.core.peers.values():
                if peer.public in {p.public_key for p in config.peers if p.endpoint}:
                    peer.endpoint = where
                    engine.core.send_keepalive(peer, now)
        workers = it.workers or 1
        drop = partial(_drop, it) if it.user is not None else None
        if workers > 1:  # their sockets made as root (a mark, a low port), each then drops
            start_engines(engine, dev, workers, tap=it.tap, then=drop)
        if drop is not None:
            drop()
        ready.ok()
        try:
            engine.run()
        except KeyboardInterrupt:
            logs.log(f"{dev.name}: shutting down: {engine.summary()}")
            return 0
        logs.log(f"{dev.name}: stopped: {engine.stop_reason} ({engine.summary()})")
        return 1
    finally:
        with contextlib.suppress(Exception):
            engine.close()


def plaintext(config: wgconf.Config, name: str, supervisor: int, ready: Ready) -> int:
    """The plaintext wire's process: the classic/native tunnel (:func:`cli.tunnel.run`)
    from the file: a client of its one peer's Endpoint, else a server on ListenPort; it
    routes the peer's AllowedIPs. Ready is the device's being up (the supervisor looks)."""
    if not _signals(supervisor):
        return 1
    from ..cli import tunnel

    it = config.interface
    peer = config.peers[0] if config.peers else None
    endpoint = peer.endpoint if peer is not None else None
    client = format_endpoint(endpoint) if endpoint is not None else None
    try:
        return tunnel.run(
            iface=name, server=client is None, client=client,
            port=it.listen_port if client is None else None, tap=it.tap, debug=False,
            addresses=tuple(str(a) for a in it.addresses), mtu=it.mtu,
            routes=tuple(str(n) for n in peer.allowed_ips) if peer is not None else (),
            once=False, reconnect=client is not None, classic_wire=it.wire == "classic",
            worker_count=it.workers)
    except KeyboardInterrupt:
        return 0


__all__ = ["Ready", "main", "plaintext"]
