"""``simpletun demo``: build two hosts, run a tunnel between them (encrypted by default:
WireGuard over UDP; or over TCP or ICMP; or the plaintext native wire), prove it works and
show what it costs, then remove everything (also on Ctrl-C or failure)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

from ..errors import SimpletunError
from .netns import Lab, PingResult
from .testbed import OVERLAY, UNDERLAY, Testbed


def _rtt(p: PingResult) -> str:
    if not p.rtts_ms:
        return f"{p.received}/{p.sent} replies"
    p50 = statistics.median(p.rtts_ms)
    return (f"{p.received}/{p.sent} replies, rtt p50 {p50 * 1000:.0f} us, "
            f"avg {p.avg_ms * 1000:.0f} us")


def _shown(bed: Testbed, args: list[str]) -> list[str]:
    """A command line as a user would type it: key files by their plain names."""
    names = {bed.server_key: "server.key", bed.client_key: "client.key"} if bed.keys else {}
    return [names.get(a, a) for a in args]


def run(echo: Callable[[str], None] = print, *, tap: bool = False, megabytes: int = 16,
        pings: int = 20, transport: str = "udp", plaintext: bool = False) -> bool:
    """``transport``: what carries the encrypted tunnel; ``plaintext``: the native wire over
    TCP instead, unencrypted."""
    if os.geteuid() != 0:
        raise SimpletunError("the demo needs root (network namespaces): run it with sudo")
    size = megabytes * 1024 * 1024
    with Lab("demo") as lab:
        bed = Testbed(lab, tap=tap, keys=not plaintext)
        extra = [] if plaintext else ["-t", transport]
        echo(f"hosts: {bed.server.name} ({UNDERLAY[0]}) and {bed.client.name} ({UNDERLAY[1]}),"
             " joined by veth")
        if not plaintext:
            echo("keys: simpletun genkey > server.key; simpletun pubkey < server.key "
                 f"(= {bed.server_public}); the same for the client "
                 f"(= {bed.client_public})")
        echo(f"server: simpletun {' '.join(_shown(bed, bed.server_command(*extra)))}")
        echo(f"client: simpletun {' '.join(_shown(bed, bed.client_command(*extra)))}")
        bed.start(server_extra=extra, client_extra=extra)
        how = "TCP, plaintext" if plaintext else f"{transport.upper()}, encrypted (WireGuard)"
        echo(f"tunnel up: {OVERLAY[0]} <-> {OVERLAY[1]} over {how}, server "
             f"{bed.server_underlay}{'' if transport == 'icmp' else f':{bed.port}'} "
             f"({'tap' if tap else 'tun'})")
        bare = bed.client.ping(bed.server_underlay, count=pings, interval=0.05)
        tunneled = bed.client.ping(bed.server_overlay, count=pings, interval=0.05)
        tunneled6 = bed.client.ping(bed.server_overlay6, count=pings, interval=0.05)
        echo(f"ping over the bare veth   {bed.server_underlay:>12}: {_rtt(bare)}")
        echo(f"ping through the tunnel   {bed.server_overlay:>12}: {_rtt(tunneled)}")
        echo(f"ping6 through the tunnel  {bed.server_overlay6:>12}: {_rtt(tunneled6)}")
        ok = bare.ok and tunneled.ok and tunneled6.ok
        if tunneled.rtts_ms and bare.rtts_ms:
            added = statistics.median(tunneled.rtts_ms) - statistics.median(bare.rtts_ms)
            echo(f"  the tunnel adds {added * 1000:.0f} us to the median round trip")
        _, _, bare_s = bed.transfer(size, to=bed.server_underlay)
        _, digest, tun_s = bed.transfer(size)
        bare_rate, tun_rate = size / bare_s / 1e6, size / tun_s / 1e6
        echo(f"TCP {megabytes} MiB over the bare veth : {bare_rate:8.1f} MB/s, sha256 matches")
        echo(f"TCP {megabytes} MiB through the tunnel: {tun_rate:8.1f} MB/s, sha256 matches "
             f"({digest[:16]}...), {tun_rate / bare_rate:.1%} of the bare link")
        if not plaintext:
            shown = bed.server.run(["wg", "show", bed.iface])
            if shown.returncode == 0:
                echo("the server's 'wg show':")
                for line in shown.stdout.rstrip().splitlines():
                    echo(f"  {line}")
        assert bed.server_proc is not None and bed.client_proc is not None
        bed.client_proc.stop()
        bed.server_proc.stop()
        for line in bed.server_proc.lines[-2:]:
            echo(f"  server said: {line.split(' ', 2)[-1]}")
    echo("removed: both namespaces, the veth pair and the tunnel devices")
    echo("demo passed" if ok else "demo FAILED: some pings were not answered")
    return ok
