"""``simpletun load``: many WireGuard peers against one simpletun-wg server, as a benchmark."""

from __future__ import annotations

import json
import sys

import click

from ..lab import load


def _progress(message: str) -> None:
    sys.stderr.write(f"load: {message}\n")
    sys.stderr.flush()


@click.command("load")
@click.option("--peers", type=int, default=load.DEFAULT_PEERS, show_default=True,
              metavar="N", help=f"Peers driven through a handshake and a ping each "
                                f"(1..{load.MAX_PEERS}; one UDP socket each).")
@click.option("--setconf-peers", type=int, default=None, metavar="M",
              help="Peers configured on the server with one 'wg setconf' (at least --peers, "
                   f"at most {load.MAX_SETCONF_PEERS}; default: --peers). The rest only "
                   "cost memory and routing entries.")
@click.option("--rate", type=float, default=load.DEFAULT_RATE, show_default=True,
              metavar="PER_SECOND",
              help="Peers starting their handshake per second; 0: all at once (a storm: "
                   "past the server's load threshold peers get cookie replies and come "
                   "through on their 5 s retry, as real WireGuard peers do).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=load.DEFAULT_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="Give up on the peers not through after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def command(peers: int, setconf_peers: int | None, rate: float, timeout: float,
            as_json: bool, quiet: bool) -> int:
    """Stand up one simpletun-wg server and PEERS WireGuard initiators (each its own key
    and UDP port, in a second namespace), complete every handshake and move one ping each
    way per peer. Reports the 'wg setconf' time, handshakes per second, the time until the
    last peer is through, the server's RSS per configured peer and the allowed-IPs lookup
    time at 1 and at M peers. Needs root; everything is torn down on exit.

    \b
    The full run:  simpletun load --peers 1000 --setconf-peers 10000
    Exit status 0 when every peer got through, 1 otherwise."""
    report = load.run(peers=peers, setconf_peers=setconf_peers, rate=rate, timeout=timeout,
                      progress=None if quiet else _progress)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    return 0 if report.ok else 1
