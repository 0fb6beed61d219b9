"""The ICMP link against the real kernel: a Server and Clients in their own namespaces,
joined by veth pairs, exchanging messages in echo requests and replies over IPv4 and IPv6.

The test process holds sockets in several namespaces at once (a socket belongs to the
namespace it was made in), so both ends are driven here, step by step, with no engine.
Waits have deadlines only to fail instead of hanging; nothing asserts on speed.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from simpletun.lab import netns
from simpletun.lab.netns import Lab, Namespace, veth
from simpletun.transport.icmp import (
    MAX_QUEUED,
    QUEUE_AGE,
    QUEUE_TOTAL,
    Client,
    EchoAddress,
    Server,
)
from simpletun.transport.link import Address, Link

HOLD = 0.3  # the server's hold, short so that expiry tests are quick


@contextmanager
def _within(ns: Namespace) -> Iterator[None]:
    """Sockets made in this block belong to ``ns``."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        netns.enter(ns.name)
        yield
    finally:
        netns._libc.setns(home, netns.CLONE_NEWNET)
        os.close(home)


@dataclass
class _Net:
    server_ns: Namespace
    a_ns: Namespace
    b_ns: Namespace
    v6: bool
    links: list[Link] = field(default_factory=list)

    def server_for(self, ns: Namespace) -> str:
        """The server's address as ``ns`` reaches it."""
        net = 1 if ns is self.a_ns else 2
        return f"fd0{net}::1" if self.v6 else f"10.{net}.0.1"

    def address(self, client: Client, ns: Namespace) -> EchoAddress:
        """The address the server sees ``client`` (in ``ns``) at."""
        net = 1 if ns is self.a_ns else 2
        return (f"fd0{net}::2" if self.v6 else f"10.{net}.0.2", client.ident)

    def server(self, **kwargs: frozenset[int]) -> Server:
        with _within(self.server_ns):
            s = Server(**kwargs)
        s.credits.hold = HOLD
        self.links.append(s)
        return s

    def client(self, ns: Namespace) -> Client:
        with _within(ns):
            c = Client(self.server_for(ns))
        self.links.append(c)
        return c

    def close(self) -> None:
        for link in self.links:
            link.close()


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def net(lab: Lab, request: pytest.FixtureRequest) -> Iterator[_Net]:
    """Server namespace s between a and b (a subnet each), its kernel's echo replies off
    (as quiet_kernel leaves them), so every reply seen is the Server's."""
    s, a, b = lab.host("s"), lab.host("a"), lab.host("b")
    veth(s, "veth-a", a, "veth0", a_addrs=["10.1.0.1/24", "fd01::1/64"],
         b_addrs=["10.1.0.2/24", "fd01::2/64"])
    veth(s, "veth-b", b, "veth0", a_addrs=["10.2.0.1/24", "fd02::1/64"],
         b_addrs=["10.2.0.2/24", "fd02::2/64"])
    s.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    s.sysctl("net.ipv6.icmp.echo_ignore_all", "1")
    the_net = _Net(s, a, b, v6=request.param == 6)
    try:
        yield the_net
    finally:
        the_net.close()


class _Log:
    """What one link's receives returned: every receive (messages, address)."""

    def __init__(self) -> None:
        self.events: list[tuple[list[bytes], Address]] = []

    def messages(self) -> list[tuple[bytes, Address]]:
        return [(m, address) for ms, address in self.events for m in ms]

    def empty_from(self, address: Address) -> int:
        """Receives from ``address`` that carried no message (a client: empty replies)."""
        return sum(1 for ms, ad in self.events if not ms and ad == address)

    def others(self, address: Address) -> int:
        return sum(1 for _ms, ad in self.events if ad != address)


def _pump(logs: dict[Link, _Log], until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Tick and receive on every link until ``until()`` (failing after ``timeout``)."""
    buf = bytearray(65536)
    deadline = time.monotonic() + timeout
    while True:
        for link, log in logs.items():
            while (got := link.receive(buf)) is not None:
                log.events.append(([bytes(m) for m in got[0]], got[1]))
        if until():
            return
        assert time.monotonic() < deadline, "timed out waiting"
        now = time.monotonic()
        for link in logs:
            link.tick(now)
        select.select([link.fileno() for link in logs], [], [], 0.02)


def test_messages_both_ways_and_each_client_gets_its_own(net: _Net) -> None:
    server, a, b = net.server(), net.client(net.a_ns), net.client(net.b_ns)
    a_at, b_at = net.address(a, net.a_ns), net.address(b, net.b_ns)
    logs = {server: _Log(), a: _Log(), b: _Log()}
    a.send(b"from a 1", a.server)
    b.send(b"from b 1", b.server)
    a.send_batch([b"from a 2", memoryview(b"from a 3")], a.server)
    _pump(logs, lambda: len(logs[server].messages()) == 4)
    got = logs[server].messages()
    assert [m for m in got if m[1] == a_at] == [
        (b"from a 1", a_at), (b"from a 2", a_at), (b"from a 3", a_at)]
    assert [m for m in got if m[1] == b_at] == [(b"from b 1", b_at)]
    assert server.credits.count(a_at) == 3 and server.credits.count(b_at) == 1

    # the server answers each with what is for it, on that client's own requests
    server.send_batch([b"to a 1", b"to a 2"], a_at)
    server.send(b"to b 1", b_at)
    _pump(logs, lambda: len(logs[a].messages()) == 2 and len(logs[b].messages()) == 1)
    assert logs[a].messages() == [(b"to a 1", a.server), (b"to a 2", a.server)]
    assert logs[b].messages() == [(b"to b 1", b.server)]
    assert server.credits.count(a_at) == 1 and server.credits.count(b_at) == 0
    assert logs[a].others(a.server) == logs[b].others(b.server) == 0
    assert not (server.drops or a.drops or b.drops)


def test_polls_are_empty_credits_and_take_the_queued_messages(net: _Net) -> None:
    server, a, b = net.server(), net.client(net.a_ns), net.client(net.b_ns)
    a_at, b_at = net.address(a, net.a_ns), net.address(b, net.b_ns)
    logs = {server: _Log(), a: _Log(), b: _Log()}
    a.send(b"hello", a.server)
    b.send(b"hello", b.server)
    _pump(logs, lambda: len(logs[server].events) == 2)
    server.send(b"now", a_at)  # a's one credit
    for i in range(6):  # no credit left: these wait for a's next requests
        server.send(f"queued {i}".encode(), a_at)
    server.send(b"for b", b_at)
    assert server.queued == 6
    _pump(logs, lambda: len(logs[a].messages()) == 1 and len(logs[b].messages()) == 1)
    assert server.queued == 6  # still: a has sent nothing since

    a.polling = True  # empty requests: LOW_WATER at first, more for the backlog
    _pump(logs, lambda: len(logs[a].messages()) == 7)
    assert [m for m, _ad in logs[a].messages()] == [
        b"now", *(f"queued {i}".encode() for i in range(6))]
    assert server.queued == 0
    polls = logs[server].events[2:]
    assert polls and all(ev == ([], a_at) for ev in polls)  # credits, nothing for the engine
    assert logs[b].messages() == [(b"for b", b.server)]  # a's queue never went to b
    assert not (server.drops or a.drops or b.drops)

    # the queues are bounded, per address and in all, and age out; counted drops beyond
    a.polling = False
    nobody: EchoAddress = ("10.9.9.9", 1)
    for _ in range(600):
        server.send(b"x", nobody)
    assert server.queued == MAX_QUEUED and server.drops["no-icmp-credit"] == 600 - MAX_QUEUED
    for i in range(QUEUE_TOTAL // MAX_QUEUED + 1):
        for _ in range(MAX_QUEUED):
            server.send(b"y", ("10.9.9.10", i))
    assert server.queued == QUEUE_TOTAL
    server.tick(time.monotonic() + QUEUE_AGE + 1)
    assert server.queued == 0 and server.drops["no-icmp-credit"] == (
        600 + (QUEUE_TOTAL // MAX_QUEUED + 1) * MAX_QUEUED)


def test_an_expired_request_is_answered_empty_only_for_a_peer(net: _Net) -> None:
    server, a, b = net.server(), net.client(net.a_ns), net.client(net.b_ns)
    a_at, b_at = net.address(a, net.a_ns), net.address(b, net.b_ns)
    logs = {server: _Log(), a: _Log(), b: _Log()}
    a.send(b"", a.server)  # a poll each: credits only
    b.send(b"", b.server)
    _pump(logs, lambda: server.credits.held == 2)
    assert logs[server].events == [([], a_at), ([], b_at)] or \
        logs[server].events == [([], b_at), ([], a_at)]
    server.peers(frozenset({a_at}))  # b is not (yet) a peer: say, mid-handshake

    # both requests expire; only the peer's is answered, empty
    _pump(logs, lambda: server.credits.held == 0 and logs[a].empty_from(a.server) == 1)
    assert logs[a].messages() == []
    # b's expired silently: a reply sent to b now comes behind anything sent before it
    b.send(b"again", b.server)
    _pump(logs, lambda: len(logs[server].messages()) == 1)
    server.send(b"marker", b_at)
    _pump(logs, lambda: len(logs[b].events) >= 1)
    assert logs[b].events == [([b"marker"], b.server)]  # nothing before it
    assert not server.drops


def test_a_strangers_marked_request_gets_no_reply_at_all(net: _Net) -> None:
    """A stranger (whose handshake the engine ignores) sits next to a peer on the same
    host: its raw socket sees every echo reply reaching that host, the peer's included;
    none of them is for the stranger."""
    server = net.server()
    peer, stranger = net.client(net.b_ns), net.client(net.b_ns)
    stranger.ident = peer.ident ^ 1  # two identifiers, as random ones nearly always are
    stranger.server = (stranger.host, stranger.ident)
    peer_at = net.address(peer, net.b_ns)
    logs = {server: _Log(), peer: _Log(), stranger: _Log()}
    server.peers(frozenset({peer_at}))
    peer.send(b"", peer.server)
    stranger.send(b"\x01\x00\x00\x00 a handshake nobody answers", stranger.server)
    stranger.send(b"", stranger.server)
    _pump(logs, lambda: len(logs[server].events) == 3)
    assert [m for m, _ad in logs[server].messages()] == [
        b"\x01\x00\x00\x00 a handshake nobody answers"]  # to the engine, which drops it
    # all expire; the peer's is answered, empty (and the stranger sees that reply go by)
    _pump(logs, lambda: server.credits.held == 0 and logs[peer].empty_from(peer.server) == 1)
    # then a message for the peer, which comes behind anything sent to the host before
    peer.send(b"more", peer.server)
    _pump(logs, lambda: len(logs[server].messages()) == 2)
    server.send(b"for the peer", peer_at)
    _pump(logs, lambda: logs[stranger].others(stranger.server) == 2)
    _pump(logs, lambda: len(logs[peer].messages()) == 1)
    assert logs[peer].messages() == [(b"for the peer", peer.server)]
    # what the stranger's socket saw: the two replies to the peer, as foreign
    assert logs[stranger].events == [([], (net.server_for(net.b_ns), peer.ident))] * 2
    assert stranger.drops["foreign-icmp"] == 2


def test_ordinary_pings_are_answered_only_when_asked(net: _Net) -> None:
    """With the kernel's echo replies off, the server answers plain pings for the IP
    versions it was told to, and not for the others."""
    mine, other = (6, 4) if net.v6 else (4, 6)
    for answer, expect in ((frozenset({mine}), True), (frozenset({other}), False)):
        server = net.server(answer_pings=answer)
        ping = net.a_ns.popen(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1",
                               net.server_for(net.a_ns)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        logs = {server: _Log()}
        _pump(logs, lambda p=ping: p.poll() is not None, timeout=15)  # type: ignore[misc]
        out = ping.communicate()[0]
        assert (" 2 received" in out) is expect, out
        assert logs[server].messages() == []  # a ping is no message for the engine
        assert len(logs[server].events) == 2  # but was seen, and left alone
        server.close()
        net.links.remove(server)


def test_the_link_constants_the_engine_reads() -> None:
    assert Client.name == Server.name == "ICMP"
    assert Client.port == Server.port == 0 and not Client.blocked and not Server.blocked
