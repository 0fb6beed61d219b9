"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (``READY=1`` when the
tunnel is up, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``). Outside systemd there is
no socket and nothing is sent."""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    """Send ``lines`` (``KEY=VALUE``) to the service manager; False if there is none or it
    cannot be reached (never an error: the tunnel runs the same either way)."""
    where = os.environ.get("NOTIFY_SOCKET", "")
    if not where or where[0] not in "/@":
        return False
    address = "\0" + where[1:] if where[0] == "@" else where
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(lines).encode(), address)
    except OSError:
        return False
    return True
