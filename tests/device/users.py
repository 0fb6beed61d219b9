"""Run Python as an unprivileged user, the way it would run on a stock Debian box.

Here ``/dev/net/tun`` is mode 0600; Debian's udev makes it 0666. The child gets a private
mount namespace in which a 0666 node for the same device is bound over /dev/net/tun, then
drops to the given uid/gid with no capabilities (setpriv). The host's node is untouched;
the network namespace is the caller's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

NOBODY = 65534
STRANGER = 65533  # a uid with no name and no privileges

_SCRIPT = """
set -e
mount -t tmpfs -o mode=0755 simpletun-test "$1"
mknod -m 0666 "$1/tun" c "$2" "$3"
mount --bind "$1/tun" /dev/net/tun
exec setpriv --reuid="$4" --regid="$5" --clear-groups --inh-caps=-all "$6" -c "$7"
"""


def run_as(uid: int, gid: int, code: str, *, world_usable_tun: bool = True,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    if not world_usable_tun:
        return subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
             "--inh-caps=-all", sys.executable, "-c", code],
            capture_output=True, text=True, timeout=timeout)
    rdev = os.stat("/dev/net/tun").st_rdev
    with tempfile.TemporaryDirectory() as mnt:
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT, "sh", mnt,
             str(os.major(rdev)), str(os.minor(rdev)), str(uid), str(gid), sys.executable,
             code],
            capture_output=True, text=True, timeout=timeout)


def attach_code(name: str, tap: bool = False, create: bool = False) -> str:
    """Python that opens ``name`` and prints 'attached NAME', or the error line and exit 3."""
    return (
        "import sys, os\n"
        "from simpletun import tuntap\n"
        "from simpletun.errors import SimpletunError\n"
        "try:\n"
        f"    d = tuntap.open_device({name!r}, tap={tap!r}, create={create!r})\n"
        "except SimpletunError as e:\n"
        "    print(type(e).__name__ + ': ' + str(e)); sys.exit(3)\n"
        "print('attached', d.name, 'as uid', os.getuid(), 'caps', open('/proc/self/status')"
        ".read().split('CapEff:')[1].split()[0])\n"
    )
