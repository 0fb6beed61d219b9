"""The attacks of issues 12 and 13 repeated on every encrypted transport (issue 14): the
server and the client run ``simpletun -s/-c -t udp|tcp|icmp -k KEY -P PEER`` on a switch
that floods every frame to every port (:class:`simpletun.lab.wghost.Switch`), and an
attacker in a third namespace on that switch sniffs the session and sends what
:mod:`simpletun.lab.wgattack` builds:

- UDP: transport messages forged with the sniffed receiver index, replays of the client's
  real ones, an initiation made with the attacker's own key, junk of random sizes;
- TCP: a silent connection, junk connections (random bytes; valid-looking 2-byte frames
  of junk), a connection carrying an initiation of its own key, the client's captured
  frames replayed on a new connection, and a slowloris of 200 silent connections;
- ICMP: marked echo requests with junk, with the sniffed index, the client's captured
  requests replayed, an initiation of its own key, empty marked requests (polls) left to
  expire, and a flood of plain pings (answered, as the kernel would).

While each attack runs, the client pings the server every 50 ms. The witnesses, after it:

- the pings lost nothing beyond a small allowance;
- the server's ``wg show IFACE dump`` still has the client's endpoint (not displaced);
- the server's device received (its ``rx_packets``: what the engine wrote into it) no more
  than the client's device sent, and at least the pings that were answered: nothing the
  attacker sent reached it;
- ``simpletun wg-drops IFACE`` counts the attacks by reason (``replay``, ``bad-tag``,
  ``unknown-index``, ``unknown-peer``, ``bad-type``...);
- nothing answered the attacker but its plain pings (a capture on the attacker's port of
  the switch, which sees every frame).
"""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from simpletun.control import uapi_client
from simpletun.device import link
from simpletun.lab import wgattack
from simpletun.lab.netns import Lab, PingResult
from simpletun.lab.testbed import Watched, key_pair, simpletun_cmd, unique_iface
from simpletun.lab.wghost import Capture, Switch, WgHost, parse_dump
from simpletun.wire import icmp as icmp_wire
from simpletun.wireguard import keys, messages

OVERLAY = ("10.200.0.1/24", "10.200.0.2/24")
SERVER_OVERLAY = OVERLAY[0].split("/")[0]
PORT = 55555
#: the continuous ping: one every 50 ms
INTERVAL = 0.05


@dataclass
class Bed:
    lab: Lab
    transport: str
    family: int
    server: WgHost
    client: WgHost
    attacker: WgHost
    iface: str
    client_iface: str
    server_public: str
    client_public: str
    server_proc: Watched
    client_proc: Watched

    @property
    def target(self) -> tuple[str, int]:
        return self.server.underlay(self.family), PORT

    @property
    def server_ip(self) -> str:
        return self.server.underlay(self.family)

    @property
    def client_ip(self) -> str:
        return self.client.underlay(self.family)

    @property
    def attacker_ip(self) -> str:
        return self.attacker.underlay(self.family)

    def rx(self) -> int:
        """Packets the server's engine wrote into its device (the kernel's rx)."""
        return link.state(self.iface, netns=self.server.ns.name).counters["rx_packets"]

    def client_tx(self) -> int:
        """Packets the client's engine read from its device (the kernel's tx)."""
        return link.state(self.client_iface, netns=self.client.ns.name).counters["tx_packets"]

    def stats(self) -> Counter[str]:
        return Counter(uapi_client.stats(self.iface))

    def endpoint(self) -> str | None:
        """The server's idea of where the client is (``wg show IFACE dump``)."""
        done = subprocess.run(["wg", "show", self.iface, "dump"], capture_output=True,
                              text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return parse_dump(done.stdout).peer(self.client_public).endpoint

    def wg_drops(self) -> dict[str, int]:
        """``simpletun wg-drops IFACE``, run in the server's namespace, read back."""
        done = self.server.ns.run(simpletun_cmd("wg-drops", self.iface), timeout=30)
        assert done.returncode == 0, done.stderr
        out = {}
        for line in done.stdout.splitlines():
            if line.endswith("nothing dropped"):
                continue
            reason, n = line.split()
            out[reason] = int(n)
        return out

    def logs(self) -> str:
        return (f"--- server:\n{self.server_proc.text}\n"
                f"--- client:\n{self.client_proc.text}")


@contextmanager
def attack_bed(lab: Lab, transport: str, family: int = 4,
               server_extra: Sequence[str] = ()) -> Iterator[Bed]:
    """Server (with ``server_extra`` arguments), client and attacker on one flooding
    switch; the tunnel up over the ``family`` underlay with a live session (pinged)."""
    switch = Switch(lab)
    server, client, attacker = (switch.join(n) for n in ("server", "client", "attacker"))
    server_key, server_public = key_pair(lab.directory, "server")
    client_key, client_public = key_pair(lab.directory, "client")
    iface, client_iface = unique_iface(), unique_iface()
    port = [] if transport == "icmp" else ["-p", str(PORT)]
    server_proc = Watched(server.ns.popen(
        simpletun_cmd("-i", iface, "--address", OVERLAY[0], "-k", server_key,
                      "-P", client_public, "-t", transport, *port, "-s", *server_extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), "server")
    procs = [server_proc]
    try:
        server_proc.wait_for("listening on")
        where = server.underlay(family)
        client_proc = Watched(client.ns.popen(
            simpletun_cmd("-i", client_iface, "--address", OVERLAY[1], "-k", client_key,
                          "-P", server_public, "-t", transport, *port, "-c",
                          f"[{where}]" if ":" in where and port else where),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), "client")
        procs.append(client_proc)
        client_proc.wait_for("session up")
        link.wait_usable(iface, netns=server.ns.name)
        link.wait_usable(client_iface, netns=client.ns.name)
        bed = Bed(lab, transport, family, server, client, attacker, iface, client_iface,
                  server_public, client_public, server_proc, client_proc)
        first = client.ns.ping(SERVER_OVERLAY, count=3, interval=INTERVAL, deadline=5)
        assert first.ok, first.output
        try:
            yield bed
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{bed.logs()}") from None
    finally:
        for proc in reversed(procs):
            proc.stop()



# --- the witnesses -----------------------------------------------------------------------

@dataclass
class Outcome:
    ping: PingResult
    rx: int  # packets the server's device received meanwhile
    client_tx: int  # packets the client's device sent meanwhile
    drops: dict[str, int]  # what the server counted meanwhile (simpletun wg-drops)


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def wait_until(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.05)


def under_attack(bed: Bed, attack: Callable[[], dict[str, int]], *,
                 pings: int = 60) -> tuple[Outcome, dict[str, int]]:
    """Run ``attack`` (which returns the drops it expects) while the client pings the
    server ``pings`` times, every 50 ms; wait for the ping and for those drops."""
    drops_before = bed.wg_drops()  # (what the CLI prints: the counts that are not zero)
    base = bed.stats()
    rx, tx = bed.rx(), bed.client_tx()
    ping = bed.client.ns.popen(["ping", "-n", "-i", str(INTERVAL), "-c", str(pings), "-w",
                                str(int(pings * INTERVAL) + 10), SERVER_OVERLAY],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        expected = attack()
        out, _ = ping.communicate(timeout=pings * INTERVAL + 20)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
        bed.client.ns.procs.remove(ping)
    deadline = time.monotonic() + 5
    while not all(bed.stats()[k] - base[k] >= n for k, n in expected.items()):
        assert time.monotonic() < deadline, \
            f"expected drops {expected}, got {delta(bed.stats(), base)}"
        time.sleep(0.05)
    time.sleep(0.3)  # anything unexpected shows too
    outcome = Outcome(PingResult.parse(SERVER_OVERLAY, pings, out), bed.rx() - rx,
                      bed.client_tx() - tx, delta(bed.wg_drops(), drops_before))
    return outcome, expected


def assert_unharmed(bed: Bed, outcome: Outcome, endpoint: str | None,
                    allowance: int = 3) -> None:
    """The pings got through (``allowance`` lost at most), the client's session stayed
    where it was, and the server's device got the client's packets and nothing else."""
    ping = outcome.ping
    assert ping.sent > 0 and ping.received >= ping.sent - allowance, ping.output
    assert bed.endpoint() == endpoint, "the client's session was displaced"
    # every answered ping went through the server's device; nothing else but what the
    # client's device sent (its pings, and whatever else its kernel sent) came out of it
    assert ping.received <= outcome.rx <= outcome.client_tx, outcome
    assert outcome.client_tx <= ping.sent + 5, outcome
    assert bed.server_proc.proc.poll() is None and bed.client_proc.proc.poll() is None
    assert bed.server_proc.count("session up") == 1, bed.server_proc.text
    assert bed.client_proc.count("session up") == 1, bed.client_proc.text
    assert bed.server_proc.count("moved from") == 0, bed.server_proc.text
    assert "Traceback" not in bed.logs()


def reasons(msgs: Sequence[bytes]) -> Counter[str]:
    """What the core counts for each of ``msgs`` (none of which may be a valid message)."""
    got: Counter[str] = Counter()
    for m in msgs:
        k = messages.kind(m)
        assert isinstance(k, str), f"the junk holds a well-formed message of type {k}"
        got[k] += 1
    return got


def junk(rng: random.Random, count: int, max_size: int = 1400) -> list[bytes]:
    """Random non-empty messages of random sizes with no valid type word (``runt``,
    ``bad-type``)."""
    return [m for m in wgattack.random_datagrams(rng, count, max_size) if m]


def forged(live: int, rng: random.Random) -> dict[str, list[bytes]]:
    """Transport messages with the live session's receiver index (the tag fails) and
    with one next to it (no such index); runts and a bad size with the right type."""
    g = wgattack.typed_garbage
    return {
        "bad-tag": [wgattack.transport(live, (1 << 40) + n, rng.randbytes(n))
                    for n in (16, 17, 100, 1000)],
        "unknown-index": [wgattack.transport(live ^ 0x5A5A0000, 0, rng.randbytes(64))],
        "bad-size": [g(messages.TRANSPORT, 31, rng), g(messages.INITIATION, 100, rng)],
    }


def flat(groups: dict[str, list[bytes]]) -> tuple[list[bytes], dict[str, int]]:
    msgs = [m for group in groups.values() for m in group]
    random.Random(7).shuffle(msgs)
    return msgs, {k: len(v) for k, v in groups.items() if v}


def merge(*counts: dict[str, int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total)


# --- UDP ---------------------------------------------------------------------------------

def to_server_udp(bed: Bed, cap: Capture) -> list[bytes]:
    return [d.payload for d in cap.datagrams() if d.src == bed.client_ip
            and d.dst == bed.server_ip and d.wg_type == "data"]


@pytest.mark.parametrize(("family", "extra"), [(4, ()), (6, ()), (4, ("--workers", "2"))],
                         ids=["ipv4-underlay", "ipv6-underlay", "ipv4-two-workers"])
def test_udp(lab: Lab, family: int, extra: tuple[str, ...]) -> None:
    """(With two workers the forged and replayed messages reach the worker that owns the
    session's index, the junk and handshakes the leader: each counted once, by the one
    that got it, in the leader's counters.)"""
    with attack_bed(lab, "udp", family, extra) as bed:
        endpoint = bed.endpoint()
        assert endpoint is not None and bed.client_ip in endpoint
        with Capture(bed.attacker.ns, "eth0") as cap:
            assert bed.client.ns.ping(SERVER_OVERLAY, count=4, interval=INTERVAL).ok
            time.sleep(0.1)
        sniffed = to_server_udp(bed, cap)
        assert len(sniffed) >= 4, cap.datagrams()
        live = wgattack.receiver_index(sniffed[0])
        rng = random.Random(14)
        groups = forged(live, rng)
        groups["replay"] = sniffed * 2
        groups["unknown-peer"] = [wgattack.stranger_initiation(
            keys.from_base64(bed.server_public), sender=n) for n in (1, 2)]
        noise = junk(rng, 40)
        msgs, expected = flat(groups)

        def attack() -> dict[str, int]:
            time.sleep(0.5)  # in the middle of the pings
            wgattack.send_all(bed.attacker.ns.name, bed.target, [*msgs, *noise], gap=0.002)
            return merge(expected, reasons(noise))

        with Capture(bed.attacker.ns, "eth0", f"udp and dst host {bed.attacker_ip}") as cap:
            outcome, want = under_attack(bed, attack)
        assert outcome.drops == want
        assert cap.datagrams() == [], "the server answered the attacker"
        assert_unharmed(bed, outcome, endpoint)


# --- TCP ---------------------------------------------------------------------------------

def whole_frames(payload: bytes) -> list[bytes]:
    """The messages of a segment that holds whole frames only (else none: a segment that
    starts or ends inside a frame is skipped)."""
    msgs = wgattack.tcp_messages(payload)
    return msgs if len(wgattack.tcp_frame(*msgs)) == len(payload) else []


def established(bed: Bed) -> int:
    """TCP connections to the server's port, established, on the server's side."""
    done = bed.server.ns.run(["ss", "-Htn", "state", "established",
                              f"( sport = :{PORT} )"], timeout=10)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


def unanswered(sock: socket.socket) -> bool:
    """Whether nothing came back on ``sock`` (it may have been closed)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return True


def test_tcp(lab: Lab) -> None:
    with attack_bed(lab, "tcp") as bed:
        endpoint = bed.endpoint()
        assert endpoint is not None and bed.client_ip in endpoint
        assert established(bed) == 1
        with Capture(bed.attacker.ns, "eth0", f"tcp port {PORT}") as cap:
            assert bed.client.ns.ping(SERVER_OVERLAY, count=4, interval=INTERVAL).ok
            time.sleep(0.1)
        sniffed = [m for s in wgattack.tcp_segments(cap.records)
                   if s.src == bed.client_ip and s.dst == bed.server_ip
                   for m in whole_frames(s.payload)]
        data = [m for m in sniffed if messages.kind(m) == messages.TRANSPORT]
        assert len(data) >= 4, sniffed
        live = wgattack.receiver_index(data[0])
        rng = random.Random(14)
        # random bytes: read as 2-byte lengths and frames of junk; the last frame never
        # completes (held, unread, until the connection goes)
        noise = rng.randbytes(300_000)
        noise_msgs = wgattack.tcp_messages(noise)
        assert len(noise_msgs) >= 3
        framed_junk = junk(rng, 30)
        groups = forged(live, rng)
        replays = data * 2
        stranger = wgattack.stranger_initiation(keys.from_base64(bed.server_public))
        # slowloris: connections that say nothing (and one more among the attacks)
        opened = time.monotonic()
        held = [wgattack.connect_in(bed.attacker.ns.name, bed.target) for _ in range(200)]
        conns: list[socket.socket] = []

        def send(payload: bytes) -> None:
            conn = wgattack.connect_in(bed.attacker.ns.name, bed.target)
            conns.append(conn)
            conn.sendall(payload)

        def attack() -> dict[str, int]:
            time.sleep(0.3)
            wait_until("the slowloris", lambda: established(bed) == 1 + len(held))
            send(b"")  # silent
            send(noise)
            send(wgattack.tcp_frame(*framed_junk))
            send(wgattack.tcp_frame(stranger))
            send(wgattack.tcp_frame(*replays))
            msgs, expected = flat(groups)
            send(wgattack.tcp_frame(*msgs))
            return merge(expected, reasons(noise_msgs), reasons(framed_junk),
                         {"unknown-peer": 1, "replay": len(replays)})

        to_attacker = f"tcp and dst host {bed.attacker_ip}"
        try:
            with Capture(bed.attacker.ns, "eth0", to_attacker) as cap:
                outcome, want = under_attack(bed, attack)
                # the server still has the client's connection and the attacker's
                assert established(bed) == 1 + len(held) + len(conns)
            assert outcome.drops == want
            answers = [s for s in wgattack.tcp_segments(cap.records) if s.payload]
            assert answers == [], "the server answered the attacker"
            assert all(unanswered(c) for c in held + conns)
            assert_unharmed(bed, outcome, endpoint)
            # the unproven connections are closed after the link's idle timeout (10 s);
            # the client's stays
            wait_until("the attacker's connections closed", lambda: established(bed) == 1,
                       timeout=opened + 20 - time.monotonic())
            assert all(c.recv(1) == b"" for c in held)  # closed by the server
            assert bed.endpoint() == endpoint
            assert bed.client.ns.ping(SERVER_OVERLAY, count=3, interval=INTERVAL).ok
            assert len(bed.server_proc.lines) <= 6, bed.server_proc.text
        finally:
            for c in held + conns:
                c.close()


# --- ICMP --------------------------------------------------------------------------------

#: the attacker's echo identifiers: for its marked requests, for its plain pings
MARKED_ID, PLAIN_ID = 0x4141, 0x5050


def plain_ping(seq: int, v6: bool) -> bytes:
    """An ordinary echo request (56 bytes of payload, as ping sends)."""
    payload = bytes(range(56))
    if v6:
        return struct.pack("!BBHHH", 128, 0, 0, PLAIN_ID, seq) + payload
    head = struct.pack("!BBHHH", 8, 0, 0, PLAIN_ID, seq)
    return icmp_wire.seal4(head, payload) + payload


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
def test_icmp(lab: Lab, family: int) -> None:
    v6 = family == 6
    with attack_bed(lab, "icmp", family) as bed:
        endpoint = bed.endpoint()
        assert endpoint is not None and bed.client_ip in endpoint
        with Capture(bed.attacker.ns, "eth0", "icmp or icmp6") as cap:
            assert bed.client.ns.ping(SERVER_OVERLAY, count=4, interval=INTERVAL).ok
            time.sleep(0.1)
        requests = [e for e in wgattack.echoes(cap.records) if e.request
                    and e.src == bed.client_ip and e.dst == bed.server_ip
                    and e.mark == icmp_wire.REQUEST_MAGIC
                    and messages.kind(e.message) == messages.TRANSPORT]
        assert len(requests) >= 4, wgattack.echoes(cap.records)
        live = wgattack.receiver_index(requests[0].message)
        rng = random.Random(14)
        groups = forged(live, rng)
        noise = junk(rng, 40)
        msgs, expected = flat(groups)
        stranger = wgattack.stranger_initiation(keys.from_base64(bed.server_public))
        ours = [*msgs, *noise, stranger]
        # the client's requests again, its identifier and sequence numbers too (from the
        # attacker's address: the same echo from elsewhere)
        replays = [wgattack.marked_request(e.ident, e.seq, e.message, v6=v6)
                   for e in requests * 2]
        # polls: requests that carry nothing, left to expire
        polls = [wgattack.marked_request(MARKED_ID, 1000 + n, b"", v6=v6) for n in range(10)]
        bad_sum = [] if v6 else [wgattack.marked_request(MARKED_ID, 2000, noise[0],
                                                         checksum=False)]
        plain = [plain_ping(n, v6) for n in range(200)]
        family_ = socket.AF_INET6 if v6 else socket.AF_INET
        proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
        sent_at = [0.0]

        def attack() -> dict[str, int]:
            time.sleep(0.3)
            with wgattack.any_socket_in(bed.attacker.ns.name, family_, socket.SOCK_RAW,
                                        proto) as sock:
                for seq, m in enumerate(ours):
                    sock.sendto(wgattack.marked_request(MARKED_ID, seq, m, v6=v6),
                                (bed.server_ip, 0))
                    time.sleep(0.002)
                for request in [*replays, *polls, *bad_sum, *plain]:
                    sock.sendto(request, (bed.server_ip, 0))
                    time.sleep(0.001)
            sent_at[0] = time.monotonic()
            return merge(expected, reasons(noise),
                         {"unknown-peer": 1, "replay": len(replays)})

        with Capture(bed.attacker.ns, "eth0",
                     f"(icmp or icmp6) and dst host {bed.attacker_ip}") as cap:
            outcome, want = under_attack(bed, attack)
            # the attacker's requests expire unanswered (a peer's would get an empty reply)
            time.sleep(max(0.0, sent_at[0] + icmp_wire.HOLD + 1.0 - time.monotonic()))
        core = {k: n for k, n in outcome.drops.items() if k != "bad-icmp"}
        assert core == want
        answers = wgattack.echoes(cap.records)
        marked = [e for e in answers if e.ident != PLAIN_ID
                  or e.mark in (icmp_wire.REQUEST_MAGIC, icmp_wire.REPLY_MAGIC)]
        assert marked == [], "the server answered the attacker's marked requests"
        # its plain pings were answered as the kernel would have: each, with its payload
        assert sorted(e.seq for e in answers if not e.request) == list(range(len(plain)))
        assert all(e.payload == bytes(range(56)) for e in answers)
        assert_unharmed(bed, outcome, endpoint)
        assert len(bed.server_proc.lines) <= 6, bed.server_proc.text
        # what the link itself drops (a bad ICMP checksum) is counted in wg-drops too
        assert outcome.drops.get("bad-icmp", 0) == len(bad_sum), (
            "the ICMP link's drops are missing from wg-drops", outcome.drops)
