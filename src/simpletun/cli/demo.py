"""``simpletun demo``: a tunnel between two throw-away hosts, proven and measured."""

from __future__ import annotations

import click

from ..lab import demo


@click.command("demo")
@click.option("-a", "--tap", is_flag=True, help="Run the tunnel in tap mode.")
@click.option("--megabytes", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Size of the TCP transfer.")
def command(tap: bool, megabytes: int) -> int:
    """Build two network namespaces joined by veth, run a simpletun server in one and a
    client in the other, ping and copy data through the tunnel and over the bare link, print
    what it costs, and remove everything (also on Ctrl-C or failure). Needs root."""
    return 0 if demo.run(click.echo, tap=tap, megabytes=megabytes) else 1
