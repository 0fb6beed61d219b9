"""``simpletun up`` and ``simpletun down``: a tunnel from a config file (wg-quick's format),
and ``simpletun service-unit``: the systemd unit that runs one."""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources

import click


@click.command("up")
@click.argument("tunnel", metavar="NAME|FILE")
@click.option("-f", "--foreground", is_flag=True,
              help="Stay in the foreground (systemd's simpletun@.service runs it so): the "
                   "tunnel runs until SIGTERM or SIGINT; SIGHUP reloads the file's peers.")
def up_command(tunnel: str, foreground: bool) -> int:
    """Bring up the tunnel of a config file, as wg-quick up does.

    NAME is /etc/simpletun/NAME.conf; a FILE's name without .conf names the interface. The
    file is wg-quick's ([Interface] PrivateKey, Address, ListenPort, MTU, DNS, Table,
    PreUp/PostUp/PreDown/PostDown, SaveConfig; [Peer] PublicKey, PresharedKey, AllowedIPs,
    Endpoint, PersistentKeepalive) plus simpletun's Transport, Tap, Workers, User, Group
    and Metrics. Everything is checked before anything changes; what is changed is kept in
    /run/simpletun/NAME.json, so that 'simpletun down NAME' undoes exactly that, even after
    a crash.
    """
    from ..service import up as service  # what a tunnel process need not carry

    return service.up(tunnel, foreground=foreground)


@click.command("down")
@click.argument("tunnel", metavar="NAME|FILE")
def down_command(tunnel: str) -> int:
    """Take down a tunnel 'simpletun up' brought up: PreDown, the tunnel stopped with its
    summary, every change it made undone (routes, rules, DNS, the device), PostDown. Works
    after the tunnel was killed too."""
    from ..service import up as service

    return service.down(tunnel)


@click.command("service-unit")
def unit_command() -> int:
    """Print the systemd unit simpletun@.service, for this simpletun.

    \b
    simpletun service-unit > /etc/systemd/system/simpletun@.service
    systemctl daemon-reload
    systemctl enable --now simpletun@wg0     # /etc/simpletun/wg0.conf
    systemctl reload simpletun@wg0           # peers re-read, sessions kept
    """
    click.echo(unit_text(), nl=False)
    return 0


def unit_text() -> str:
    """The shipped unit with ExecStart pointing at this installation's simpletun."""
    text = resources.files("simpletun.service").joinpath("simpletun@.service").read_text()
    program = shutil.which("simpletun") or os.path.join(os.path.dirname(sys.executable),
                                                         "simpletun")
    return text.replace("/usr/local/bin/simpletun", os.path.abspath(program))


commands: list[click.Command] = [up_command, down_command, unit_command]
