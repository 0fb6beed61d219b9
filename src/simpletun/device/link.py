"""Interface configuration over netlink (pyroute2): addresses, MTU, up/down, routes,
state and counters, optionally inside a named network namespace.

This is what ``ip addr``/``ip link``/``ip route`` do, without running ``ip``. Every
function takes ``netns=`` (a name under /run/netns, as ``ip netns`` makes them); ``None``
means the namespace this process is in.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import (
    BadAddress,
    BadMac,
    BadMtu,
    DeviceError,
    NoSuchDevice,
    NotTap,
    PermissionDenied,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

IFF_UP = 0x1
IFF_MULTICAST_BIT = 0x01  # in the first byte of a MAC address
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
#: What a device without an IFLA_INFO_KIND is, by its hardware type (ifi_type).
_HW_TYPES = {ARPHRD_ETHER: "Ethernet", ARPHRD_LOOPBACK: "loopback", ARPHRD_NONE: "raw IP",
             776: "IPv6-in-IPv4 tunnel", 778: "GRE tunnel", 768: "IP-in-IP tunnel",
             32: "InfiniBand", 519: "CAN"}
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
RT_TABLE_MAIN = 254
NETNS_DIR = "/run/netns"


@contextmanager
def _ipr(netns: str | None) -> Iterator[IPRoute]:
    # imported here, not at the top: pyroute2's package pulls in ~25 MB of modules, which a
    # long-running tunnel process should not carry for a few configuration calls
    from pyroute2 import IPRoute

    if netns is not None and not os.path.exists(os.path.join(NETNS_DIR, netns)):
        raise NoSuchDevice(f"no network namespace named {netns!r} (see: ip netns list)")
    try:
        ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
    except PermissionError:
        raise PermissionDenied("netlink needs CAP_NET_ADMIN for this: run as root") from None
    with ipr:
        yield ipr


def _index(ipr: IPRoute, name: str, netns: str | None) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        where = f" in network namespace {netns}" if netns else ""
        raise NoSuchDevice(f"no interface named {name}{where}")
    return int(found[0])


def _netlink(doing: str, call: Callable[[], Any], known: dict[int, str] | None = None) -> Any:
    """Run one netlink request; its error becomes one clear line (``known`` maps errno
    values to what they mean for this request)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return call()
    except NetlinkError as exc:
        if known and exc.code in known:
            raise BadAddress(f"{doing}: {known[exc.code]}") from None
        raise _fail(exc, doing) from None


def _fail(exc: Any, doing: str) -> Exception:
    code = exc.code
    if code == errno.EPERM or code == errno.EACCES:
        return PermissionDenied(f"{doing}: not permitted, needs CAP_NET_ADMIN: run as root")
    if code == errno.ENODEV:
        return NoSuchDevice(f"{doing}: no such device")
    reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
    return DeviceError(f"{doing}: {reason}")


def parse_interface(cidr: str) -> IPInterface:
    """``10.0.0.1/24`` or ``fd00::1/64`` (a bare address gets /32 or /128)."""
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError:
        raise BadAddress(
            f"bad address {cidr!r}: give an address with prefix, e.g. 10.0.0.1/24 or fd00::1/64"
        ) from None


def parse_network(net: str) -> IPNetwork:
    """``10.1.0.0/16``, ``fd01::/48``, a bare host address, or ``default``."""
    if net == "default":
        return ipaddress.IPv4Network("0.0.0.0/0")
    if net == "default6":
        return ipaddress.IPv6Network("::/0")
    try:
        return ipaddress.ip_network(net, strict=True)
    except ValueError as exc:
        raise BadAddress(f"bad network {net!r}: {exc}; e.g. 10.1.0.0/16 or fd01::/48") from None


# --- addresses ---------------------------------------------------------------------

def add_address(name: str, cidr: str | IPInterface, *, netns: str | None = None,
                nodad: bool = False) -> IPInterface:
    """Add an IPv4 or IPv6 address with prefix (``ip addr add``). ``nodad`` skips IPv6
    duplicate address detection, so the address is usable at once."""
    iface = parse_interface(cidr) if isinstance(cidr, str) else cidr
    doing = f"adding {iface} to {name}"
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        extra: dict[str, Any] = {}
        if iface.version == 6 and nodad:
            extra["flags"] = IFA_F_NODAD
        _netlink(doing, lambda: ipr.addr("add", index=idx, address=str(iface.ip),
                                          prefixlen=iface.network.prefixlen, **extra),
                 {errno.EEXIST: f"{name} already has that address"})
    return iface


def del_address(name: str, cidr: str | IPInterface, *, netns: str | None = None) -> None:
    iface = parse_interface(cidr) if isinstance(cidr, str) else cidr
    doing = f"removing {iface} from {name}"
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        _netlink(doing, lambda: ipr.addr("del", index=idx, address=str(iface.ip),
                                          prefixlen=iface.network.prefixlen),
                 {errno.EADDRNOTAVAIL: f"{name} does not have that address"})


def addresses(name: str, *, netns: str | None = None) -> list[IPInterface]:
    """The IPv4 and IPv6 addresses of ``name``, with their prefix lengths."""
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        out: list[IPInterface] = []
        for msg in ipr.get_addr(index=idx):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                out.append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
        return out


def wait_usable(name: str, *, netns: str | None = None, timeout: float = 5.0) -> None:
    """Wait until no IPv6 address of ``name`` is still in duplicate address detection."""
    deadline = time.monotonic() + timeout
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        while True:
            tentative = [m for m in ipr.get_addr(index=idx, family=10)
                         if (m.get_attr("IFA_FLAGS") or m["flags"]) & IFA_F_TENTATIVE]
            if not tentative:
                return
            if time.monotonic() > deadline:
                raise DeviceError(f"{name}: IPv6 addresses still tentative after {timeout} s")
            time.sleep(0.05)


# --- link state ----------------------------------------------------------------------

def _set(name: str, netns: str | None, doing: str, **attrs: Any) -> None:
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        _netlink(doing, lambda: ipr.link("set", index=idx, **attrs))


def set_up(name: str, *, netns: str | None = None) -> None:
    _set(name, netns, f"bringing {name} up", state="up")


def set_down(name: str, *, netns: str | None = None) -> None:
    _set(name, netns, f"bringing {name} down", state="down")


def set_mtu(name: str, mtu: int, *, netns: str | None = None) -> None:
    """Set the MTU (``ip link set NAME mtu MTU``). BadMtu, naming the device's own range
    (tun 68..65535, tap 68..65521), if the device cannot take it. Below 1280 the kernel
    turns IPv6 off on the device and drops its IPv6 addresses."""
    st = state(name, netns=netns)
    low, high = st.mtu_range
    if not low <= mtu <= high:
        raise BadMtu(f"MTU {mtu} is out of range for {name} ({describe(st)}): "
                     f"use {low}..{high}")
    _set(name, netns, f"setting the MTU of {name} to {mtu}", mtu=mtu)


def parse_mac(mac: str | bytes) -> bytes:
    """Six bytes from ``02:53:54:00:00:01`` (``-`` works too) or from 6 bytes; BadMac if
    it is malformed, a multicast (or broadcast) address, or all zeros."""
    if isinstance(mac, str):
        parts = mac.replace("-", ":").split(":")
        if len(parts) != 6 or not all(
                1 <= len(p) <= 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                for p in parts):
            raise BadMac(f"bad MAC address {mac!r}: give six hex bytes, e.g. 02:53:54:00:00:01")
        raw = bytes(int(p, 16) for p in parts)
    else:
        raw = bytes(mac)
        if len(raw) != 6:
            raise BadMac(f"bad MAC address {raw.hex()!r}: it must be 6 bytes, not {len(raw)}")
    shown = ":".join(f"{b:02x}" for b in raw)
    if raw[0] & IFF_MULTICAST_BIT:
        raise BadMac(f"{shown} is a multicast address: a device needs a unicast one (first "
                     "byte even, e.g. 02:53:54:00:00:01)")
    if raw == bytes(6):
        raise BadMac(f"{shown} is not a usable address: give a unicast one, "
                     "e.g. 02:53:54:00:00:01")
    return raw


def set_mac(name: str, mac: str | bytes, *, netns: str | None = None) -> str:
    """Set the MAC address of a tap (or other Ethernet) device, as SIOCSIFHWADDR or
    ``ip link set NAME address MAC`` do; returns it as text. BadMac if ``mac`` is malformed
    or multicast, NotTap if ``name`` has no MAC address (a tun device, loopback...)."""
    raw = parse_mac(mac)
    shown = ":".join(f"{b:02x}" for b in raw)
    st = state(name, netns=netns)
    if st.hw_type != ARPHRD_ETHER:
        what = describe(st)
        hint = " (layer 3): only a tap device has one" if st.tun is not None else ""
        raise NotTap(f"{name} is a {what} device and has no MAC address{hint}")
    _set(name, netns, f"setting the MAC address of {name} to {shown}", address=shown)
    return shown


@dataclass(frozen=True)
class TunInfo:
    """What the kernel says of a tun/tap device (IFLA_INFO_DATA of kind ``tun``)."""

    tap: bool
    pi: bool
    vnet_hdr: bool
    persist: bool
    multi_queue: bool
    queues: int
    owner: int | None
    group: int | None


@dataclass(frozen=True)
class LinkState:
    name: str
    index: int
    up: bool
    operstate: str
    mtu: int
    kind: str | None
    mac: str | None
    counters: dict[str, int] = field(default_factory=dict)
    tun: TunInfo | None = None
    hw_type: int = ARPHRD_NONE  # ifi_type: ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE (tun)...
    min_mtu: int = 0  # the device's own MTU range (0: the kernel does not say)
    max_mtu: int = 0

    @property
    def mtu_range(self) -> tuple[int, int]:
        """The MTUs this device takes: tun 68..65535, tap 68..65521, veth 68..65535..."""
        return (max(self.min_mtu, 68), self.max_mtu or 65535)


def _tun_info(msg: Any) -> TunInfo | None:
    info = msg.get_attr("IFLA_LINKINFO")
    if not info or info.get_attr("IFLA_INFO_KIND") != "tun":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    get = data.get_attr if data else (lambda _k: None)
    return TunInfo(
        tap=get("IFLA_TUN_TYPE") == 2,
        pi=bool(get("IFLA_TUN_PI")),
        vnet_hdr=bool(get("IFLA_TUN_VNET_HDR")),
        persist=bool(get("IFLA_TUN_PERSIST")),
        multi_queue=bool(get("IFLA_TUN_MULTI_QUEUE")),
        queues=int(get("IFLA_TUN_NUM_QUEUES") or 0),
        owner=get("IFLA_TUN_OWNER"),
        group=get("IFLA_TUN_GROUP"),
    )


def _get_link(name: str, netns: str | None) -> Any:
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        return ipr.get_links(idx)[0]


def state(name: str, *, netns: str | None = None) -> LinkState:
    """Up/down, operational state, MTU, kind, MAC, counters and tun details of ``name``."""
    msg = _get_link(name, netns)
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info else None
    stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS") or {}
    return LinkState(
        name=name,
        index=msg["index"],
        up=bool(msg["flags"] & IFF_UP),
        operstate=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
        mtu=msg.get_attr("IFLA_MTU"),
        kind=kind,
        mac=msg.get_attr("IFLA_ADDRESS"),
        counters={k: int(v) for k, v in dict(stats).items()},
        tun=_tun_info(msg),
        hw_type=int(msg["ifi_type"]),
        min_mtu=int(msg.get_attr("IFLA_MIN_MTU") or 0),
        max_mtu=int(msg.get_attr("IFLA_MAX_MTU") or 0),
    )


def describe(st: LinkState) -> str:
    """What kind of device this is, in a word or two: ``tun``, ``tap``, ``multi-queue
    tap``, ``veth``, ``bridge``, ``loopback``, ``Ethernet``..."""
    if st.tun is not None:
        return f"{'multi-queue ' if st.tun.multi_queue else ''}{'tap' if st.tun.tap else 'tun'}"
    if st.kind:
        return st.kind
    return _HW_TYPES.get(st.hw_type, f"hardware type {st.hw_type}")


def kind_of(name: str, *, netns: str | None = None) -> str | None:
    """:func:`describe` of ``name``, or None if there is no such device."""
    try:
        return describe(state(name, netns=netns))
    except NoSuchDevice:
        return None


def exists(name: str, *, netns: str | None = None) -> bool:
    with _ipr(netns) as ipr:
        return bool(ipr.link_lookup(ifname=name))


def tun_info(name: str, *, netns: str | None = None) -> TunInfo | None:
    """The tun/tap details of ``name``, or None if it is some other kind of link."""
    return _tun_info(_get_link(name, netns))


def link_kind(name: str, *, netns: str | None = None) -> str | None:
    """``tun``, ``veth``, ``bridge``...; None for a device with no kind (``lo``, eth)."""
    try:
        return state(name, netns=netns).kind
    except NoSuchDevice:
        return None


def add_bridge(name: str, *, netns: str | None = None) -> None:
    """Create a Linux bridge (``ip link add NAME type bridge``) and bring it up."""
    with _ipr(netns) as ipr:
        _netlink(f"creating bridge {name}", lambda: ipr.link("add", ifname=name, kind="bridge"))
    set_up(name, netns=netns)


def set_master(name: str, bridge: str, *, netns: str | None = None) -> None:
    """Make ``name`` a port of ``bridge`` (``ip link set NAME master BRIDGE``)."""
    with _ipr(netns) as ipr:
        master = _index(ipr, bridge, netns)
    _set(name, netns, f"adding {name} to {bridge}", master=master)


# --- routes --------------------------------------------------------------------------

def _route(cmd: str, net: str | IPNetwork, name: str, via: str | None,
           netns: str | None, metric: int | None) -> None:
    network = parse_network(net) if isinstance(net, str) else net
    doing = f"{'adding' if cmd == 'add' else 'removing'} route {network} via {name}"
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        attrs: dict[str, Any] = {"dst": str(network), "oif": idx}
        if network.version == 6:
            attrs["family"] = 10
        if via:
            attrs["gateway"] = via
        if metric is not None:
            attrs["priority"] = metric
        _netlink(doing, lambda: ipr.route(cmd, **attrs),
                 {errno.EEXIST: "that route exists already", errno.ESRCH: "no such route",
                  errno.ENETUNREACH: f"the gateway is not reachable on {name}"})


def add_route(net: str | IPNetwork, name: str, *, via: str | None = None,
              netns: str | None = None, metric: int | None = None) -> None:
    """Route ``net`` out of interface ``name`` (``ip route add NET dev NAME [via GW]``)."""
    _route("add", net, name, via, netns, metric)


def del_route(net: str | IPNetwork, name: str, *, via: str | None = None,
              netns: str | None = None, metric: int | None = None) -> None:
    _route("del", net, name, via, netns, metric)


def routes(name: str, *, netns: str | None = None) -> list[IPNetwork]:
    """Destinations in the main table that leave through ``name``."""
    with _ipr(netns) as ipr:
        idx = _index(ipr, name, netns)
        out: list[IPNetwork] = []
        for family in (2, 10):
            for msg in ipr.get_routes(family=family, oif=idx, table=RT_TABLE_MAIN):
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                out.append(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False))
        return out
