"""The TCP link (transport.tcp_link) over loopback with real sockets: messages both ways,
reconnects, many clients, backpressure, and the server's defenses against connections
that prove nothing."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from simpletun.transport import tcp, tcp_link
from simpletun.transport.link import Address
from simpletun.tunnel.backoff import Backoff

Link = tcp_link.TcpServer | tcp_link.TcpClient
L = TypeVar("L", tcp_link.TcpServer, tcp_link.TcpClient)
DEADLINE = 10.0  # seconds before a test that waits for something gives up (failing)
FILL = bytes(range(1, 251)) * 160  # no zeros: a misaligned stream would not pass for one


class Net:
    """Drives links as an engine would: tick, wait on their fds, drain receive; collects
    what each link received as (bytes, address)."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.got: dict[int, list[tuple[bytes, Address]]] = {}
        self.closed: dict[int, list[Address]] = {}
        self._buf = bytearray(65536)

    def add(self, link: L) -> L:
        self.links.append(link)
        self.got[id(link)] = []
        self.closed[id(link)] = []
        return link

    def received(self, link: Link) -> list[tuple[bytes, Address]]:
        return self.got[id(link)]

    def step(self, now: float | None = None, wait: float = 0.02,
             skip: tuple[Link, ...] = ()) -> None:
        t = time.monotonic() if now is None else now
        timeouts = [x for link in self.links if link not in skip
                    if (x := link.tick(t)) is not None]
        fds = [link.fileno() for link in self.links if link not in skip]
        select.select(fds, [], [], min([wait, *timeouts]))
        for link in self.links:
            if link in skip:
                continue
            while (r := link.receive(self._buf)) is not None:
                msgs, address = r
                if not msgs:
                    self.closed[id(link)].append(address)
                self.got[id(link)] += [(bytes(m), address) for m in msgs]

    def until(self, done: Callable[[], bool], now: float | None = None,
              skip: tuple[Link, ...] = ()) -> None:
        end = time.monotonic() + DEADLINE
        while not done():
            assert time.monotonic() < end, "gave up waiting"
            self.step(now, skip=skip)

    def close(self) -> None:
        for link in self.links:
            link.close()


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.close()


def _fast(client: tcp_link.TcpClient) -> tcp_link.TcpClient:
    client.backoff = Backoff(0.01, 0.05)
    return client


def _up(net: Net, server: tcp_link.TcpServer, host: str = "127.0.0.1",
        ) -> tuple[tcp_link.TcpClient, Address]:
    """A connected client, and its address as the server knows it (after a hello)."""
    client = _fast(tcp_link.client(host, server.port))
    net.add(client)
    net.until(lambda: client.up)
    assert client.connected() == [client.server_address]
    assert client.connected() == []  # once per connect
    hello = b"hello from %d" % id(client)
    client.send(hello, client.server_address)
    net.until(lambda: any(m == hello for m, _ in net.received(server)))
    address = next(a for m, a in net.received(server) if m == hello)
    return client, address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize(("bind", "connect"), [("127.0.0.1", "127.0.0.1"),
                                               (None, "127.0.0.1"), (None, "::1")])
def test_messages_both_ways(net: Net, bind: str | None, connect: str) -> None:
    server = net.add(tcp_link.server(0, bind))
    assert server.port > 0 and server.connected() == []
    client, address = _up(net, server, connect)
    assert client.port == 0 and client.name == server.name == "TCP"
    assert client.server_address[1] == server.port
    assert server.show(address) == tcp.show(address)

    big = bytes(range(256)) * 255 + b"\xee" * 255  # 65535 bytes, the most a frame holds
    small = [b"%05d" % i * (1 + i % 7) for i in range(300)]
    server.send(big, address)
    server.send_batch([*small, big, b"last"], address)
    net.until(lambda: len(net.received(client)) == 303)
    assert [m for m, _ in net.received(client)] == [big, *small, big, b"last"]
    assert {a for _, a in net.received(client)} == {client.server_address}

    net.received(server).clear()
    client.send_batch([big, *small, memoryview(big)], client.server_address)
    net.until(lambda: len(net.received(server)) == 302)
    assert [m for m, _ in net.received(server)] == [big, *small, big]
    assert {a for _, a in net.received(server)} == {address}

    # a message the 2-byte length cannot carry is dropped and counted, not sent in pieces
    client.send(bytes(65536), client.server_address)
    client.send(b"after", client.server_address)
    net.until(lambda: net.received(server)[-1][0] == b"after")
    assert client.drops["too-large"] == 1
    assert not server.drops and not server.blocked and not client.blocked


def test_client_reconnects_after_the_server_closes(net: Net) -> None:
    server = net.add(tcp_link.server(0, "127.0.0.1"))
    client, address = _up(net, server)
    port = server.port
    server.close()
    net.links.remove(server)
    net.until(lambda: not client.up)
    assert client.last_error == "the server closed the connection"
    assert net.closed[id(client)] == [client.server_address]
    # while it is down, sends are dropped and counted
    client.send(b"lost", client.server_address)
    assert client.drops["not-connected"] == 1

    again = net.add(tcp_link.server(port, "127.0.0.1"))
    net.until(lambda: client.up)
    assert client.connected() == [client.server_address]
    assert client.last_error == "" and client.attempts == 0
    client.send(b"back", client.server_address)
    net.until(lambda: bool(net.received(again)))
    assert net.received(again)[0][0] == b"back"
    new_address = net.received(again)[0][1]
    assert new_address != address  # a new connection, from a new port

    # the server forgets a connection its peer closed
    client.close()
    net.links.remove(client)
    net.until(lambda: new_address in net.closed[id(again)])
    again.send(b"to nobody", new_address)
    assert again.drops["no-connection"] == 1
    assert again.connections == 0


def test_server_tells_three_clients_apart(net: Net) -> None:
    server = net.add(tcp_link.server(0))
    clients = [_up(net, server, host) for host in ("127.0.0.1", "::1", "127.0.0.1")]
    addresses = [a for _, a in clients]
    assert len(set(addresses)) == 3
    for i, (_, address) in enumerate(clients):
        server.send_batch([b"for client %d" % i] * 3, address)
    net.until(lambda: all(len(net.received(c)) == 3 for c, _ in clients))
    for i, (client, _) in enumerate(clients):
        assert [m for m, _ in net.received(client)] == [b"for client %d" % i] * 3
    server.peers(frozenset(addresses))
    assert server.unproven == 0 and server.connections == 3


def _fill_then_drain(net: Net, sender: Link, receiver: Link, to: Address) -> None:
    net.received(receiver).clear()
    sent = 0
    # the receiver does not read: the kernel's buffers fill, then the link's
    while not sender.drops["tcp-backlog"]:
        assert sent < 5000, "never blocked"
        sender.send_batch([b"%08d" % (sent + i) + FILL for i in range(4)], to)
        sent += 4
        if not sender.blocked:
            assert not sender.drops["tcp-backlog"]  # drops only past the hard cap
        # the sender's loop runs (flushing when it can), the receiver's does not
        net.step(wait=0, skip=(receiver,))
    assert sender.blocked
    dropped = sender.drops["tcp-backlog"]
    assert dropped % 4 == 0  # a whole batch is dropped, never half a message
    net.until(lambda: not sender.blocked)  # the receiver reads: it drains
    net.until(lambda: len(net.received(receiver)) == sent - dropped)
    numbers = [int(m[:8]) for m, _ in net.received(receiver)]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert all(m[8:] == FILL for m, _ in net.received(receiver))


def test_backpressure_blocks_then_clears(net: Net, monkeypatch: pytest.MonkeyPatch,
                                         ) -> None:
    monkeypatch.setattr(tcp_link, "HIGH_WATER", 256 * 1024)
    monkeypatch.setattr(tcp_link, "HARD_CAP", 1024 * 1024)
    server = net.add(tcp_link.server(0, "127.0.0.1"))
    client, address = _up(net, server)
    _fill_then_drain(net, server, client, address)
    _fill_then_drain(net, client, server, client.server_address)


def test_one_stalled_peer_does_not_stop_the_others(net: Net,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A server with two peers, one of which stops reading: no backpressure (the device
    goes on being read for the other), the stalled one's messages beyond HIGH_WATER are
    dropped and counted; only when every peer is backed up does the link block."""
    monkeypatch.setattr(tcp_link, "HIGH_WATER", 256 * 1024)
    monkeypatch.setattr(tcp_link, "HARD_CAP", 1024 * 1024)
    server = net.add(tcp_link.server(0, "127.0.0.1"))
    stalled, a = _up(net, server)
    alive, b = _up(net, server)
    server.peers(frozenset({a, b}))
    sent = 0
    while not server.drops["tcp-backlog"]:
        assert sent < 5000, "never dropped"
        server.send_batch([FILL] * 4, a)
        sent += 4
        assert not server.blocked  # the other peer still gets its traffic
        net.step(wait=0, skip=(stalled,))
    before = len(net.received(alive))
    server.send(b"for the live one", b)
    net.until(lambda: len(net.received(alive)) > before, skip=(stalled,))
    assert net.received(alive)[-1][0] == b"for the live one"
    # now the other one stops reading too: every peer is backed up, the link blocks
    while not server.blocked:
        server.send_batch([FILL] * 4, b)
        net.step(wait=0, skip=(stalled, alive))
    net.until(lambda: not server.blocked)  # both read again: it drains


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    return s


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_silent_connections_never_push_out_a_peer(net: Net,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_link, "MAX_UNPROVEN", 20)
    server = net.add(tcp_link.server(0, "127.0.0.1"))
    client, address = _up(net, server)  # the oldest connection of all
    server.peers(frozenset({address}))
    raws: list[socket.socket] = []
    try:
        for _ in range(300):
            raws.append(_raw(server.port))
            if len(raws) % 50 == 0:
                net.step(wait=0)
        net.until(lambda: server.connections == 21 and
                  sum(not _closed(s) for s in raws[-20:]) == 20 and
                  all(_closed(s) for s in raws[:280]))
        assert server.unproven == 20
        assert client.up
        server.send(b"still here", address)
        net.until(lambda: bool(net.received(client)))
        assert net.received(client)[0][0] == b"still here"
    finally:
        for s in raws:
            s.close()


def test_idle_unproven_connections_are_closed(net: Net,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_link, "UNPROVEN_IDLE", 5.0)
    server = net.add(tcp_link.server(0, "127.0.0.1"))
    client, address = _up(net, server)
    server.peers(frozenset({address}))
    silent, dribbling, talking = (_raw(server.port) for _ in range(3))
    try:
        t = 1000.0
        net.until(lambda: server.connections == 4, now=t)
        assert server.tick(t) == 5.0
        dribbling.send(b"\x00")  # half a length: proves nothing
        talking.send(b"\x00\x02hi")  # a complete message
        net.until(lambda: any(m == b"hi" for m, _ in net.received(server)), now=t + 3)
        assert server.tick(t + 3) == 2.0
        assert server.tick(t + 4.5) == 0.5
        assert not any(_closed(s) for s in (silent, dribbling, talking))
        assert server.tick(t + 5) == 3.0  # the first two are closed; "talking" has 3 s
        net.until(lambda: _closed(silent) and _closed(dribbling), now=t + 5)
        assert server.connections == 2 and not _closed(talking)
        assert server.tick(t + 8) is None
        net.until(lambda: _closed(talking), now=t + 8)
        assert server.tick(t + 1000) is None  # proven: never closed for silence
        assert server.connections == 1 and client.up
        # a peer that is no longer a peer is unproven again, and times out like any other
        server.peers(frozenset())
        assert server.tick(t + 1001) == 5.0
        assert server.tick(t + 1006) is None
        net.until(lambda: not client.up, now=t + 1006, skip=(server,))
    finally:
        for s in (silent, dribbling, talking):
            s.close()


def test_client_against_a_closed_port_retries_with_backoff(net: Net) -> None:
    port = _free_port()
    client = tcp_link.client("127.0.0.1", port)
    net.add(client)
    client.backoff = Backoff(0.25, 5.0, rand=lambda: 0.5)  # no jitter
    assert client.server_address == ("127.0.0.1", port)
    now = 50.0
    delays = []
    for attempt in range(1, 8):
        # each attempt starts from tick, returns at once, and fails when the refusal
        # arrives; the next is due after the backoff
        net.until(lambda: bool(client.last_error) and not client._connecting, now=now)
        assert client.attempts == attempt and not client.up
        assert client.last_error == ("connection refused: is 'simpletun -s -t tcp' running "
                                     "there, on this port?")
        delay = client.tick(now)
        assert delay is not None
        delays.append(delay)
        assert client.tick(now + delay / 2) == pytest.approx(delay / 2)
        assert client.attempts == attempt  # not before it is due
        client.last_error = ""
        now += delay
    assert delays == pytest.approx([0.25, 0.5, 1, 2, 4, 5, 5])
    client.send(b"x", client.server_address)
    client.send_batch([b"y", b"z"], client.server_address)
    assert client.drops["not-connected"] == 3
    assert client.connected() == []

    # once connected, the backoff starts over
    server = net.add(tcp_link.server(port, "127.0.0.1"))
    net.until(lambda: client.up, now=now)
    assert client.connected() == [client.server_address]
    server.close()
    net.links.remove(server)
    net.until(lambda: not client.up, now=now)
    assert client.tick(now) == pytest.approx(0.25)


def test_a_connect_nobody_answers_times_out(net: Net) -> None:
    # a listener whose accept queue is full drops SYNs: the connect hangs
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        queued = [socket.socket() for _ in range(2)]
        for s in queued:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        client = net.add(tcp_link.client("127.0.0.1", port))
        client.backoff = Backoff(0.25, 5.0, rand=lambda: 0.5)
        try:
            assert client.tick(0.0) == tcp_link.CONNECT_TIMEOUT  # under way, not waiting
            for t in (0.5, 1.0, 2.0):
                net.step(now=t, wait=0.2)
            assert (client.up, client.attempts, client.last_error) == (False, 1, "")
            assert client.tick(9.0) == pytest.approx(1.0)
            assert client.tick(10.0) == pytest.approx(0.25)
            assert client.last_error == ("no answer within 10 s (a firewall, or a wrong "
                                         "address?)")
            assert client.tick(10.25) == tcp_link.CONNECT_TIMEOUT  # the next attempt
            assert client.attempts == 2
        finally:
            for s in queued:
                s.close()


def test_a_name_that_does_not_resolve_is_one_line() -> None:
    with pytest.raises(tcp.TransportError) as info:
        tcp_link.client("no-such-host.invalid", 55555)
    assert str(info.value) == ("cannot resolve 'no-such-host.invalid': give the server's IP "
                               "address or a name this host can resolve")


def test_sends_to_unknown_addresses_are_counted(net: Net) -> None:
    server = net.add(tcp_link.server(0, "127.0.0.1"))
    client, _ = _up(net, server)
    server.send(b"x", ("127.0.0.1", 1))
    server.send_batch([b"x", b"y"], ("127.0.0.1", 1))
    assert server.drops["no-connection"] == 3
    client.send(b"x", ("127.0.0.1", 1))  # not its server
    assert client.drops["no-connection"] == 1
