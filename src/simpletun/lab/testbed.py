"""Two hosts joined by a veth link with a simpletun tunnel between them: what the demo,
the benchmark and the end-to-end tests are built on.

    with Lab("demo") as lab:
        bed = Testbed(lab)
        bed.start()                       # server on host "server", client on host "client"
        bed.client.ping(bed.server_overlay)

Underlay 192.0.2.0/24 (TEST-NET-1) and overlay 10.200.0.0/24 live only inside the
namespaces; nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from ..errors import SimpletunError
from ..transport.tcp import DEFAULT_PORT
from ..wireguard import keys as wg_keys
from .netns import Lab, Namespace, veth

UNDERLAY = ("192.0.2.1/24", "192.0.2.2/24")
UNDERLAY6 = ("fd00::1/64", "fd00::2/64")
OVERLAY = ("10.200.0.1/24", "10.200.0.2/24")
OVERLAY6 = ("fd20::1/64", "fd20::2/64")


class Watched:
    """A process whose stderr lines are collected as they come, so that one can wait for a
    line (``wait_for``) at any time without the pipe filling up."""

    def __init__(self, proc: subprocess.Popen[str], label: str) -> None:
        self.proc = proc
        self.label = label
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def count(self, text: str) -> int:
        with self._cond:
            return sum(text in line for line in self.lines)

    def wait_for(self, text: str, timeout: float = 10.0, occurrences: int = 1) -> None:
        """Wait until ``text`` has appeared in ``occurrences`` lines."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(text in line for line in self.lines) < occurrences:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._thread.is_alive()):
                    raise SimpletunError(
                        f"{self.label}: no {text!r} after {timeout:g} s; it said:\n  "
                        + "\n  ".join(self.lines[-20:]))
                self._cond.wait(min(left, 0.2))

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(2)
        return self.proc.returncode

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


_names = itertools.count()


def unique_iface(prefix: str = "wt") -> str:
    """An interface name no other test process uses: encrypted tunnels have a UAPI socket
    named for their interface in /var/run/wireguard, which network namespaces share."""
    return f"{prefix}{os.getpid() % 100000}x{next(_names) % 1000}"


def key_pair(directory: str, name: str) -> tuple[str, str]:
    """A new private key in ``directory``/``name``.key (mode 600) and its public key (base64)."""
    private = wg_keys.generate_private()
    path = os.path.join(directory, f"{name}.key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(wg_keys.to_base64(private) + "\n")
    return path, wg_keys.to_base64(wg_keys.public_from_private(private))


def simpletun_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "simpletun", *args]


class Testbed:
    """Hosts ``server`` and ``client`` on a veth underlay, a tunnel between them."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, lab: Lab, *, tap: bool = False, iface: str | None = None,
                 port: int = 55555, ipv6_overlay: bool = True, mtu: int | None = None,
                 underlay: int = 4, keys: bool = False) -> None:
        self.lab = lab
        self.tap = tap
        #: encrypted (``keys``): each side has a key pair and names the other's with --peer;
        #: the two interfaces get names of their own (their UAPI sockets share a directory)
        self.keys = keys
        if keys:
            self.iface = iface or unique_iface()
            self.client_iface = unique_iface()
            self.server_key, self.server_public = key_pair(lab.directory, "server")
            self.client_key, self.client_public = key_pair(lab.directory, "client")
        else:
            self.iface = iface or ("tap0" if tap else "tun0")
            self.client_iface = self.iface
        self.port = port
        self.ipv6_overlay = ipv6_overlay
        self.mtu = mtu
        self.server = lab.host("server")
        self.client = lab.host("client")
        under = UNDERLAY6 if underlay == 6 else UNDERLAY
        veth(self.server, "veth0", self.client, "veth0", a_addrs=[under[0]], b_addrs=[under[1]])
        #: the address the client connects to (IPv4, or IPv6 with ``underlay=6``)
        self.server_underlay = under[0].split("/")[0]
        self.client_underlay = under[1].split("/")[0]
        self.server_overlay = OVERLAY[0].split("/")[0]
        self.client_overlay = OVERLAY[1].split("/")[0]
        self.server_overlay6 = OVERLAY6[0].split("/")[0]
        self.server_proc: Watched | None = None
        self.client_proc: Watched | None = None

    def _args(self, index: int) -> list[str]:
        args = ["-i", self.client_iface if index else self.iface, "--address", OVERLAY[index]]
        if self.keys:
            args += (["-k", self.client_key, "-P", self.server_public] if index else
                     ["-k", self.server_key, "-P", self.client_public])
        if self.port != DEFAULT_PORT:  # (-t icmp has no port and refuses -p)
            args += ["-p", str(self.port)]
        if self.ipv6_overlay:
            args += ["--address", OVERLAY6[index]]
        if self.tap:
            args.append("-a")
        if self.mtu:
            args += ["--mtu", str(self.mtu)]
        return args

    def _start(self, ns: Namespace, args: Sequence[str], label: str) -> Watched:
        proc = ns.popen(simpletun_cmd(*args), stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, text=True)
        return Watched(proc, label)

    def server_command(self, *extra: str) -> list[str]:
        return [*self._args(0), "-s", *extra]

    def client_command(self, *extra: str) -> list[str]:
        return [*self._args(1), "-c", self.server_underlay, *extra]

    def start_server(self, *extra: str) -> Watched:
        self.server_proc = self._start(self.server, self.server_command(*extra), "server")
        self.server_proc.wait_for("listening on")
        return self.server_proc

    def start_client(self, *extra: str, wait: bool = True) -> Watched:
        self.client_proc = self._start(self.client, self.client_command(*extra), "client")
        if wait:
            self.client_proc.wait_for("session up" if self.keys else "connected to")
        return self.client_proc

    def start(self, server_extra: Sequence[str] = (), client_extra: Sequence[str] = ()) -> None:
        self.start_server(*server_extra)
        self.start_client(*client_extra)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Both ends configured and IPv6 duplicate address detection over."""
        from ..device import link

        link.wait_usable(self.iface, netns=self.server.name)
        link.wait_usable(self.client_iface, netns=self.client.name)

    def transfer(self, size: int, *, to: str | None = None, port: int = 5001,
                 from_server: bool = False) -> tuple[int, str, float]:
        """Send ``size`` bytes from the client to the server (over ``to``, the server's
        overlay address by default), or with ``from_server`` the other way (to the client's
        overlay address); returns (bytes, sha256, seconds) once the receiver's digest
        matched, or raises."""
        sender, receiver = (self.server, self.client) if from_server else \
            (self.client, self.server)
        target = to or (self.client_overlay if from_server else self.server_overlay)
        return transfer(sender, receiver, target, size, port=port)


def transfer(sender: Namespace, receiver: Namespace, target: str, size: int, *,
             port: int = 5001) -> tuple[int, str, float]:
    """Send ``size`` bytes from ``sender`` to ``target`` (an address of ``receiver``) with
    :mod:`simpletun.lab.flow`; returns (bytes, sha256, seconds) once the receiver's digest
    matched, or raises."""
    recv = receiver.popen([sys.executable, "-m", "simpletun.lab.flow", "recv", target,
                           str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        if recv.stdout.readline().strip() != "ready":
            raise SimpletunError("the receiver did not start")
        sent = sender.run([sys.executable, "-m", "simpletun.lab.flow", "send", target,
                           str(port), str(size)], timeout=300)
        out, _ = recv.communicate(timeout=30)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    if sent.returncode != 0:
        raise SimpletunError(f"transfer failed: {sent.stderr.strip() or sent.stdout}")
    got_size, got_digest = out.split()
    size_s, digest, seconds = sent.stdout.split()
    if (int(got_size), got_digest) != (int(size_s), digest):
        raise SimpletunError("transfer corrupted: digests differ")
    return int(size_s), digest, float(seconds)
