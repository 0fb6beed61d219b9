"""Throw-away hosts for the demo, the benchmark, the self-check and the tests: network
namespaces (as ``ip netns`` makes them, under /run/netns) joined by veth pairs.

Everything is made through netlink (pyroute2) and torn down by :class:`Lab` even when the
body fails or is interrupted: processes started in a namespace are killed first, then the
namespaces are removed, which takes every device inside them along.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..device import link
from ..errors import SimpletunError

CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def _setns_fd(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns {what}: {os.strerror(err)}")


def _setns(name: str) -> None:
    fd = os.open(os.path.join(link.NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd, f"into {name}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the body in namespace ``name`` (this thread's network namespace), then come
    back: sockets made inside stay in ``name``."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(name)
        try:
            yield
        finally:
            _setns_fd(home, "back")
    finally:
        os.close(home)


def enter(name: str) -> None:
    """Move this whole (single-threaded) process into namespace ``name``."""
    _setns(name)


@dataclass(frozen=True)
class PingResult:
    address: str
    sent: int
    received: int
    rtts_ms: tuple[float, ...]
    output: str

    @classmethod
    def parse(cls, address: str, count: int, output: str) -> PingResult:
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
        sent, received = (int(m.group(1)), int(m.group(2))) if m else (count, 0)
        rtts = tuple(float(x) for x in re.findall(r"time=([\d.]+) ms", output))
        return cls(address, sent, received, rtts, output)

    @property
    def ok(self) -> bool:
        return self.received > 0 and self.received == self.sent

    @property
    def avg_ms(self) -> float:
        return sum(self.rtts_ms) / len(self.rtts_ms) if self.rtts_ms else float("nan")


class Namespace:
    """One named network namespace: a host with its own interfaces and routes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[Any]] = []

    @classmethod
    def create(cls, name: str) -> Namespace:
        from pyroute2 import netns as pr_netns  # see link._ipr on why pyroute2 waits

        pr_netns.create(name)
        ns = cls(name)
        link.set_up("lo", netns=name)
        return ns

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside this namespace; it is killed when the namespace is removed."""
        name = self.name
        proc = subprocess.Popen(list(cmd), preexec_fn=lambda: _setns(name), **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, cmd: Sequence[str], *, check: bool = False, timeout: float = 60,
            **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``cmd`` inside this namespace to completion (text output captured)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        name = self.name
        return subprocess.run(list(cmd), preexec_fn=lambda: _setns(name), check=check,
                              timeout=timeout, **kwargs)

    def ping(self, address: str, *, count: int = 3, interval: float = 0.2,
             deadline: float = 10, size: int | None = None,
             interface: str | None = None) -> PingResult:
        """Ping ``address`` from inside this namespace with the system's ping."""
        exe = shutil.which("ping")
        if exe is None:
            raise SimpletunError("ping is not installed: apt-get install iputils-ping")
        cmd = [exe, "-n", "-c", str(count), "-i", str(interval), "-w",
               str(math.ceil(deadline))]  # ping takes whole seconds
        if size is not None:
            cmd += ["-s", str(size)]
        if interface is not None:
            cmd += ["-I", interface]
        done = self.run([*cmd, address], timeout=deadline + 5)
        return PingResult.parse(address, count, done.stdout + done.stderr)

    def sysctl(self, key: str, value: str) -> None:
        """Set ``key`` (e.g. net.ipv4.ip_forward) inside this namespace."""
        path = "/proc/sys/" + key.replace(".", "/")
        done = self.run([sys.executable, "-c", f"open({path!r}, 'w').write({value!r})"])
        if done.returncode != 0:
            raise SimpletunError(f"cannot set {key} in {self.name}: {done.stderr.strip()}")

    def stop_processes(self, timeout: float = 3) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def remove(self) -> None:
        self.stop_processes()
        if os.path.exists(os.path.join(link.NETNS_DIR, self.name)):
            from pyroute2 import netns as pr_netns

            pr_netns.remove(self.name)

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"


def veth(a: Namespace, a_name: str, b: Namespace, b_name: str, *,
         a_addrs: Sequence[str] = (), b_addrs: Sequence[str] = (), mtu: int | None = None) -> None:
    """Join ``a`` and ``b`` with a veth pair, address both ends and bring them up."""
    from pyroute2 import IPRoute

    tmp = f"stv{os.getpid() % 100000}x{next(_counter)}"
    with IPRoute(netns=a.name, flags=0) as ipr:
        ipr.link("add", ifname=a_name, kind="veth", peer={"ifname": tmp, "net_ns_fd": b.name})
    with IPRoute(netns=b.name, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=tmp)[0]
        ipr.link("set", index=idx, ifname=b_name)
    for ns, name, addrs in ((a, a_name, a_addrs), (b, b_name, b_addrs)):
        for addr in addrs:
            link.add_address(name, addr, netns=ns.name, nodad=True)
        if mtu:
            link.set_mtu(name, mtu, netns=ns.name)
        link.set_up(name, netns=ns.name)


class Lab:
    """A set of namespaces that all go away on exit, whatever happened inside::

        with Lab("demo") as lab:
            a, b = lab.host("a"), lab.host("b")
            veth(a, "veth0", b, "veth0", a_addrs=["192.0.2.1/24"], b_addrs=["192.0.2.2/24"])
    """

    def __init__(self, prefix: str = "st") -> None:
        self.prefix = f"{prefix}-{os.getpid()}-{next(_counter)}"
        self.hosts: list[Namespace] = []
        self._directory: str | None = None

    @property
    def directory(self) -> str:
        """A private directory for the lab's files (keys), removed with the lab."""
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        return self._directory

    def host(self, label: str) -> Namespace:
        ns = Namespace.create(f"{self.prefix}-{label}")
        self.hosts.append(ns)
        return ns

    def close(self) -> None:
        for ns in self.hosts:
            ns.stop_processes()
        for ns in reversed(self.hosts):
            ns.remove()
        self.hosts.clear()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
