"""``simpletun-wg``: a drop-in for wireguard-go, with its command line:

    simpletun-wg [-f|--foreground] INTERFACE

creates the tun device INTERFACE (MTU 1420) and its UAPI socket
``/var/run/wireguard/INTERFACE.sock``, then (unless ``-f`` or ``WG_PROCESS_FOREGROUND=1``)
goes to the background once both are ready, so ``wg``, ``wg-quick`` (through
``WG_QUICK_USERSPACE_IMPLEMENTATION=simpletun-wg``) and anything else that drives
wireguard-go drive it unchanged. It stops on SIGINT/SIGTERM/SIGHUP/SIGQUIT or when the device
is deleted (``wg-quick down``, ``ip link del``), removing its socket.

Logs go to stderr in the foreground (``LOG_LEVEL=silent`` quiets them), nowhere in the
background, as wireguard-go's do."""

from __future__ import annotations

import os
import signal
import sys

from ..errors import SimpletunError
from ..signals import STOP_SIGNALS

USAGE = "usage: simpletun-wg [-f|--foreground] INTERFACE"
DEFAULT_MTU = 1420  # wireguard-go's
VERSION = "simpletun-wg (simpletun's WireGuard engine), UAPI protocol version 1"


class _Stop(Exception):
    pass


def _parse(argv: list[str]) -> tuple[bool, str] | int:
    foreground = False
    names: list[str] = []
    for arg in argv:
        if arg in ("-f", "--foreground"):
            foreground = True
        elif arg in ("-h", "--help"):
            print(USAGE)
            return 0
        elif arg in ("-v", "--version"):
            print(VERSION)
            return 0
        elif arg.startswith("-"):
            print(f"simpletun-wg: unknown option {arg}\n{USAGE}", file=sys.stderr)
            return 2
        else:
            names.append(arg)
    if len(names) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    return foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1", names[0]


def main(argv: list[str] | None = None) -> int:
    parsed = _parse(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):
        return parsed
    foreground, name = parsed
    quiet = os.environ.get("LOG_LEVEL", "").lower() in ("silent", "error")

    def log(line: str) -> None:
        if not quiet:
            print(f"simpletun-wg {name}: {line}", file=sys.stderr, flush=True)

    from ..device import isolate, link
    from ..device.tuntap import check_name, open_tun
    from ..wireguard.engine import Engine

    try:
        check_name(name, pattern_ok=False)
        dev = open_tun(name, vnet_hdr=True, blocking=False)
    except SimpletunError as exc:
        print(f"simpletun-wg: {exc}", file=sys.stderr)
        return 1
    try:
        isolate.in_child(lambda: link.set_mtu(dev.name, DEFAULT_MTU))  # pyroute2 stays there
        engine = Engine(dev)
    except (SimpletunError, OSError) as exc:
        dev.close()
        print(f"simpletun-wg: {name}: {exc}", file=sys.stderr)
        return 1
    if not foreground and os.fork():
        os._exit(0)  # the device and socket are ready: the child carries on
    if not foreground:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        quiet = True

    def stop(_signo: int, _frame: object) -> None:
        raise _Stop

    for signo in STOP_SIGNALS:
        signal.signal(signo, stop)
    log(f"up, UDP port {engine.listen_port}, UAPI {engine.uapi.path}")
    try:
        engine.run()
    except (_Stop, KeyboardInterrupt):
        engine.stop("stopped by a signal")
    finally:
        for signo in STOP_SIGNALS:
            signal.signal(signo, signal.SIG_IGN)
        engine.close()
        dev.close()
    drops = engine.core.drops + engine.side.counters.drops
    detail = ", ".join(f"{n} {k}" for k, n in sorted(drops.items()))
    log(f"down ({engine.stop_reason or 'stopped'})" + (f"; dropped {detail}" if detail else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
