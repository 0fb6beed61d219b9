"""The ``simpletun`` command. One module per subcommand; each turns flags into library
calls. Every :class:`~simpletun.errors.SimpletunError` becomes one line on stderr and a
non-zero exit status, never a traceback."""

from __future__ import annotations

import errno
import sys
from typing import Any

import click

from ..errors import SimpletunError
from ..service import logs
from ..transport import tcp
from ..tunnel.stream import DEAD_PEER_TIMEOUT, KEEPALIVE_INTERVAL
from . import (
    bench,
    completion,
    demo,
    device,
    dump,
    keys,
    manpage,
    respond,
    selftest,
    show,
    tunnel,
    up,
)
from . import load as load_command

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT, invoke_without_command=True,
             options_metavar="[-i IFACE (-s | -c SERVER) [-p PORT] [-u | -a] [-d] ...]")
@click.option("-i", "--interface", "iface", metavar="IFACE",
              shell_complete=completion.interfaces,
              help="tun/tap interface to use (created if it does not exist).")
@click.option("-s", "--server", is_flag=True, help="Server mode: wait for a client.")
@click.option("-c", "--client", metavar="SERVER",
              help="Client mode: connect to SERVER (address, host:port or [v6addr]:port).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=None,
              help=f"TCP or UDP port to listen on or connect to (default {tcp.DEFAULT_PORT}; "
                   "not used by -t icmp).")
@click.option("-u", "--tun", "tun", is_flag=True, help="Use a tun device: IP packets (default).")
@click.option("-a", "--tap", "tap", is_flag=True, help="Use a tap device: Ethernet frames.")
@click.option("-d", "--debug", is_flag=True, help="Print a line per packet.")
@click.option("--address", "addresses", multiple=True, metavar="CIDR",
              help="Add an address with its prefix (10.0.0.1/24, fd00::1/64) to the interface "
                   "and bring it up; repeatable. Without it (and without --route) the device "
                   "is left as it is, a new one down, as OpenVPN does without --ifconfig: "
                   "configure it yourself (ip addr, ip link set up).")
@click.option("--mtu", type=click.IntRange(68, 65535),
              help="Set the interface MTU: 68..65535 on tun, 68..65521 on tap; at most what "
                   "the transport carries (UDP over IPv4 65498, ICMP over IPv4 65492; a "
                   "larger MTU is refused).")
@click.option("--route", "routes", multiple=True, metavar="NET",
              help="Route NET through the tunnel; repeatable. 'default' (or 0.0.0.0/0; "
                   "'default6' or ::/0) makes a full tunnel, installed as two halves "
                   "(0.0.0.0/1 + 128.0.0.0/1) over the host's default route, as OpenVPN's "
                   "redirect-gateway def1 does; a client whose routes cover the server keeps "
                   "a host route to it through the underlay until exit.")
@click.option("--mac", metavar="MAC",
              help="Tap (-a): set the device's MAC address, e.g. 02:53:54:00:00:01.")
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
@click.option("-k", "--key", "key_file", metavar="FILE",
              help="Encrypt: this side's WireGuard private key, a file as 'simpletun genkey' "
                   "(or 'wg genkey') writes it. The tunnel then runs the WireGuard protocol "
                   "over the chosen -t, and 'wg show' lists it.")
@click.option("-P", "--peer", "peer_specs", multiple=True, metavar="KEY[:NETS]",
              help="Encrypt: the other side's public key (base64, or a file holding it), "
                   "and after a colon the networks it may send from and that route to it "
                   "(10.0.0.2/32,fd00::2/128; default: everything when there is one peer). "
                   "A server takes it once per client; only these keys get an answer.")
@click.option("--handshake-timeout", "handshake_wait", type=click.FloatRange(0.5, 3600),
              metavar="SECONDS",
              help="Encrypted client: give up with one line when no session came up within "
                   "this long (default 15; with --reconnect: say so once and keep trying).")
@click.option("-t", "--transport", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp",
              show_default=True,
              help="Underlay: tcp (plaintext and classic-compatible without --key; WireGuard "
                   "messages behind a 2-byte length with it); udp (plain WireGuard: works "
                   "with wireguard-go; default MTU 1420); icmp (WireGuard messages in echo "
                   "requests and replies, for networks that pass only pings; default MTU "
                   "1408; no port; the server turns the kernel's echo replies off while it "
                   "runs and answers pings itself). udp and icmp need --key and --peer.")
@click.option("--workers", "worker_count", type=click.IntRange(1, 64), metavar="N",
              help="Processes (and device queues), so flows spread over cores. Plaintext: each "
                   "with its own connection; default one per CPU, at most 8 (1 with "
                   "--classic). With --key (-t udp, tun): one interface, one port, each "
                   "peer's session received by one of them; default 1, at most 8.")
@click.option("--keepalive", type=click.FloatRange(0), default=KEEPALIVE_INTERVAL,
              show_default=True, metavar="SECONDS",
              help="Native wire: send a keepalive after this long without traffic; encrypted "
                   "client: the persistent keepalive (0: off).")
@click.option("--peer-timeout", type=click.FloatRange(0), default=DEAD_PEER_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="Native wire: drop the peer after this long without hearing from it (0: "
                   "never; TCP's own timeouts still apply).")
@click.option("--metrics", metavar="ADDR:PORT",
              help="Serve Prometheus metrics of this tunnel over HTTP at ADDR:PORT "
                   "(127.0.0.1:9586, [::1]:9586); off by default.")
@click.option("-q", "--quiet", is_flag=True,
              help="Any command: only warnings and errors on stderr.")
@click.option("-v", "--verbose", "verbosity", count=True,
              help="Any command: debug lines too (repeatable).")
@click.option("--log-json", is_flag=True,
              help="Any command: log lines as JSON objects, one per line ({\"time\", "
                   "\"level\", \"message\"}).")
@click.version_option(None, "-V", "--version", package_name="simpletun",
                      message="simpletun %(version)s")
@click.pass_context
def cli(ctx: click.Context, iface: str | None, server: bool, client: str | None, port: int,
        tun: bool, tap: bool, debug: bool, addresses: tuple[str, ...], mtu: int | None,
        routes: tuple[str, ...], mac: str | None, once: bool, reconnect: bool,
        no_offload: bool, classic_wire: bool, worker_count: int | None, keepalive: float,
        peer_timeout: float, transport: str, key_file: str | None,
        peer_specs: tuple[str, ...], handshake_wait: float | None, metrics: str | None,
        quiet: bool, verbosity: int, log_json: bool) -> int | None:
    """A tun/tap tunnel over TCP, compatible with the classic simpletun, and tools for tun/tap
    devices.

    \b
    Tunnel:  simpletun -i tun0 -s --address 10.0.0.1/24            (server)
             simpletun -i tun0 -c 192.0.2.1 --address 10.0.0.2/24  (client)
    Encrypted (any -t): add -k server.key -P client.pub on the server and
             -k client.key -P server.pub on the client.

    Before a command, -q/-v/--log-json set how every command logs:
    simpletun -v up wg0.
    """
    if quiet and verbosity:
        raise click.UsageError("-q (quiet) and -v (verbose) do not go together: choose one")
    logs.setup(-1 if quiet else verbosity, json=log_json)
    if ctx.invoked_subcommand is not None:
        if iface or server or client or metrics:
            raise click.UsageError("the tunnel flags (-i, -s, -c, --metrics) do not go with a "
                                   "command")
        return None
    if not (iface or server or client):
        click.echo(ctx.get_help())
        return 0
    if tun and tap:
        raise click.UsageError("-u (tun) and -a (tap) do not go together: choose one")
    # --metrics: passed only when given, so this works before and after run() takes it
    extra: dict[str, Any] = {"metrics": metrics} if metrics is not None else {}
    return tunnel.run(iface=iface, server=server, client=client, port=port, tap=tap, mac=mac,
                      debug=debug, addresses=addresses, mtu=mtu, routes=routes, once=once,
                      reconnect=reconnect, classic_wire=classic_wire, offload=not no_offload,
                      worker_count=worker_count, keepalive=keepalive, peer_timeout=peer_timeout,
                      transport=transport, key_file=key_file, peer_specs=peer_specs,
                      handshake_wait=handshake_wait, **extra)


for command in (*device.commands, dump.command, respond.command, demo.command,
                bench.command, selftest.command, *keys.commands, *up.commands,
                *show.commands, manpage.command, completion.command):
    cli.add_command(command)
cli.add_command(load_command.command)


def run(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        result = cli.main(args=argv, prog_name="simpletun", standalone_mode=False)
    except SimpletunError as exc:
        logs.error(f"simpletun: {exc}")
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        logs.error("simpletun: interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # last resort: still one line, with the system's reason
        name = errno.errorcode.get(exc.errno or 0, "error")
        logs.error(f"simpletun: {exc.strerror or exc} ({name})")
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
