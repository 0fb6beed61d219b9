"""A configuration file as the UAPI's ``set=1`` request, as ``wg setconf`` sends it, and
the request that turns one file's peers into another's without touching the sessions of
the peers that stay, as ``wg syncconf`` does (``simpletun up``'s SIGHUP).

Pure: host names in endpoints are resolved by the ``resolve`` callable the caller passes
(the UAPI takes addresses only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..control.uapi import DeviceSet, PeerSet, format_endpoint
from ..wireguard import keys
from .wgconf import Config, Peer

#: (host or name, port) -> (address, port)
Resolve = Callable[[str, int], tuple[str, int]]

ZERO_KEY = bytes(32)


def peer_set(peer: Peer, resolve: Resolve, *, endpoint: bool = True) -> PeerSet:
    """``peer`` whole: its allowed IPs replace the old ones, an absent preshared key or
    keepalive clears one set before; ``endpoint`` False leaves the peer's current one
    (learned by roaming) alone."""
    return PeerSet(
        public_key=peer.public_key,
        preshared_key=peer.preshared_key if peer.preshared_key is not None else ZERO_KEY,
        endpoint=resolve(*peer.endpoint) if endpoint and peer.endpoint is not None else None,
        persistent_keepalive=peer.persistent_keepalive or 0,
        replace_allowed_ips=True,
        allowed_ips=list(peer.allowed_ips))


def device_set(config: Config, resolve: Resolve, *, fwmark: int | None = None) -> DeviceSet:
    """Everything ``config`` says to the engine, peers replacing any there were. The listen
    port is not in it (the caller binds the socket); ``fwmark`` overrides the file's (a
    full tunnel's policy routing picks one)."""
    it = config.interface
    return DeviceSet(
        private_key=keys.clamp(it.private_key) if it.private_key is not None else None,
        fwmark=fwmark if fwmark is not None else it.fwmark,
        replace_peers=True,
        peers=[peer_set(p, resolve) for p in config.peers])


def _same(a: Peer, b: Peer) -> bool:
    return replace(a, line=0) == replace(b, line=0)


def sync(old: Config, new: Config, resolve: Resolve) -> DeviceSet:
    """The request that makes ``old``'s peers ``new``'s: peers gone are removed, new and
    changed ones set whole (an endpoint only where the file changed it, so a roamed peer
    stays where it is), unchanged ones not mentioned: their sessions go on."""
    before = {p.public_key: p for p in old.peers}
    after = {p.public_key for p in new.peers}
    peers = [PeerSet(public_key=k, remove=True) for k in before if k not in after]
    for p in new.peers:
        was = before.get(p.public_key)
        if was is None or not _same(was, p):
            peers.append(peer_set(p, resolve,
                                  endpoint=was is None or was.endpoint != p.endpoint))
    return DeviceSet(peers=peers)


def changed_interface(old: Config, new: Config) -> list[str]:
    """The [Interface] keys whose change a reload does not apply (they need a restart)."""
    a, b = old.interface, new.interface
    names = {"private_key": "PrivateKey", "listen_port": "ListenPort", "fwmark": "FwMark",
             "addresses": "Address", "dns": "DNS", "dns_search": "DNS", "mtu": "MTU",
             "table": "Table", "transport": "Transport", "tap": "Tap", "workers": "Workers",
             "wire": "Wire", "user": "User", "group": "Group", "metrics": "Metrics"}
    return list(dict.fromkeys(key for attr, key in names.items()
                              if getattr(a, attr) != getattr(b, attr)))


def format_set(request: DeviceSet) -> str:
    """The text of ``request``, ``set=1`` to the blank line, as ``wg`` writes it (what
    :func:`simpletun.control.uapi.parse_set` reads back)."""
    out = ["set=1"]
    if request.private_key is not None:
        out.append(f"private_key={request.private_key.hex()}")
    if request.listen_port is not None:
        out.append(f"listen_port={request.listen_port}")
    if request.fwmark is not None:
        out.append(f"fwmark={request.fwmark}")
    if request.replace_peers:
        out.append("replace_peers=true")
    for p in request.peers:
        out.append(f"public_key={p.public_key.hex()}")
        if p.remove:
            out.append("remove=true")
            continue
        if p.update_only:
            out.append("update_only=true")
        if p.preshared_key is not None:
            out.append(f"preshared_key={p.preshared_key.hex()}")
        if p.endpoint is not None:
            out.append(f"endpoint={format_endpoint(p.endpoint)}")
        if p.persistent_keepalive is not None:
            out.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        if p.replace_allowed_ips:
            out.append("replace_allowed_ips=true")
        out.extend(f"allowed_ip={n}" for n in p.allowed_ips)
    return "\n".join(out) + "\n\n"


__all__ = ["Resolve", "changed_interface", "device_set", "format_set", "peer_set", "sync"]
