"""The ``simpletun`` command. One module per subcommand; each turns flags into library
calls. Every :class:`~simpletun.errors.SimpletunError` becomes one line on stderr and a
non-zero exit status, never a traceback."""

from __future__ import annotations

import errno
import sys

import click

from ..errors import SimpletunError
from ..transport import tcp
from ..tunnel.stream import DEAD_PEER_TIMEOUT, KEEPALIVE_INTERVAL
from . import bench, demo, device, dump, respond, selftest, tunnel

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT, invoke_without_command=True,
             options_metavar="[-i IFACE (-s | -c SERVER) [-p PORT] [-u | -a] [-d] ...]")
@click.option("-i", "--interface", "iface", metavar="IFACE",
              help="tun/tap interface to use (created if it does not exist).")
@click.option("-s", "--server", is_flag=True, help="Server mode: wait for a client.")
@click.option("-c", "--client", metavar="SERVER",
              help="Client mode: connect to SERVER (address, host:port or [v6addr]:port).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=tcp.DEFAULT_PORT,
              show_default=True, help="TCP port to listen on or connect to.")
@click.option("-u", "--tun", "tap", flag_value=False, default=False,
              help="Use a tun device: IP packets (default).")
@click.option("-a", "--tap", "tap", flag_value=True, help="Use a tap device: Ethernet frames.")
@click.option("-d", "--debug", is_flag=True, help="Print a line per packet.")
@click.option("--address", "addresses", multiple=True, metavar="CIDR",
              help="Add an address to the interface and bring it up; repeatable, v4 or v6.")
@click.option("--mtu", type=click.IntRange(68, 65535), help="Set the interface MTU.")
@click.option("--route", "routes", multiple=True, metavar="NET",
              help="Route NET through the tunnel; repeatable.")
@click.option("--once", is_flag=True, help="Server: exit when the first client leaves "
              "(the classic behaviour).")
@click.option("--reconnect", is_flag=True,
              help="Client: when the server goes away, keep retrying with backoff.")
@click.option("--no-offload", is_flag=True,
              help="Native wire without vnet_hdr super-packets (one packet per frame).")
@click.option("--classic", "classic_wire", is_flag=True,
              help="Speak only the classic wire (no handshake, no offloads). Without it a "
                   "client falls back to it by itself when the server does not answer the "
                   "handshake, and a server serves classic clients too.")
@click.option("-t", "--transport", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp",
              show_default=True,
              help="Underlay: tcp (classic-compatible); udp (one packet per datagram, "
                   "roaming; default MTU 1440 so an outer packet fits 1500 bytes); icmp "
                   "(packets in echo requests and replies, for networks that pass only "
                   "pings; default MTU 1432; no port; the server turns the kernel's echo "
                   "replies off while it runs and answers pings itself).")
@click.option("--workers", "worker_count", type=click.IntRange(1, 64), metavar="N",
              help="Processes (and device queues), each with its own connection, so flows "
                   "spread over cores; default: one per CPU, at most 8 (1 with --classic).")
@click.option("--keepalive", type=click.FloatRange(0), default=KEEPALIVE_INTERVAL,
              show_default=True, metavar="SECONDS",
              help="Native wire: send a keepalive after this long without traffic (0: off).")
@click.option("--peer-timeout", type=click.FloatRange(0), default=DEAD_PEER_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="Native wire: drop the peer after this long without hearing from it (0: "
                   "never; TCP's own timeouts still apply).")
@click.version_option(package_name="simpletun", message="simpletun %(version)s")
@click.pass_context
def cli(ctx: click.Context, iface: str | None, server: bool, client: str | None, port: int,
        tap: bool, debug: bool, addresses: tuple[str, ...], mtu: int | None,
        routes: tuple[str, ...], once: bool, reconnect: bool, no_offload: bool,
        classic_wire: bool, worker_count: int | None, keepalive: float,
        peer_timeout: float, transport: str) -> int | None:
    """A tun/tap tunnel over TCP, compatible with the classic simpletun, and tools for tun/tap
    devices.

    \b
    Tunnel:  simpletun -i tun0 -s --address 10.0.0.1/24            (server)
             simpletun -i tun0 -c 192.0.2.1 --address 10.0.0.2/24  (client)
    """
    if ctx.invoked_subcommand is not None:
        if iface or server or client:
            raise click.UsageError("the tunnel flags (-i, -s, -c) do not go with a command")
        return None
    if not (iface or server or client):
        click.echo(ctx.get_help())
        return 0
    return tunnel.run(iface=iface, server=server, client=client, port=port, tap=bool(tap),
                      debug=debug, addresses=addresses, mtu=mtu, routes=routes, once=once,
                      reconnect=reconnect, classic_wire=classic_wire, offload=not no_offload,
                      worker_count=worker_count, keepalive=keepalive, peer_timeout=peer_timeout,
                      transport=transport)


for command in (*device.commands, dump.command, respond.command, demo.command,
                bench.command, selftest.command):
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
