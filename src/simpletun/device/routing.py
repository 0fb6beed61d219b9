"""Full-tunnel routing, the way OpenVPN's ``redirect-gateway def1`` does it.

A default route through the tunnel is installed as two halves (0.0.0.0/1 + 128.0.0.0/1,
::/1 + 8000::/1): more specific than the host's own default route, which stays (so there is
nothing to replace, and nothing to put back). When the tunnel's routes would cover the
server's own address, the packets that carry the tunnel would go into the tunnel: so first a
host route to the server is added through the underlay's current route to it (the gateway
and device ``ip route get SERVER`` names), and removed when the tunnel ends.

The tunnel's own routes are removed when it ends too (:func:`add_routes` says which it
added): on a persistent device they would outlive the process, and with the host route gone
all traffic would go into a device nobody reads. A route that already leaves through the
device (left by a run that was killed) is taken as given: neither an error nor removed.

:func:`split_default` and :func:`covering` are pure; the rest is netlink (pyroute2), with
``netns=`` as in :mod:`simpletun.device.link`.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import link
from .link import IPInterface, IPNetwork

RTN_UNICAST = 1
AF = {4: 2, 6: 10}
HALVES: dict[int, tuple[IPNetwork, IPNetwork]] = {
    4: (ipaddress.IPv4Network("0.0.0.0/1"), ipaddress.IPv4Network("128.0.0.0/1")),
    6: (ipaddress.IPv6Network("::/1"), ipaddress.IPv6Network("8000::/1")),
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def split_default(nets: Iterable[IPNetwork]) -> list[IPNetwork]:
    """``nets`` with every default route (0.0.0.0/0, ::/0) replaced by its two halves, each
    network once, in order."""
    out: list[IPNetwork] = []
    for net in nets:
        for part in HALVES[net.version] if net.prefixlen == 0 else (net,):
            if part not in out:
                out.append(part)
    return out


def covering(nets: Iterable[IPNetwork | IPInterface], address: str | IPAddress) -> list[str]:
    """Those of ``nets`` (routes, or addresses with their prefix) that contain ``address``,
    as text; IPv4-mapped IPv6 addresses count as IPv4."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    found = []
    for item in nets:
        net = item.network if isinstance(item, IPInterface) else item
        if net.version == ip.version and ip in net:
            found.append(str(item))
    return found


@dataclass(frozen=True)
class HostRoute:
    """A host route to ``address`` through the underlay: ``gateway`` (None: on link) on
    ``device`` (its name, for messages; ``index`` for netlink)."""

    address: str
    gateway: str | None
    device: str
    index: int

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.address)

    def __str__(self) -> str:
        via = f"via {self.gateway} " if self.gateway else ""
        return f"{self.address} {via}dev {self.device}"


def _plain(address: str) -> IPAddress:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def underlay_route(address: str, *, netns: str | None = None) -> HostRoute | None:
    """What ``ip route get ADDRESS`` says now, as a host route: None when there is no route,
    or when the address is this host's own."""
    from pyroute2.netlink.exceptions import NetlinkError

    ip = _plain(address)
    with link._ipr(netns) as ipr:
        try:
            found = ipr.route("get", dst=str(ip), family=AF[ip.version])
        except NetlinkError:  # no route (ENETUNREACH), or nothing the kernel can say
            return None
        if not found:
            return None
        msg: Any = found[0]
        index = msg.get_attr("RTA_OIF")
        if msg["type"] != RTN_UNICAST or index is None:
            return None  # local, unreachable, blackhole...
        names = ipr.get_links(index)
        name = names[0].get_attr("IFLA_IFNAME") if names else str(index)
        return HostRoute(str(ip), msg.get_attr("RTA_GATEWAY"), name, int(index))


def _host_route(cmd: str, route: HostRoute, ipr: Any) -> None:
    attrs: dict[str, Any] = {"dst": str(route.network), "oif": route.index,
                             "family": AF[route.network.version]}
    if route.gateway:
        attrs["gateway"] = route.gateway
    ipr.route(cmd, **attrs)


def keep_reachable(address: str, *, netns: str | None = None) -> HostRoute | None:
    """Add a host route to ``address`` through its current underlay route, before tunnel
    routes that cover it are added. Returns the route added (to :func:`forget` it later),
    or None: no route to it, it is this host's own, or a host route to it exists already
    (someone else's: left alone)."""
    from pyroute2.netlink.exceptions import NetlinkError

    route = underlay_route(address, netns=netns)
    if route is None:
        return None
    with link._ipr(netns) as ipr:
        try:
            _host_route("add", route, ipr)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return None
            raise link._fail(exc, f"adding a host route {route}") from None
    return route


def forget(route: HostRoute, *, netns: str | None = None) -> None:
    """Remove a host route :func:`keep_reachable` added (if it is still there)."""
    from pyroute2.netlink.exceptions import NetlinkError

    with link._ipr(netns) as ipr:
        try:
            _host_route("del", route, ipr)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENODEV, errno.ENOENT):
                raise link._fail(exc, f"removing the host route {route}") from None


def add_routes(nets: Iterable[IPNetwork], name: str, *,
               netns: str | None = None) -> list[IPNetwork]:
    """Route each of ``nets`` out of device ``name``; returns those added (to
    :func:`remove_routes` later). One that already leaves through ``name`` is taken as given
    and left out; one through another device is an error (:func:`link.add_route`'s), and
    then none stays added."""
    present = set(link.routes(name, netns=netns))
    added: list[IPNetwork] = []
    try:
        for net in nets:
            if net not in present:
                link.add_route(net, name, netns=netns)
                added.append(net)
                present.add(net)
    except BaseException:
        remove_routes(added, name, netns=netns)  # all or nothing
        raise
    return added


def remove_routes(nets: Iterable[IPNetwork], name: str, *, netns: str | None = None) -> None:
    """Remove routes :func:`add_routes` added through ``name``, those still there (a device
    that is gone took its routes with it)."""
    from pyroute2.netlink.exceptions import NetlinkError

    nets = list(nets)
    if not nets:
        return
    with link._ipr(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return
        for net in nets:
            try:
                ipr.route("del", dst=str(net), oif=int(found[0]), family=AF[net.version])
            except NetlinkError as exc:
                if exc.code not in (errno.ESRCH, errno.ENODEV, errno.ENOENT):
                    raise link._fail(exc, f"removing the route {net} via {name}") from None
