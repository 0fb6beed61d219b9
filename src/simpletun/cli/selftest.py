"""``simpletun selftest``: prove on this machine that devices work end to end."""

from __future__ import annotations

import click

from ..lab import selftest


@click.command("selftest")
@click.option("--keep-going", is_flag=True, help="Run every check even after one fails.")
def command(keep_going: bool) -> int:
    """Create a tun and a tap device in a throw-away network namespace, ping through each
    over IPv4 and IPv6 with the responder, capture the traffic, and remove everything.
    Needs root."""
    ok = selftest.run(echo=click.echo, keep_going=keep_going)
    return 0 if ok else 1
