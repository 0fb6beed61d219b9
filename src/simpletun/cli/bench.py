"""``simpletun bench``: the tunnel's cost against the bare link, in one run."""

from __future__ import annotations

import json
import sys

import click

from ..lab import bench


def _ints(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers separated by commas, e.g. 1,4") from None
    if not out or min(out) < 1:
        raise click.BadParameter("stream counts must be 1 or more")
    return out


def _modes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    modes = [m for m in value.split(",") if m]
    for m in modes:
        if m not in bench.MODE_NAMES:
            raise click.BadParameter(f"unknown mode {m!r}: choose from "
                                     f"{', '.join(bench.MODE_NAMES)}")
    return modes


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[Kbench: {message}")
    else:
        sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


@click.command("bench")
@click.option("--modes", default=",".join(bench.MODE_NAMES), show_default=True,
              callback=_modes,
              help="Comma-separated modes to measure; 'bare' is the ceiling the others are "
                   "compared with; 'wg' and 'wireguard-go' are WireGuard with simpletun-wg "
                   "or wireguard-go on both sides (skipped, with the reason, when a tool "
                   "they need is missing).")
@click.option("--streams", default="1,4", show_default=True, callback=_ints,
              help="Comma-separated numbers of parallel TCP streams.")
@click.option("--seconds", type=click.FloatRange(0.5, 600), default=10, show_default=True,
              help="Length of each throughput run.")
@click.option("--pings", type=click.IntRange(5, 10000), default=100, show_default=True,
              help="Pings per mode for the RTT percentiles.")
@click.option("--tool", type=click.Choice(["auto", "iperf3", "builtin"]), default="auto",
              show_default=True, help="Traffic generator: iperf3 if installed, else built in.")
@click.option("--breakdown", is_flag=True,
              help="Also time each pass of the tunnel's loop during the pings (device read "
                   "-> socket send, socket receive -> device write: system calls and Python, "
                   "in us) in the modes that run the WireGuard engine, and print where one "
                   "round trip goes.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def command(modes: list[str], streams: list[int], seconds: float, pings: int, tool: str,
            breakdown: bool, as_json: bool) -> None:
    """Measure the bare veth link and each tunnel mode, one after the other, each on fresh
    namespaces: ping RTT p50/p99, TCP throughput, CPU seconds per GB and peak RSS of the
    tunnel processes, and every figure as a ratio to the bare link. A mode whose tool is not
    installed is skipped with a one-line reason. Needs root."""
    report = bench.run(modes=modes, streams=streams, seconds=seconds, pings=pings, tool=tool,
                       progress=_progress, breakdown=breakdown)
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(report["table"])
