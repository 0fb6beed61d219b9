"""``simpletun demo``: a tunnel between two throw-away hosts, proven and measured."""

from __future__ import annotations

import click

from ..lab import demo


@click.command("demo")
@click.option("-a", "--tap", is_flag=True, help="Run the tunnel in tap mode.")
@click.option("--megabytes", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Size of the TCP transfer.")
@click.option("-t", "--transport", type=click.Choice(["udp", "tcp", "icmp"]), default="udp",
              show_default=True, help="What carries the encrypted tunnel.")
@click.option("--plaintext", is_flag=True,
              help="Run the unencrypted native wire over TCP instead.")
def command(tap: bool, megabytes: int, transport: str, plaintext: bool) -> int:
    """Build two network namespaces joined by veth, run a simpletun server in one and a
    client in the other (encrypted: WireGuard keys made for the demo), ping and copy data
    through the tunnel and over the bare link, print what it costs, and remove everything
    (also on Ctrl-C or failure). Needs root."""
    if plaintext and transport != "udp":
        raise click.UsageError("--plaintext is the native wire over TCP: drop -t")
    return 0 if demo.run(click.echo, tap=tap, megabytes=megabytes, transport=transport,
                         plaintext=plaintext) else 1
