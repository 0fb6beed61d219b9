"""A plaintext tunnel run unprivileged from the start: root makes each device with
'simpletun mktun DEV --user nobody' (addresses and up too), then both ends run as nobody
with no capabilities at all (setpriv, in a mount namespace where /dev/net/tun is usable by
everyone, as Debian's udev makes it: see tests/device/users.py), and pings move."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from simpletun.lab.netns import Lab, Namespace
from simpletun.lab.testbed import OVERLAY, Testbed, Watched, simpletun_cmd
from simpletun.service import privileges

from ..device import users

NOGROUP = 65534


def as_nobody(ns: Namespace, args: list[str], directory: str, label: str) -> Watched:
    """``simpletun ARGS`` in ``ns`` as nobody/nogroup with no capabilities."""
    rdev = os.stat("/dev/net/tun").st_rdev
    mount = tempfile.mkdtemp(dir=directory)
    code = (f"import sys; sys.argv = ['simpletun', *{args!r}]\n"
            "from simpletun.cli import main; main()")
    # unshare and sh exec into setpriv, which execs python: the pid is the tunnel's
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", users._SCRIPT, "sh",
           mount, str(os.major(rdev)), str(os.minor(rdev)), str(users.NOBODY), str(NOGROUP),
           sys.executable, code]
    return Watched(ns.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True), label)


def stopped(procs: list[Watched]) -> Iterator[Watched]:
    for proc in procs:
        proc.stop()
        yield proc


def test_a_plaintext_tunnel_runs_as_nobody_on_devices_made_for_it(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    for ns, address in ((bed.server, OVERLAY[0]), (bed.client, OVERLAY[1])):
        made = ns.run(simpletun_cmd("mktun", bed.iface, "--user", "nobody", "--address",
                                    address, "--up"))
        assert made.returncode == 0, made.stderr
    procs: list[Watched] = []
    try:
        server = as_nobody(bed.server, ["-i", bed.iface, "-s", "-p", str(bed.port)],
                           lab.directory, "server")
        procs.append(server)
        server.wait_for("listening on")
        client = as_nobody(bed.client, ["-i", bed.iface, "-c", bed.server_underlay, "-p",
                                        str(bed.port)], lab.directory, "client")
        procs.append(client)
        client.wait_for("connected to")
        for proc in procs:
            st = privileges.read_status(proc.proc.pid)
            assert st.uids == (users.NOBODY,) * 4, proc.lines
            assert (st.cap_eff, st.cap_prm, st.cap_amb) == (0, 0, 0)
        assert bed.client.ping(bed.server_overlay, count=3, interval=0.1).ok
        assert bed.server.ping(bed.client_overlay, count=3, interval=0.1).ok
    finally:
        ends = list(stopped(procs[::-1]))  # the client first: it would see the server go
    for proc in ends:
        text = "\n".join(proc.lines)
        assert "Traceback" not in text, text
        assert proc.count("shutting down:") == 1, text
        # what it could not do as nobody (a control socket, say) is a note, not a failure
        assert not [x for x in proc.lines if " error" in x.lower()], text
