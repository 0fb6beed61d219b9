"""The ``simpletun`` command. One module per subcommand; each turns flags into library
calls. Every :class:`~simpletun.errors.SimpletunError` becomes one line on stderr and a
non-zero exit status, never a traceback."""

from __future__ import annotations

import errno
import sys

import click

from ..errors import SimpletunError
from . import device, dump, respond, selftest

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="simpletun", message="simpletun %(version)s")
def cli() -> None:
    """Linux tun/tap devices: make and remove them, watch and answer their traffic."""


for command in (*device.commands, dump.command, respond.command, selftest.command):
    cli.add_command(command)


def run(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        result = cli.main(args=argv, prog_name="simpletun", standalone_mode=False)
    except SimpletunError as exc:
        click.echo(f"simpletun: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("simpletun: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # last resort: still one line, with the system's reason
        name = errno.errorcode.get(exc.errno or 0, "error")
        click.echo(f"simpletun: {exc.strerror or exc} ({name})", err=True)
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
