"""``simpletun genkey``, ``pubkey`` and ``genpsk``: WireGuard keys in exactly the formats of
``wg genkey``, ``wg pubkey`` and ``wg genpsk`` (one base64 line); and ``wg-drops``, the
drop counters of a running simpletun-wg."""

from __future__ import annotations

import os
import stat
import sys

import click

from ..control import uapi_client
from ..errors import BadKey
from ..wireguard import keys

# wg's own words: it warns when the file its key goes to is readable by others
WORLD_ACCESSIBLE = ("Warning: writing to world accessible file.\n"
                    "Consider setting the umask to 077 and trying again.")
_STDIN_LIMIT = 4096  # a key is 44 characters; more than this is not a key


def _warn_if_world_accessible() -> None:
    """As wg does: stdout a regular file that others may read, write or run."""
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError):  # no real fd (captured output): nothing to say
        return
    if stat.S_ISREG(mode) and mode & stat.S_IRWXO:
        click.echo(WORLD_ACCESSIBLE, err=True)


@click.command("genkey")
def genkey() -> None:
    """Print a new WireGuard private key (base64), as 'wg genkey' does.

    \b
    simpletun genkey > private.key   (with umask 077: the key is a secret)
    """
    _warn_if_world_accessible()
    click.echo(keys.to_base64(keys.generate_private()))


@click.command("pubkey")
def pubkey() -> None:
    """Read a private key (base64) on stdin and print its public key, as 'wg pubkey' does.

    \b
    simpletun pubkey < private.key > public.key
    """
    data = sys.stdin.buffer.read(_STDIN_LIMIT + 1)
    try:
        text = data.strip(b" \t\n\r\v\f\0").decode("ascii")
        key = keys.from_base64(text)
    except (UnicodeDecodeError, BadKey):
        raise BadKey("pubkey: stdin is not a private key: expected 44 characters of base64, "
                     "as 'simpletun genkey' or 'wg genkey' prints") from None
    click.echo(keys.to_base64(keys.public_from_private(key)))


@click.command("genpsk")
def genpsk() -> None:
    """Print a new preshared key (base64), as 'wg genpsk' does."""
    _warn_if_world_accessible()
    click.echo(keys.to_base64(keys.generate_preshared()))




@click.command("wg-drops")
@click.argument("interface")
def wg_drops(interface: str) -> None:
    """What a running simpletun-wg INTERFACE dropped, by reason (what 'wg show' cannot
    show), and the cookie replies it sent under load.

    \b
    simpletun wg-drops wg0
    """
    counts = uapi_client.stats(interface)
    if not any(counts.values()):
        click.echo(f"{interface}: nothing dropped")
        return
    for reason, n in sorted(counts.items()):
        if n:
            click.echo(f"{reason:24} {n}")


commands = (genkey, pubkey, genpsk, wg_drops)
