"""Issue 14, UDP is plain WireGuard on the wire: the ``simpletun`` command itself
(``-t udp -k KEY -P PEER``) against Debian's wireguard-go, in both roles (a simpletun client
against a wireguard-go "server" that only listens, and a wireguard-go client, told where we
are, against a ``simpletun -s`` server), over IPv4 and IPv6 underlays.

Each test: pings over both overlays both ways, 20 MB each way checked with sha256, ``wg show``
on both sides naming the other with a recent handshake, its endpoint and the bytes moved, and
a clean stop of simpletun (SIGTERM: exit 0, its UAPI socket and its device gone)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from simpletun.device import link
from simpletun.lab import wghost
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Watched, key_pair, simpletun_cmd, unique_iface
from simpletun.lab.wghost import Dump, DumpPeer, WgHost, WgInterface

from .wgcases import MB, UNDERLAYS, wait_until

#: simpletun's overlay addresses (host 1 of wghost.OVERLAY's networks); wireguard-go has host 2
OURS = ("10.77.0.1/24", "fd77::1/64")
THEIRS = ("10.77.0.2/24", "fd77::2/64")
SERVER_PORT = 51999
ROLES = ["simpletun-client", "simpletun-server"]


def bare(cidr: str) -> str:
    return cidr.split("/")[0]


def hosts_of(cidrs: tuple[str, ...]) -> str:
    """``10.77.0.2/32,fd77::2/128``: what a peer may send from."""
    return ",".join(f"{bare(c)}/{128 if ':' in c else 32}" for c in cidrs)


@dataclass
class Interop:
    """simpletun in ``st`` (process ``proc``, interface ``iface``) and wireguard-go in ``go``
    (interface ``go.iface``) on one switch; ``family`` is the underlay they talk over."""

    st: WgHost
    go: WgHost
    proc: Watched
    iface: str
    public: str  # simpletun's public key
    family: int

    def st_dump(self) -> Dump:
        """``wg show IFACE dump`` of simpletun's tunnel, through its UAPI socket."""
        done = self.st.ns.run([wghost.wg_exe(), "show", self.iface, "dump"], timeout=10)
        assert done.returncode == 0, f"wg show {self.iface}: {done.stderr}"
        return wghost.parse_dump(done.stdout)

    def ours_of_theirs(self) -> DumpPeer:
        return self.st_dump().peer(self.go.iface.public_key)

    def theirs_of_ours(self) -> DumpPeer:
        return self.go.iface.show_dump().peer(self.public)

    def logs(self) -> str:
        return (f"--- simpletun {self.iface} ({self.st.name}):\n  {self.proc.text}\n"
                f"--- wireguard-go {self.go.iface.name} ({self.go.name}):\n"
                f"{self.go.iface.log()}")


@contextmanager
def interop(lab: Lab, role: str, family: int, extra: tuple[str, ...] = ()) -> Iterator[Interop]:
    """simpletun in ``role`` (with ``extra`` arguments) against wireguard-go over the
    ``family`` underlay, up to the point where simpletun runs (a client has its session; a
    server listens)."""
    switch = wghost.Switch(lab)
    st = switch.join("st")
    go = switch.join("go")
    key, public = key_pair(lab.directory, "simpletun")
    wg = WgInterface(go.ns, "wireguard-go", listen_port=wghost.BASE_PORT + go.index)
    go.wg = wg
    go.overlay = THEIRS
    proc: Watched | None = None
    try:
        for cidr in THEIRS:
            wg.address(cidr)
        wg.up()
        iface = unique_iface()
        common = ["-i", iface, "-t", "udp", "-k", key, *extra,
                  *(a for c in OURS for a in ("--address", c))]
        if role == "simpletun-client":
            # wireguard-go only listens: it learns our endpoint from our initiation
            wg.add_peer(public, allowed_ips=hosts_of(OURS).split(","))
            args = [*common, "-c", go.underlay(family), "-p", str(wg.listen_port),
                    "-P", go.iface.public_key]
        else:
            wg.add_peer(public, allowed_ips=hosts_of(OURS).split(","),
                        endpoint=wghost.endpoint_of(st.underlay(family), SERVER_PORT))
            args = [*common, "-s", "-p", str(SERVER_PORT),
                    "-P", f"{go.iface.public_key}:{hosts_of(THEIRS)}"]
        proc = Watched(st.ns.popen(simpletun_cmd(*args), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True), "simpletun")
        it = Interop(st, go, proc, iface, public, family)
        try:
            if role == "simpletun-client":
                proc.wait_for("session up", timeout=15)
            else:
                proc.wait_for("listening on", timeout=15)
            link.wait_usable(iface, netns=st.ns.name)
            link.wait_usable(wg.name, netns=go.ns.name)
            yield it
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{it.logs()}") from None
        except Exception:
            print(it.logs())  # shown by pytest with the traceback
            raise
    finally:
        if proc is not None:
            proc.stop()
        wg.stop()


def ping(src: WgHost, target: str) -> None:
    result = src.ns.ping(target, count=3, interval=0.05, deadline=5)
    assert result.ok, f"{src.name} -> {target}:\n{result.output}"


def assert_recent(peer: DumpPeer, who: str) -> None:
    now = time.time()
    assert peer.latest_handshake > 0 and now - peer.latest_handshake < 60, \
        f"{who}: latest handshake {peer.latest_handshake}, now {now:.0f}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("family", UNDERLAYS, ids=["ipv4-underlay", "ipv6-underlay"])
def test_simpletun_udp_interoperates_with_wireguard_go(lab: Lab, family: int,
                                                       role: str) -> None:
    with interop(lab, role, family) as it:
        if role == "simpletun-server":
            # the wireguard-go client knows where we are; its first packet starts the session
            assert it.ours_of_theirs().endpoint is None
            ping(it.go, bare(OURS[0]))
            it.proc.wait_for("session up", timeout=5)
        for ours, theirs in zip(OURS, THEIRS, strict=True):
            ping(it.st, bare(theirs))
            ping(it.go, bare(ours))

        wghost.transfer(it.st.ns, it.go.ns, bare(THEIRS[0]), 20 * MB)  # us -> wireguard-go
        wghost.transfer(it.go.ns, it.st.ns, bare(OURS[1]), 20 * MB)  # wireguard-go -> us

        ours = it.ours_of_theirs()
        theirs = it.theirs_of_ours()
        assert_recent(ours, "simpletun's view of wireguard-go")
        assert_recent(theirs, "wireguard-go's view of simpletun")
        for seen, who in ((ours, "simpletun"), (theirs, "wireguard-go")):
            assert seen.rx_bytes >= 20 * MB and seen.tx_bytes >= 20 * MB, (who, seen)
        # each names the other at its address on the asked-for underlay
        assert ours.endpoint == it.go.endpoint(family)
        if role == "simpletun-server":
            assert theirs.endpoint == wghost.endpoint_of(it.st.underlay(family), SERVER_PORT)
        else:  # our client's port is its own (ephemeral) choice
            assert theirs.endpoint is not None
            assert theirs.endpoint.rsplit(":", 1)[0] == wghost.endpoint_of(
                it.st.underlay(family), 0).rsplit(":", 1)[0]
        assert sorted(theirs.allowed_ips) == sorted(hosts_of(OURS).split(","))
        # -P KEY:NETS on the server; a client's one peer gets everything by default
        assert sorted(ours.allowed_ips) == (sorted(hosts_of(THEIRS).split(","))
                                            if role == "simpletun-server"
                                            else ["0.0.0.0/0", "::/0"])
        assert it.st_dump().interface.public_key == it.public

        # a clean stop: SIGTERM -> exit 0, UAPI socket and device gone
        status = it.proc.stop()
        assert status == 0, f"simpletun exited with {status}"
        wait_until("simpletun's UAPI socket removed",
                   lambda: not os.path.exists(wghost.socket_path(it.iface)), timeout=2)
        assert not link.exists(it.iface, netns=it.st.ns.name)
        assert "Traceback" not in it.proc.text and "refused" not in it.proc.text
        assert it.proc.count("session up (UDP)") >= 1
        # wireguard-go is still there, and only it
        assert it.go.iface.running
