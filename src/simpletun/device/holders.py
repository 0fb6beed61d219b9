"""Which processes hold a tun/tap device open.

The kernel names the device behind each open /dev/net/tun descriptor in
``/proc/PID/fdinfo/FD`` (an ``iff:`` line). Device names are per network namespace, so only
processes in the caller's namespace count. Used to refuse what would disturb a running
tunnel (a second server on its device, ``respond`` on it, ``deltun`` under it) and to name
the holder in the message.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

TUN_PATH = "/dev/net/tun"


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str  # the program's name, as ps shows it
    queues: int  # how many descriptors (queues) of the device it holds

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def _netns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _device_of(pid: str, fd: str) -> str | None:
    """The device behind descriptor ``fd`` of ``pid``, if it is an attached tun descriptor."""
    try:
        if os.readlink(f"/proc/{pid}/fd/{fd}") != TUN_PATH:
            return None
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("iff:"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # gone meanwhile, or not ours to read
        return None
    return None


def holders(name: str, *, include_self: bool = False) -> list[Holder]:
    """The processes in this network namespace that hold device ``name`` open (this one
    only with ``include_self``), by pid."""
    ours = _netns("self")
    me = os.getpid()
    found: list[Holder] = []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        if (int(pid) == me and not include_self) or _netns(pid) != ours:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        queues = sum(1 for fd in fds if _device_of(pid, fd) == name)
        if queues:
            command = "?"
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
                command = f.read().strip()
            found.append(Holder(int(pid), command, queues))
    return found


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (from /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command in parentheses may hold spaces and ')': split after the last ')'
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def leading(found: Sequence[Holder]) -> list[Holder]:
    """Those of ``found`` that another of them did not start: a tunnel's worker processes
    hold queues too, and are named through the process that started them."""
    pids = {h.pid for h in found}
    return [h for h in found if parent_pid(h.pid) not in pids] or list(found[:1])


def held_by(name: str, *, found: Sequence[Holder] | None = None) -> str:
    """Who holds ``name`` (``found``: its holders, if already looked up), for a message:
    "pid 12 (simpletun), pid 40 (python3)", a tunnel's workers left out (see
    :func:`leading`); "" for nobody."""
    return ", ".join(str(h) for h in leading(holders(name) if found is None else found))
