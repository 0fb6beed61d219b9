"""control.status (the stats=1 codec, get=1 read back, the merged view), show's formatting
and the metrics collector against a control socket served in a thread (no root)."""

from __future__ import annotations

import ipaddress
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.cli import show
from simpletun.control import plain, status, uapi
from simpletun.control.uapi_socket import UapiServer
from simpletun.device.side import Counters
from simpletun.service import metrics
from simpletun.wireguard import keys

KEY = st.binary(min_size=32, max_size=32)
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
COUNT = st.integers(min_value=0, max_value=2**64 - 1)


# --- stats=1 -------------------------------------------------------------------------------

STATS_TEXT = (
    "transport=udp\n"
    "wire=wireguard\n"
    "role=server\n"
    "counter.cookies-sent=2\n"
    "drop.bad-tag=3\n"
    "drop.replay=1\n"
    "peer=" + "ab" * 32 + "\n"
    "rx_packets=10\n"
    "tx_packets=20\n"
    "peer=plaintext\n"
    "endpoint=192.0.2.1:40000\n"
    "connected_sec=1700000000\n"
    "rx_bytes=1000\n"
    "tx_bytes=2000\n"
    "rx_packets=5\n"
    "tx_packets=6\n"
    "errno=0\n\n")

STATS = status.Stats(
    transport="udp", wire="wireguard", role="server", counters={"cookies-sent": 2},
    drops={"bad-tag": 3, "replay": 1},
    peers=[status.PeerStats("ab" * 32, rx_packets=10, tx_packets=20),
           status.PeerStats(status.PLAINTEXT, rx_packets=5, tx_packets=6,
                            endpoint="192.0.2.1:40000", connected_sec=1700000000,
                            rx_bytes=1000, tx_bytes=2000)])


def test_stats_answer_byte_for_byte() -> None:
    assert status.format_stats(STATS) == STATS_TEXT
    assert status.parse_stats(STATS_TEXT) == STATS


peer_stats = st.one_of(
    st.builds(status.PeerStats, KEY.map(bytes.hex), rx_packets=COUNT, tx_packets=COUNT),
    st.builds(status.PeerStats, st.just(status.PLAINTEXT), rx_packets=COUNT,
              tx_packets=COUNT, endpoint=st.none() | st.just("[fd00::1]:5555"),
              connected_sec=COUNT, rx_bytes=COUNT, tx_bytes=COUNT))


@given(st.builds(status.Stats, transport=st.sampled_from(["", "udp", "tcp", "icmp"]),
                 wire=st.sampled_from(["", "wireguard", "native", "classic", "none"]),
                 role=st.sampled_from(["", "server", "client", "peer"]),
                 counters=st.dictionaries(WORD, COUNT, max_size=3),
                 drops=st.dictionaries(WORD, COUNT, max_size=8),
                 peers=st.lists(peer_stats, max_size=4)))
def test_stats_round_trip(stats: status.Stats) -> None:
    assert status.parse_stats(status.format_stats(stats)) == stats


@given(st.text(max_size=400))
def test_stats_junk_never_raises(text: str) -> None:
    status.parse_stats(text)
    status.parse_get(text)


def test_stats_skips_what_it_does_not_know() -> None:
    got = status.parse_stats("future=1\ndrop.x=notanumber\ndrop.y=2\nrx_packets=9\n"
                             "peer=plaintext\nrx_packets=-1\nwhat\nerrno=0\n\n")
    assert got == status.Stats(drops={"y": 2}, peers=[status.PeerStats(status.PLAINTEXT)])


# --- get=1 read back -----------------------------------------------------------------------

NETS = st.one_of(
    st.builds(lambda a, n: ipaddress.ip_network((ipaddress.IPv4Address(a), n), strict=False),
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, n: ipaddress.ip_network((ipaddress.IPv6Address(a), n), strict=False),
              st.integers(0, 2**128 - 1), st.integers(0, 128)))
ENDPOINTS = st.one_of(st.none(), st.tuples(st.just("192.0.2.7"), st.integers(0, 65535)),
                      st.tuples(st.just("fd00::7"), st.integers(0, 65535)))
peer_status = st.builds(
    uapi.PeerStatus, public_key=KEY, preshared_key=st.none() | KEY.filter(any),
    endpoint=ENDPOINTS, persistent_keepalive=st.integers(0, 65535),
    allowed_ips=st.lists(NETS, max_size=4), last_handshake_ns=st.integers(0, 2**62),
    rx_bytes=COUNT, tx_bytes=COUNT)


@given(st.builds(uapi.DeviceStatus, private_key=st.none() | KEY.filter(any),
                 listen_port=st.integers(0, 65535), fwmark=st.integers(0, 2**32 - 1),
                 peers=st.lists(peer_status, max_size=3)))
def test_get_round_trip(device: uapi.DeviceStatus) -> None:
    assert status.parse_get(uapi.format_get(device)) == device


def test_merge_matches_packets_by_key_and_adds_the_plaintext_peer() -> None:
    private = bytes(range(1, 33))
    pub = bytes.fromhex("ab" * 32)
    get = uapi.DeviceStatus(private_key=private, listen_port=51820, fwmark=0, peers=[
        uapi.PeerStatus(public_key=pub, preshared_key=None, endpoint=("fd00::2", 5),
                        persistent_keepalive=25, allowed_ips=[ipaddress.ip_network("::/0")],
                        last_handshake_ns=1_700_000_000_500_000_000, rx_bytes=7,
                        tx_bytes=8)])
    t = status.merge("wg0", get, STATS, encrypted=True)
    assert t.public_key == keys.public_from_private(private)
    assert (t.listen_port, t.transport, t.wire, t.role) == (51820, "udp", "wireguard",
                                                             "server")
    assert t.drops == {"bad-tag": 3, "replay": 1}
    first, second = t.peers
    assert first == status.PeerStatus(
        public_key=pub, endpoint="[fd00::2]:5", allowed_ips=["::/0"],
        latest_handshake=1_700_000_000.5, rx_bytes=7, tx_bytes=8, rx_packets=10,
        tx_packets=20, persistent_keepalive=25)
    assert second.public_key is None and second.endpoint == "192.0.2.1:40000"
    assert (second.rx_bytes, second.tx_packets, second.latest_handshake) == (1000, 6, 1.7e9)


# --- show's text ---------------------------------------------------------------------------

@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"),
                                    (1536, "1.50 KiB"), (5 * 1024**2, "5.00 MiB"),
                                    (3 * 1024**3, "3.00 GiB"), (2 * 1024**4, "2.00 TiB")])
def test_bytes_as_wg_prints_them(n: int, text: str) -> None:
    assert show.pretty_bytes(n) == text


@pytest.mark.parametrize("s,text", [(1, "1 second"), (59, "59 seconds"), (60, "1 minute"),
                                    (3725, "1 hour, 2 minutes, 5 seconds"),
                                    (86400 + 2, "1 day, 2 seconds")])
def test_times_as_wg_prints_them(s: int, text: str) -> None:
    assert show.pretty_time(s) == text


def test_show_layout() -> None:
    private = bytes(range(1, 33))
    pub = bytes.fromhex("ab" * 32)
    get = uapi.DeviceStatus(private_key=private, listen_port=51820, fwmark=0, peers=[
        uapi.PeerStatus(public_key=pub, preshared_key=None, endpoint=("192.0.2.2", 5),
                        persistent_keepalive=25, allowed_ips=[ipaddress.ip_network("::/0")],
                        last_handshake_ns=1_700_000_000_000_000_000, rx_bytes=2048,
                        tx_bytes=3 << 20)])
    t = status.merge("wg0", get, STATS, encrypted=True)
    assert show.format_tunnel(t, 1_700_003_725.0).splitlines() == [
        "interface: wg0",
        f"  public key: {keys.to_base64(keys.public_from_private(private))}",
        "  private key: (hidden)",
        "  listening port: 51820",
        "  transport: udp",
        "  wire: wireguard",
        "  role: server",
        "  drops: bad-tag 3, replay 1",
        "",
        f"peer: {keys.to_base64(pub)}",
        "  endpoint: 192.0.2.2:5",
        "  allowed ips: ::/0",
        "  latest handshake: 1 hour, 2 minutes, 5 seconds ago",
        "  transfer: 2.00 KiB received, 3.00 MiB sent",
        "  packets: 10 received, 20 sent",
        "  persistent keepalive: every 25 seconds",
        "",
        "peer: (plaintext)",
        "  endpoint: 192.0.2.1:40000",
        "  connected: 1 hour, 2 minutes, 5 seconds ago",
        "  transfer: 1000 B received, 1.95 KiB sent",
        "  packets: 5 received, 6 sent",
    ]
    as_json = show.tunnel_json(t)
    assert as_json["peers"][0]["latest_handshake"] == 1_700_000_000
    assert as_json["peers"][0]["public_key"] == keys.to_base64(pub)
    assert as_json["peers"][1]["public_key"] is None


# --- a served control socket (a thread drives the loop, as a tunnel's would) ---------------

@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Counters]]:
    counters = Counters(to_net=4, to_dev=3, bytes_to_net=400, bytes_to_dev=300)
    counters.drops["oversized"] = 2
    handler = plain.PlainControl(
        role="server", listen_port=5555, counters=lambda: counters,
        connection=lambda: plain.Connection("192.0.2.9:4000", "native", 1_700_000_000.0))
    server = UapiServer("pt0", handler, directory=str(tmp_path))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for fd in select.select(server.fds(), [], [], 0.05)[0]:
                server.ready(fd)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield str(tmp_path), counters
    finally:
        stop.set()
        thread.join()
        server.close()


def test_plaintext_control_is_read_only(served: tuple[str, Counters]) -> None:
    directory, _counters = served
    path = status.socket_path("pt0", directory)
    assert status.exchange(path, "set=1\nlisten_port=1\n\n") == "errno=-1\n\n"
    assert status.exchange(path, "get=1\n\n") == "listen_port=5555\nerrno=0\n\n"
    t = status.read("pt0", directory)
    assert not t.encrypted and t.public_key is None
    assert (t.transport, t.wire, t.role, t.drops) == ("tcp", "native", "server",
                                                      {"oversized": 2})
    [peer] = t.peers
    assert (peer.endpoint, peer.rx_bytes, peer.tx_bytes, peer.rx_packets, peer.tx_packets,
            peer.latest_handshake) == ("192.0.2.9:4000", 300, 400, 3, 4, 1_700_000_000.0)


def test_collector_reads_at_scrape_time(served: tuple[str, Counters]) -> None:
    directory, counters = served
    collector = metrics.TunnelCollector(lambda: ["pt0", "gone0"], directories=(directory,),
                                        clock=lambda: 1_700_000_010.0)

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for m in collector.collect() for s in m.samples}

    first = samples()
    peer = (("interface", "pt0"), ("public_key", "plaintext"))
    assert first[("simpletun_up", (("interface", "pt0"),))] == 1
    assert first[("simpletun_up", (("interface", "gone0"),))] == 0
    assert first[("simpletun_peer_receive_bytes_total", peer)] == 300
    assert first[("simpletun_peer_transmit_packets_total", peer)] == 4
    assert first[("simpletun_peer_latest_handshake_age_seconds", peer)] == 10
    assert first[("simpletun_drops_total", (("interface", "pt0"),
                                            ("reason", "oversized")))] == 2
    counters.bytes_to_dev += 1000
    assert samples()[("simpletun_peer_receive_bytes_total", peer)] == 1300


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9586", ("127.0.0.1", 9586)),
    ("[::1]:9586", ("::1", 9586)),
    ("localhost:0", ("localhost", 0)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert metrics.parse_address(text) == expected


@pytest.mark.parametrize("text", ["9586", ":9586", "127.0.0.1:", "127.0.0.1:x",
                                  "127.0.0.1:65536", "::1:9586", "[::1:9586", "[nope]:1",
                                  "a b:1", "[::1]"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        metrics.parse_address(text)
    assert "\n" not in str(caught.value) and text in str(caught.value)
