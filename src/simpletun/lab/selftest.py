"""A self-check of this machine and of simpletun's device tools, run by
``simpletun selftest``: everything happens inside a throw-away network namespace and is
removed at the end, also on failure or Ctrl-C.

For a tun and then a tap device: ``simpletun dump --respond`` holds the device with
addresses 10.99.0.1/24 and fd99::1/64, ``ping`` to 10.99.0.2 and fd99::2 must be answered,
and the capture must show the requests and replies. Then ``mktun``/``deltun`` must make and
remove a persistent device.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable

from ..device import link, tuntap
from ..errors import SimpletunError
from ..tools import capture, pcap
from .netns import Lab, Namespace
from .testbed import Watched, simpletun_cmd

ADDR4, PEER4 = "10.99.0.1/24", "10.99.0.2"
ADDR6, PEER6 = "fd99::1/64", "fd99::2"


class CheckFailed(Exception):
    pass


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out waiting for {what}")
        time.sleep(0.05)


def check_device(ns: Namespace, tap: bool, workdir: str) -> list[str]:
    """Ping through a responder on a fresh device; returns report lines."""
    kind = "tap" if tap else "tun"
    name = f"st{kind}0"
    cap = os.path.join(workdir, f"{kind}.pcap")
    dump = Watched(ns.popen(simpletun_cmd("dump", name, f"--{kind}", "--respond", "--address",
                                          ADDR4, "--address", ADDR6, "--pcap", cap),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), "dump")
    try:
        try:  # its ready line: it holds the device, with its addresses, from then on
            dump.wait_for("listening on")
        except SimpletunError as exc:
            raise CheckFailed(str(exc)) from None
        link.wait_usable(name, netns=ns.name)
        p4 = ns.ping(PEER4, count=3)
        p6 = ns.ping(PEER6, count=3)
    finally:
        dump.stop()
        ns.procs.remove(dump.proc)
    assert dump.proc.stdout is not None
    out, err = dump.proc.stdout.read(), dump.text
    lines = [f"{kind}: {name} with {ADDR4} and {ADDR6}, answered by simpletun dump --respond"]
    for p in (p4, p6):
        if not p.ok:
            raise CheckFailed(f"{kind}: ping {p.address}: {p.received}/{p.sent} replies\n"
                              f"{p.output}\n{err}")
        lines.append(f"  ping {p.address}: {p.received}/{p.sent} replies, "
                     f"rtt avg {p.avg_ms:.3f} ms")
    shown = out.splitlines()
    captured = pcap.read(cap)
    requests = sum("echo request" in line for line in shown)
    replies = sum("echo reply" in line for line in shown)
    if requests < 6 or replies < 6:
        raise CheckFailed(f"{kind}: dump showed {requests} echo requests and {replies} "
                          f"replies, expected 6 of each:\n{out}")
    if len(captured.records) != len(shown):
        raise CheckFailed(f"{kind}: pcap holds {len(captured.records)} packets, dump printed "
                          f"{len(shown)} lines")
    if captured.linktype != capture.linktype(tap):
        raise CheckFailed(f"{kind}: pcap link type {captured.linktype}")
    if tap and not any("ARP" in line and "is-at" in line for line in shown):
        raise CheckFailed(f"tap: no ARP reply in the dump:\n{out}")
    if tap and not any("neighbor advertisement" in line for line in shown):
        raise CheckFailed(f"tap: no neighbor advertisement in the dump:\n{out}")
    lines.append(f"  dump: {len(shown)} packets decoded, {requests} echo requests, "
                 f"{replies} replies; pcap read back: {len(captured.records)} records")
    _wait_for(lambda: not link.exists(name, netns=ns.name), f"temporary {name} to go away")
    lines.append(f"  {name} removed when dump exited")
    return lines


def check_persistent(ns: Namespace) -> list[str]:
    name = "stper0"
    made = ns.run(simpletun_cmd("mktun", name, "--tap", "--user", "nobody", "--mtu", "1400"))
    if made.returncode != 0:
        raise CheckFailed(f"mktun failed: {made.stderr.strip()}")
    state = link.state(name, netns=ns.name)
    if state.tun is None or not state.tun.persist or not state.tun.tap or state.mtu != 1400:
        raise CheckFailed(f"mktun made {state}")
    gone = ns.run(simpletun_cmd("deltun", name))
    if gone.returncode != 0 or link.exists(name, netns=ns.name):
        raise CheckFailed(f"deltun failed: {gone.stderr.strip()}")
    return [f"mktun/deltun: {made.stdout.strip()}; then {gone.stdout.strip()}"]


def run(echo: Callable[[str], None] = print, keep_going: bool = False) -> bool:
    if os.geteuid() != 0:
        raise SimpletunError("selftest needs root (network namespaces, CAP_NET_ADMIN): "
                             "run it with sudo")
    os.close(tuntap._open_clone())  # a clear error if /dev/net/tun is missing or closed
    echo(f"simpletun self-check on Linux {platform.release()}, {tuntap.CLONE_DEVICE} present")
    ok = True
    with Lab("selftest") as lab, tempfile.TemporaryDirectory(prefix="simpletun-") as workdir:
        ns = lab.host("host")
        echo(f"namespace {ns.name}")
        checks: list[Callable[[], list[str]]] = [
            lambda: check_device(ns, False, workdir),
            lambda: check_device(ns, True, workdir),
            lambda: check_persistent(ns),
        ]
        for check in checks:
            try:
                for line in check():
                    echo(line)
            except CheckFailed as exc:
                ok = False
                echo(f"FAILED: {exc}")
                if not keep_going:
                    break
    echo("namespace and devices removed")
    echo("self-check passed" if ok else "self-check FAILED")
    return ok
