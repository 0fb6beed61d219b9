"""DNS= of a config file, through resolvconf(8) as wg-quick sets it: the servers and
search domains under the interface's name, exclusively (``-x``), removed on ``down``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from ..errors import SimpletunError
from .hooks import unblock

INTERFACE_ORDER = "/etc/resolvconf/interface-order"


def record_name(name: str) -> str:
    """The name resolvconf keeps the interface's servers under: Debian's resolvconf orders
    by name prefix (``tun.wg0``), as wg-quick's resolvconf_iface_prefix finds it."""
    program = shutil.which("resolvconf")
    if program and os.path.exists(INTERFACE_ORDER) and not os.path.islink(program):
        with open(INTERFACE_ORDER) as f:
            for line in f:
                m = re.fullmatch(r"([A-Za-z0-9-]+)\*", line.strip())
                if m:
                    return f"{m.group(1)}.{name}"
    return name


def available() -> bool:
    return shutil.which("resolvconf") is not None


def set_servers(record: str, servers: list[str], search: list[str]) -> None:
    """Hand ``servers`` and ``search`` to resolvconf under ``record`` (:func:`record_name`;
    :func:`unset` takes them back)."""
    text = "".join(f"nameserver {s}\n" for s in servers)
    if search:
        text += f"search {' '.join(search)}\n"
    done = subprocess.run(["resolvconf", "-a", record, "-m", "0", "-x"], input=text.encode(),
                          capture_output=True, check=False, preexec_fn=unblock)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise SimpletunError(f"resolvconf -a {record} failed: "
                             f"{why[-1] if why else f'exit status {done.returncode}'}")


def unset(record: str) -> None:
    """Take the record back (gone already, or no resolvconf: nothing to do)."""
    if available():
        subprocess.run(["resolvconf", "-d", record, "-f"], capture_output=True, check=False,
                       preexec_fn=unblock)
