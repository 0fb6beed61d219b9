"""Encrypted tunnels on every transport (UDP, TCP, ICMP), end to end over IPv4 and IPv6
underlays, tun and tap (issue 14): ping and 20 MB each way with sha256, clean and with 2%
loss; the client roaming mid-transfer; a server restart the client heals; keys that do not
match, one clear line on each side; udp/icmp refused without keys."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from simpletun.device import link
from simpletun.lab.bench import dropped, lossy
from simpletun.lab.netns import Lab, Namespace
from simpletun.lab.testbed import Testbed, Watched, key_pair, simpletun_cmd, unique_iface
from simpletun.lab.wghost import parse_dump

MB = 1024 * 1024
TRANSPORTS = ["udp", "tcp", "icmp"]
UNDERLAYS = [4, 6]
V = ["ipv4", "ipv6"]


def _bed(lab: Lab, transport: str, underlay: int = 4, *, tap: bool = False,
         client_extra: tuple[str, ...] = ()) -> Testbed:
    bed = Testbed(lab, underlay=underlay, tap=tap, keys=True)
    bed.start(server_extra=["-t", transport], client_extra=["-t", transport, *client_extra])
    return bed


def _logs(bed: Testbed) -> str:
    """Both sides' output, for a failure message."""
    return "\n".join(f"--- {w.label}:\n{w.text}" for w in (bed.server_proc, bed.client_proc)
                     if w is not None)


def _endpoint_host(bed: Testbed) -> str:
    """The client's address as the server's `wg show dump` has it (ICMP: host:echo id)."""
    done = bed.server.run(["wg", "show", bed.iface, "dump"])
    assert done.returncode == 0, done.stderr
    peers = parse_dump(done.stdout).peers
    assert len(peers) == 1, done.stdout
    peer = peers[0]
    assert peer.public_key == bed.client_public
    assert peer.endpoint is not None, done.stdout
    return str(peer.endpoint).rsplit(":", 1)[0].strip("[]")


def _wait_until(what: str, check: Callable[[], bool], timeout: float,
                logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s\n{logs()}"
        time.sleep(0.1)


# --- ping and 20 MB both ways, clean and with 2% loss -------------------------------------

@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
@pytest.mark.parametrize("underlay", UNDERLAYS, ids=V)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ping_and_20mb_both_ways(lab: Lab, transport: str, underlay: int, tap: bool) -> None:
    bed = _bed(lab, transport, underlay, tap=tap)
    # every ping must come back: asked before the loss is switched on (over UDP nothing
    # resends a lost ping)
    ping = bed.client.ping(bed.server_overlay, count=3, interval=0.05)
    assert ping.ok, f"{ping.output}\n{_logs(bed)}"
    ping6 = bed.server.ping(bed.client_overlay, count=3, interval=0.05)  # and back
    assert ping6.ok, f"{ping6.output}\n{_logs(bed)}"
    for loss in (False, True):
        if loss:
            for ns in (bed.server, bed.client):
                lossy(ns, bed.port, 2, icmp_on="veth0")
        assert bed.transfer(20 * MB)[0] == 20 * MB, _logs(bed)
        # and the other way: over ICMP the server may only answer the client's requests
        assert bed.transfer(20 * MB, from_server=True)[0] == 20 * MB, _logs(bed)
    assert dropped(bed.server) > 0 and dropped(bed.client) > 0  # the loss was real
    for proc in (bed.server_proc, bed.client_proc):
        assert proc is not None and proc.proc.poll() is None, _logs(bed)
        assert "Traceback" not in proc.text, _logs(bed)


# --- roaming ---------------------------------------------------------------------------------

@pytest.mark.parametrize("underlay", UNDERLAYS, ids=V)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_roams_mid_transfer(lab: Lab, transport: str, underlay: int) -> None:
    """The client's source address changes while a transfer runs (slowed down by tbf so
    that it is still running). Over UDP and ICMP the next authenticated message from the
    new address moves the server's endpoint; over TCP the connection is cut (as a NAT
    rebinding or a lost link would) and the encrypted client reconnects by itself, from
    the new address."""
    bed = _bed(lab, transport, underlay)
    v6 = underlay == 6
    old = bed.client_underlay
    new = "fd00::3" if v6 else "192.0.2.3"
    assert _endpoint_host(bed) == old
    link.add_address("veth0", f"{new}/{64 if v6 else 24}", netns=bed.client.name, nodad=True)
    shaped = bed.client.run(["tc", "qdisc", "add", "dev", "veth0", "root", "tbf", "rate",
                             "40mbit", "burst", "32kb", "latency", "50ms"])
    assert shaped.returncode == 0, shaped.stderr
    size = 6 * MB  # about 1.3 s at 40 Mbit/s
    results: list[tuple[int, str, float]] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            results.append(bed.transfer(size))
        except BaseException as exc:  # shown by the main thread
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        time.sleep(0.4)
        assert sender.is_alive(), f"the transfer ended before the move: {errors}"
        net = "fd00::/64" if v6 else "192.0.2.0/24"
        done = bed.client.run(["ip", "-6" if v6 else "-4", "route", "replace", net, "dev",
                               "veth0", "src", new])
        assert done.returncode == 0, done.stderr
        if transport == "tcp":  # cut the tunnel's connection: it keeps its old source
            dst = f"[{bed.server_underlay}]" if v6 else bed.server_underlay
            killed = bed.client.run(["ss", "-K", "dst", dst, "dport", "=", str(bed.port)])
            assert killed.returncode == 0, killed.stderr
    finally:
        sender.join(60)
    assert not sender.is_alive(), f"the transfer did not end\n{_logs(bed)}"
    assert not errors, f"{errors}\n{_logs(bed)}"
    assert results and results[0][0] == size
    _wait_until(f"endpoint {new}", lambda: _endpoint_host(bed) == new, 5, lambda: _logs(bed))
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok, _logs(bed)
    assert bed.server.ping(bed.client_overlay, count=3, interval=0.05).ok, _logs(bed)


# --- a server restart ------------------------------------------------------------------------

def test_server_restart_healed(lab: Lab) -> None:
    """On each transport (all three at once, each on hosts of its own: the waits run side
    by side), the server stops and starts again with the same key; the client
    (--reconnect: it never gives up) gets traffic through again: over UDP and ICMP it
    re-handshakes once its data has gone unanswered for 15 s (REKEY_TIMEOUT +
    KEEPALIVE_TIMEOUT), over TCP its link reconnects and shakes hands at once."""
    with contextlib.ExitStack() as stack:
        beds = {t: _bed(lab if t == "udp" else stack.enter_context(Lab("sttest")), t,
                        client_extra=("--reconnect",)) for t in TRANSPORTS}
        firsts = {}
        for t, bed in beds.items():
            assert bed.server_proc is not None and bed.client_proc is not None
            assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok, _logs(bed)
            first = firsts[t] = bed.server_proc
            assert first.stop() == 0, first.text
            assert "shutting down: " in first.lines[-1], first.text
            bed.start_server("-t", t)
        healed: dict[str, float] = {}
        start = time.monotonic()
        while len(healed) < len(beds):
            assert time.monotonic() - start < 30, (healed, {t: _logs(b) for t, b in
                                                            beds.items()})
            for t, bed in beds.items():
                if t not in healed and bed.client.ping(bed.server_overlay, count=1,
                                                       deadline=1).ok:
                    healed[t] = time.monotonic() - start
        assert healed["tcp"] < 5, healed  # at once, not on the 15 s timer
        for bed in beds.values():
            assert bed.server_proc is not None and bed.client_proc is not None
            bed.server_proc.wait_for("session up", timeout=5)
            assert bed.transfer(4 * MB)[0] == 4 * MB
            assert bed.client_proc.proc.poll() is None, _logs(bed)
            assert "Traceback" not in bed.client_proc.text, _logs(bed)


# --- keys that do not match ------------------------------------------------------------------

def _watched(ns: Namespace, label: str, *args: str) -> Watched:
    proc = ns.popen(simpletun_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    text=True)
    return Watched(proc, label)


def _port(bed: Testbed, transport: str) -> list[str]:
    return [] if transport == "icmp" else ["-p", str(bed.port)]


def _client(bed: Testbed, transport: str, peer_key: str, label: str,
            wait: float = 6) -> Watched:
    """A client of the bed's server on an interface of its own (no address: it never
    gets a session), with the client's key and ``peer_key`` as the server's; it gives up
    after ``wait`` seconds without a session (6: it retries once, 5 s after the first)."""
    return _watched(bed.client, f"{transport} client, {label}", "-i", unique_iface(),
                    "-k", bed.client_key, "-P", peer_key, "-t", transport,
                    "-c", bed.server_underlay, *_port(bed, transport),
                    "--handshake-timeout", f"{wait:g}")


def _target(bed: Testbed, transport: str) -> str:
    """The server as a client's lines show it."""
    if transport == "icmp":
        return f"{bed.server_underlay} (ICMP id "
    return f"{bed.server_underlay}:{bed.port}"


def _gave_up(proc: Watched, line: str) -> None:
    """The client (no --reconnect) gave up with exit status 1 and one line, starting with
    ``line`` and pointing to --reconnect, no traceback."""
    code = proc.proc.wait(30)
    proc.stop()
    said = f"--- {proc.label}:\n{proc.text}"
    assert code == 1, said
    assert "Traceback" not in proc.text, said
    assert proc.lines[-1].startswith(line), said
    assert "--reconnect" in proc.lines[-1], said
    assert sum(x.startswith("simpletun: ") for x in proc.lines) == 1, said


ANOTHER_KEY = "it was made for another public key than this tunnel's"
UNKNOWN_KEY = "its key is not one of this tunnel's peers (add it with --peer)"


def test_mismatched_keys_one_line_each_side(lab: Lab) -> None:
    """On each transport (all three at once, so that their clients' waits run side by
    side), a server that knows only a third key, and two clients: one names a wrong key
    for the server, the other has a key the server does not know. The server names each
    mistake once, however often the clients retry; each client gives up (after its
    --handshake-timeout) with one line saying which keys to check."""
    bed = Testbed(lab, keys=True, ipv6_overlay=False)
    _third, third_public = key_pair(lab.directory, "third")
    _fourth, fourth_public = key_pair(lab.directory, "fourth")
    servers = {t: _watched(bed.server, f"{t} server", "-i", unique_iface(), "-k",
                           bed.server_key, "-P", third_public, "-t", t, "-s",
                           *_port(bed, t)) for t in TRANSPORTS}
    try:
        for server in servers.values():
            server.wait_for("listening on")
        clients = [(t, _client(bed, t, fourth_public, "a wrong server key"))
                   for t in TRANSPORTS]
        clients += [(t, _client(bed, t, bed.server_public, "a key the server does not know"))
                    for t in TRANSPORTS]
        for t, client in clients:
            _gave_up(client, f"simpletun: no answer to the handshake from {_target(bed, t)}")
    finally:
        for server in servers.values():
            server.stop()
    for server in servers.values():
        said = f"--- {server.label}:\n{server.text}"
        assert "Traceback" not in server.text, said
        refused = [line for line in server.lines if "refused a handshake from" in line]
        # each client retried every 5 s: several refusals, one line each
        assert len(refused) == 2, said
        assert server.count(ANOTHER_KEY) == 1 and server.count(UNKNOWN_KEY) == 1, said
        assert all(f"refused a handshake from {bed.client_underlay}" in line
                   for line in refused), said
        drops = re.search(r"dropped (\d+) bad-mac1, (\d+) unknown-peer", server.lines[-1])
        assert drops is not None, said
        assert int(drops[1]) >= 2 and int(drops[2]) >= 2, said


def test_udp_and_icmp_need_keys(lab: Lab) -> None:
    ns = lab.host("srv")
    for transport in ("udp", "icmp"):
        done = ns.run(simpletun_cmd("-i", unique_iface(), "-s", "-t", transport), timeout=30)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert "Traceback" not in done.stderr
        last = lines[-1]
        assert f"-t {transport} is encrypted only" in last, done.stderr
        assert "--key" in last and "--peer" in last, done.stderr


def test_a_server_name_is_resolved_and_the_first_handshake_goes_at_once(lab: Lab) -> None:
    """-c takes a name (here localhost: server and client in one namespace, over
    loopback); neither device has an address, so nothing but the first handshake itself
    makes the client send: it must leave at once, not with the 5 s retry."""
    ns = lab.host("one")
    server_key, server_public = key_pair(lab.directory, "server")
    client_key, client_public = key_pair(lab.directory, "client")
    procs: list[Watched] = []
    try:
        for t in TRANSPORTS:
            port = [] if t == "icmp" else ["-p", str(56000 + len(procs))]
            server = _watched(ns, f"{t} server", "-i", unique_iface(), "-s", "-t", t,
                              "-k", server_key, "-P", client_public, *port)
            procs.append(server)
            server.wait_for("listening on")
            procs.append(_watched(ns, f"{t} client", "-i", unique_iface(), "-c", "localhost",
                                  "-t", t, "-k", client_key, "-P", server_public, *port))
        for proc in procs[1::2]:
            proc.wait_for("session up", timeout=4)
    finally:
        for proc in procs:
            proc.stop()
    for proc in procs:
        assert "Traceback" not in proc.text, proc.text


# --- what the client says when there is nothing to talk to -------------------------------

def test_client_without_a_server_gives_up_with_one_line(lab: Lab) -> None:
    """Nothing runs on the server host: each transport's client (all three at once) gives
    up with one line; over TCP the connection never came up, which it says."""
    bed = Testbed(lab, keys=True, ipv6_overlay=False)
    clients = [(t, _client(bed, t, bed.server_public, "no server", wait=2))
               for t in TRANSPORTS]
    for t, client in clients:
        what = "cannot reach" if t == "tcp" else "no answer to the handshake from"
        _gave_up(client, f"simpletun: {what} {_target(bed, t)}")


def test_icmp_without_raw_sockets_says_so(lab: Lab) -> None:
    bed = Testbed(lab, keys=True)
    unprivileged = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"]
    for command in (bed.client_command("-t", "icmp"), bed.server_command("-t", "icmp")):
        host: Namespace = bed.client if "-c" in command else bed.server
        done = host.run([*unprivileged, *simpletun_cmd(*command)], timeout=30)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip() == ("simpletun: the ICMP transport needs raw sockets: run "
                                       "it as root (or with CAP_NET_RAW)"), done.stderr

