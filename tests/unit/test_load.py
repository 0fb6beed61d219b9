"""The load driver's pure parts: the echo request each peer sends, the check of the reply,
the wg setconf file, the counts a user may ask for, the routing figure's tables; and the
usage errors of ``simpletun load``."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from simpletun import cli
from simpletun.lab import load
from simpletun.packets import icmp, ip
from simpletun.packets.checksum import checksum
from simpletun.wireguard import keys


def reply_to(request: bytes, *, icmp_type: int = icmp.ECHO_REPLY, data: bytes | None = None,
             src: bytes | None = None) -> bytes:
    """What the server's kernel answers to ``request`` (optionally spoiled)."""
    header = ip.parse_ipv4(request)
    message = icmp.parse_icmp(request[header.header_len:])
    body = struct.pack("!HH", message.ident, message.seq) + (
        data if data is not None else message.body[4:])
    answer: bytes = ip.build_ipv4(src or header.dst, header.src, ip.PROTO_ICMP,
                                  icmp.build_icmp4(icmp_type, 0, body))
    return answer


def test_echo_request_is_a_ping_from_the_peer_to_the_server() -> None:
    packet = load.echo_request(7, seq=3)
    assert len(packet) == 84  # ping's default size
    header = ip.parse_ipv4(packet)
    assert header.src == ipaddress.IPv4Address("10.64.0.9").packed
    assert header.dst == ipaddress.IPv4Address("10.64.0.1").packed
    assert header.proto == ip.PROTO_ICMP
    assert checksum(packet[:20]) == 0
    body = packet[20:]
    assert checksum(body) == 0
    message = icmp.parse_icmp(body)
    assert (message.type, message.ident, message.seq) == (icmp.ECHO_REQUEST, 7, 3)
    assert message.body[4:] == load.payload_for(7)
    assert load.payload_for(7) != load.payload_for(8)


def test_the_right_reply_passes() -> None:
    for index in (0, 1, 999, 70000):
        assert load.check_echo_reply(reply_to(load.echo_request(index)), index) is None


@pytest.mark.parametrize(("spoil", "why"), [
    (lambda r: reply_to(r, icmp_type=icmp.ECHO_REQUEST), "not an echo reply"),
    (lambda r: reply_to(r, data=bytes(56)), "echo data"),
    (lambda r: reply_to(r, src=bytes([10, 64, 0, 5])), "not 10.64.0.1"),
    (lambda r: (lambda x: x[:-1] + bytes([x[-1] ^ 1]))(reply_to(r)), "checksum"),
    (lambda r: b"\x60" + r[1:], "not an IPv4 packet"),
    (lambda r: r[:10], "not an IPv4 packet"),
])
def test_a_wrong_reply_says_what_is_wrong(spoil: object, why: str) -> None:
    request = load.echo_request(4)
    bad = spoil(request)  # type: ignore[operator]
    found = load.check_echo_reply(bad, 4)
    assert found is not None and why in found


def test_another_peers_reply_is_wrong() -> None:
    found = load.check_echo_reply(reply_to(load.echo_request(5)), 4)
    assert found is not None and "10.64.0.6" in found  # peer 4 is 10.64.0.6, 5 is .7


def test_tunnel_addresses_fit_the_network() -> None:
    assert str(load.tunnel_address(0)) == "10.64.0.2"
    assert str(load.tunnel_address(254)) == "10.64.1.0"
    assert load.tunnel_address(load.MAX_SETCONF_PEERS - 1) in load.TUNNEL
    with pytest.raises(load.LoadError):
        load.tunnel_address(load.TUNNEL.num_addresses)


def test_setconf_text_has_every_peer_with_its_address() -> None:
    private = keys.generate_private()
    publics = [keys.public_from_private(keys.generate_private()) for _ in range(3)]
    text = load.setconf_text(private, 51820, publics)
    lines = text.splitlines()
    assert lines[:3] == ["[Interface]", f"PrivateKey = {keys.to_base64(private)}",
                         "ListenPort = 51820"]
    assert text.count("[Peer]") == 3
    for i, public in enumerate(publics):
        at = lines.index(f"PublicKey = {keys.to_base64(public)}")
        assert lines[at + 1] == f"AllowedIPs = {load.tunnel_address(i)}/32"


def test_counts_out_of_range_are_refused() -> None:
    assert load.check_counts(10, None, 0) == 10
    assert load.check_counts(10, 500, 100) == 500
    for peers, setconf, rate in ((0, None, 1.0), (load.MAX_PEERS + 1, None, 1.0),
                                 (10, 9, 1.0), (10, load.MAX_SETCONF_PEERS + 1, 1.0),
                                 (10, None, -1.0)):
        with pytest.raises(load.LoadError):
            load.check_counts(peers, setconf, rate)


def test_routing_figure_tables_resolve_every_peer() -> None:
    """The lookups timed are real ones: the table of many peers finds the last one."""
    small, large, first, last = load.routing_tables(50)
    assert small.lookup_v4(first, 16) == 0
    assert large.lookup_v4(last, 16) == 49 and large.lookup_v4(first, 16) == 0
    assert len(large) == 50
    one, many = load.routing_figures(50)
    assert one > 0 and many > 0


def test_not_root_is_one_line(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.run(["load", "--peers", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs root" in err and "sudo" in err


@pytest.mark.parametrize(("args", "says"), [
    (["--peers", "0"], "--peers 0"),
    (["--peers", "10", "--setconf-peers", "5"], "--setconf-peers 5"),
    (["--rate", "-1"], "--rate -1"),
    (["--peers", "many"], "many"),
])
def test_usage_errors_are_one_line(args: list[str], says: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.run(["load", *args])
    err = capsys.readouterr().err.strip()
    assert status != 0
    assert says in err and "Traceback" not in err
