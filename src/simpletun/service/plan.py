"""What a config file asks of ``simpletun up``, worked out before anything changes:
the file found by name, what ``up`` refuses, endpoints resolved, and where each allowed IP
is routed (pure but for the name lookups); and a ``get=1`` answer's peers as a file's,
for SaveConfig."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass, field

from ..config import wgconf
from ..control.uapi import DeviceStatus
from ..device import link, routing
from ..errors import ConfigError, SimpletunError

CONFIG_DIR = "/etc/simpletun"
NAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")  # wg-quick's


def locate(arg: str, config_dir: str = CONFIG_DIR) -> tuple[str, str]:
    """NAME (a file ``CONFIG_DIR/NAME.conf``) or a file's path (its name without
    ``.conf`` is the interface's, as wg-quick takes it): (interface name, path)."""
    if "/" in arg or arg.endswith(".conf"):
        base = os.path.basename(arg)
        name = base[:-5] if base.endswith(".conf") else base
        where = arg
    else:
        name, where = arg, os.path.join(config_dir, f"{arg}.conf")
    if not NAME.fullmatch(name):
        raise ConfigError(f"{arg}: the interface name {name!r} must be 1 to 15 letters, digits "
                          "or _=+.- (the file is NAME.conf)")
    return name, where


def _at(config: wgconf.Config, key: str) -> str:
    """``FILE:LINE: Key`` of an [Interface] key, for an error about it."""
    line = config.interface.lines.get(key.lower())
    return f"{config.path}:{line}: {key}" if line else f"{config.path}: {key}"


def check(config: wgconf.Config) -> None:
    """What a file must say for ``up`` to run it, checked before anything changes."""
    it = config.interface
    if it.wire != "wireguard":
        _check_plaintext(config)
        return
    if it.private_key is None:
        raise ConfigError(f"{config.path}: [Interface]: no PrivateKey: add one "
                          "('simpletun genkey')")
    if it.transport != "udp" and it.workers not in (None, 1):
        raise ConfigError(f"{_at(config, 'Workers')}: more than one runs over UDP only")
    if it.tap and it.workers not in (None, 1):
        raise ConfigError(f"{_at(config, 'Workers')}: more than one is for tun devices, not "
                          "Tap")
    if it.transport != "udp":
        ends = [p for p in config.peers if p.endpoint is not None]
        if len(ends) > 1:
            raise ConfigError(f"{config.path}:{ends[1].line}: Endpoint: over {it.transport} "
                              "a tunnel is a server (no Endpoint) or the client of one server")
        if it.transport == "icmp" and it.listen_port:
            raise ConfigError(f"{_at(config, 'ListenPort')}: ICMP has no ports: drop it")


def _check_plaintext(config: wgconf.Config) -> None:
    """The plaintext wires: TCP (the default for them), routes in the main table, as root
    (the classic tunnel has no privileges to drop: run it unprivileged from the start on a
    device made with mktun --user instead)."""
    it = config.interface
    if "transport" in it.lines and it.transport != "tcp":
        raise ConfigError(f"{_at(config, 'Transport')}: the plaintext {it.wire} wire runs over "
                          "TCP only: drop it, or use Wire = wireguard")
    for key, given in (("Table", it.table not in (None, "auto")), ("FwMark", bool(it.fwmark)),
                       ("User", it.user is not None), ("Group", it.group is not None),
                       ("SaveConfig", it.save_config)):
        if given:
            raise ConfigError(f"{_at(config, key)}: not for the plaintext {it.wire} wire: "
                              "drop it, or use Wire = wireguard")


def exposed(path: str) -> str | None:
    """A warning when the file that holds a private key can be read by others (as wg-quick
    warns), None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o077:
        return (f"warning: {path} can be read by others (mode {mode & 0o777:o}) and holds a "
                f"private key: chmod 600 {path}")
    return None


def resolve(host: str, port: int) -> tuple[str, int]:
    """An endpoint's name as an address (the UAPI takes addresses only)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ConfigError(f"Endpoint {host}:{port}: cannot resolve {host}: {exc.strerror}"
                          ) from None
    except UnicodeError:  # a label longer than 63 characters, and the like
        raise ConfigError(f"Endpoint {host}:{port}: {host!r} is not a host name") from None
    return str(found[0][4][0]), port


def check_user(config: wgconf.Config) -> None:
    it = config.interface
    if it.group is not None and it.user is None:
        raise ConfigError(f"{config.path}: Group: give User too (who the tunnel runs as)")
    if it.user is not None:
        from . import privileges

        try:
            privileges.resolve(it.user, it.group)
        except SimpletunError as exc:
            raise ConfigError(f"{config.path}: {exc}") from None


@dataclass
class Routes:
    """Where each allowed IP goes (pure, from the file): ``main`` through the device in the
    main table, ``table`` in a table of the file's, ``full`` the default routes of a
    full tunnel (policy routing), ``halves`` a full tunnel over TCP or ICMP (two halves,
    the endpoint kept reachable by a host route)."""

    main: list[link.IPNetwork] = field(default_factory=list)
    table: int | None = None
    in_table: list[link.IPNetwork] = field(default_factory=list)
    full: list[link.IPNetwork] = field(default_factory=list)
    halves: list[link.IPNetwork] = field(default_factory=list)


def plan_routes(config: wgconf.Config) -> Routes:
    it = config.interface
    nets = sorted({n for p in config.peers for n in p.allowed_ips},
                  key=lambda n: (-n.prefixlen, n.version, int(n.network_address)))
    out = Routes()
    if (it.table or "auto").lower() == "off" or it.wire != "wireguard":
        return out  # the plaintext tunnel routes its peer's AllowedIPs itself
    if it.table is not None and it.table.lower() != "auto":
        out.table = _table_number(config)
        out.in_table = nets
        return out
    for net in nets:
        if net.prefixlen != 0:
            out.main.append(net)
        elif it.transport == "udp":
            out.full.append(net)
        else:
            out.halves += routing.split_default([net])
    return out


def _table_number(config: wgconf.Config) -> int:
    table = config.interface.table or ""
    if table.isdigit():
        return int(table)
    names = {"main": 254, "default": 253, "local": 255}
    if table in names:
        return names[table]
    with contextlib.suppress(OSError), open("/etc/iproute2/rt_tables") as f:
        for line in f:
            parts = line.split("#", 1)[0].split()
            if len(parts) == 2 and parts[1] == table and parts[0].isdigit():
                return int(parts[0])
    raise ConfigError(f"{config.path}: Table: {table!r} is not a number or a table named in "
                      "/etc/iproute2/rt_tables")



def peers_from_status(device: DeviceStatus) -> list[wgconf.Peer]:
    """A running engine's peers (its ``get=1``, :func:`control.status.parse_get`) as a
    file's [Peer] sections, for SaveConfig."""
    return [wgconf.Peer(p.public_key, p.preshared_key, list(p.allowed_ips),
                        (p.endpoint[0].partition("%")[0], p.endpoint[1]) if p.endpoint else None,
                        p.persistent_keepalive or None) for p in device.peers]


__all__ = ["Routes", "check", "check_user", "exposed", "locate", "peers_from_status", "plan_routes",
           "resolve"]
