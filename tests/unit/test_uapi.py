"""The UAPI codec (simpletun.control.uapi): byte vectors in wireguard-go's form, and
properties (any text parses to a request or a UapiError; get answers read back whole)."""

from __future__ import annotations

import errno
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simpletun.control.uapi import (
    DeviceSet,
    DeviceStatus,
    Network,
    PeerSet,
    PeerStatus,
    UapiError,
    format_errno,
    format_get,
    parse_set,
)

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
PSK = b"\xaa" * 32
H1 = K1.hex()
H2 = K2.hex()


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


# ---------------------------------------------------------------------------------------
# set: what wg sends


def test_wg_set_peer_request() -> None:
    # what `wg set wg0 listen-port 51820 fwmark 0x10 peer K allowed-ips ... endpoint ...
    # persistent-keepalive 25 preshared-key F` writes after "set=1\n"
    body = (
        f"private_key={'77' * 32}\n"
        "listen_port=51820\n"
        "fwmark=16\n"
        f"public_key={H1}\n"
        f"preshared_key={PSK.hex()}\n"
        "endpoint=192.0.2.1:51820\n"
        "persistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.2/32\n"
        "allowed_ip=fd00::/64\n"
        "\n"
    )
    got = parse_set(body)
    clamped = bytearray(b"\x77" * 32)
    clamped[0] &= 248
    clamped[31] = (clamped[31] & 127) | 64
    assert got == DeviceSet(
        private_key=bytes(clamped), listen_port=51820, fwmark=16,
        peers=[PeerSet(public_key=K1, preshared_key=PSK, endpoint=("192.0.2.1", 51820),
                       persistent_keepalive=25, replace_allowed_ips=True,
                       allowed_ips=[net("10.0.0.2/32"), net("fd00::/64")])],
    )


def test_setconf_replaces_peers_and_removes() -> None:
    body = (
        "replace_peers=true\n"
        f"public_key={H1}\n"
        "protocol_version=1\n"
        "remove=true\n"
        f"public_key={H2.upper()}\n"
        "update_only=true\n"
        "endpoint=[fe80::1%eth0]:7\n"
    )
    got = parse_set(body)
    assert got.replace_peers
    assert got.peers == [
        PeerSet(public_key=K1, remove=True),
        PeerSet(public_key=K2, update_only=True, endpoint=("fe80::1%eth0", 7)),
    ]


def test_empty_set_and_zero_keys() -> None:
    assert parse_set("") == DeviceSet()
    assert parse_set("\n") == DeviceSet()
    got = parse_set(f"private_key={'00' * 32}\npublic_key={H1}\npreshared_key={'00' * 32}\n")
    assert got.private_key == bytes(32)  # zero: clear it, not clamped
    assert got.peers[0].preshared_key == bytes(32)
    assert got.peers[0].persistent_keepalive is None
    assert got.listen_port is None and got.fwmark is None


def test_replace_allowed_ips_drops_earlier_lines_of_the_same_peer() -> None:
    got = parse_set(f"public_key={H1}\nallowed_ip=10.0.0.0/8\nreplace_allowed_ips=true\n"
                    "allowed_ip=10.1.2.3/16\n")
    # host bits are masked, as wireguard-go's table stores the prefix
    assert got.peers[0].allowed_ips == [net("10.1.0.0/16")]
    assert got.peers[0].replace_allowed_ips


def test_crlf_lines_and_leading_zeros() -> None:
    got = parse_set("listen_port=000080\r\nfwmark=4294967295\r\n\r\n")
    assert got.listen_port == 80 and got.fwmark == 0xFFFFFFFF


def test_endpoint_forms() -> None:
    def ep(text: str) -> tuple[str, int]:
        peer = parse_set(f"public_key={H1}\nendpoint={text}\n").peers[0]
        assert peer.endpoint is not None
        return peer.endpoint

    assert ep("1.2.3.4:0") == ("1.2.3.4", 0)
    assert ep("[2001:DB8::0:1]:65535") == ("2001:db8::1", 65535)
    assert ep("[::ffff:1.2.3.4]:9")[1] == 9
    for bad in ("1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "[1.2.3.4]:5", "::1:5", "[::1:5",
                "example.com:51820", "01.2.3.4:5", "1.2.3.4:+5", "[fe80::1%]:5", "[::1]x:5",
                "1.2.3.4:5 ", ":5", "[]:5"):
        with pytest.raises(UapiError) as info:
            parse_set(f"public_key={H1}\nendpoint={bad}\n")
        assert info.value.errno == errno.EINVAL, bad
        assert "endpoint" in info.value.message


@pytest.mark.parametrize(("body", "code", "words"), [
    ("get=1\n", errno.EINVAL, "device key"),
    ("endpoint=1.2.3.4:5\n", errno.EINVAL, "peer keys come after public_key"),
    (f"public_key={H1}\nlisten_port=5\n", errno.EINVAL, "peer key"),
    (f"public_key={H1}\nbogus=1\n", errno.EINVAL, "peer key"),
    ("listen_port\n", errno.EPROTO, "not key=value"),
    ("listen_port=65536\n", errno.EINVAL, "listen_port"),
    ("listen_port=-1\n", errno.EINVAL, "listen_port"),
    ("listen_port=\n", errno.EINVAL, "listen_port"),
    ("listen_port= 1\n", errno.EINVAL, "listen_port"),
    ("listen_port=1_0\n", errno.EINVAL, "listen_port"),
    ("listen_port=\u0661\n", errno.EINVAL, "listen_port"),  # an Arabic-Indic digit
    ("fwmark=4294967296\n", errno.EINVAL, "fwmark"),
    ("fwmark=0x10\n", errno.EINVAL, "fwmark"),
    ("replace_peers=false\n", errno.EINVAL, "replace_peers"),
    ("private_key=00\n", errno.EINVAL, "64 hex digits"),
    (f"private_key={'0' * 63}g\n", errno.EINVAL, "64 hex digits"),
    (f"private_key={'0' * 62} 0\n", errno.EINVAL, "64 hex digits"),
    ("public_key=xyz\n", errno.EINVAL, "public_key"),
    (f"public_key={H1}\npreshared_key={'0' * 66}\n", errno.EINVAL, "preshared_key"),
    (f"public_key={H1}\nprotocol_version=2\n", errno.EINVAL, "protocol version"),
    (f"public_key={H1}\npersistent_keepalive_interval=65536\n", errno.EINVAL, "persistent"),
    (f"public_key={H1}\nremove=1\n", errno.EINVAL, "remove"),
    (f"public_key={H1}\nupdate_only=yes\n", errno.EINVAL, "update_only"),
    (f"public_key={H1}\nreplace_allowed_ips=\n", errno.EINVAL, "replace_allowed_ips"),
    (f"public_key={H1}\nallowed_ip=10.0.0.0\n", errno.EINVAL, "allowed_ip"),
    (f"public_key={H1}\nallowed_ip=10.0.0.0/33\n", errno.EINVAL, "allowed_ip"),
    (f"public_key={H1}\nallowed_ip=10.0.0.0/08\n", errno.EINVAL, "allowed_ip"),
    (f"public_key={H1}\nallowed_ip=10.0.0.0/255.0.0.0\n", errno.EINVAL, "allowed_ip"),
    (f"public_key={H1}\nallowed_ip=fe80::%eth0/64\n", errno.EINVAL, "allowed_ip"),
    (f"public_key={H1}\nallowed_ip=::/129\n", errno.EINVAL, "allowed_ip"),
    (f"public_key={H1}\nallowed_ip=-10.0.0.0/8\n", errno.EINVAL, "not supported"),
    ("listen_port=1\n\nfwmark=1\n", errno.EPROTO, "after the blank line"),
])
def test_bad_requests(body: str, code: int, words: str) -> None:
    with pytest.raises(UapiError) as info:
        parse_set(body)
    assert info.value.errno == code
    assert words in info.value.message
    assert "\n" not in info.value.message


def test_error_message_is_short_even_for_huge_values() -> None:
    with pytest.raises(UapiError) as info:
        parse_set("listen_port=" + "9" * 100_000 + "\n")
    assert len(info.value.message) < 200


# ---------------------------------------------------------------------------------------
# get: wireguard-go's answer, byte for byte


def test_format_get_matches_wireguard_go() -> None:
    status = DeviceStatus(
        private_key=K1, listen_port=51820, fwmark=0,
        peers=[
            PeerStatus(public_key=K2, preshared_key=None, endpoint=("fe80::1%eth0", 51821),
                       persistent_keepalive=25,
                       allowed_ips=[net("10.0.0.2/32"), net("fd00::/64")],
                       last_handshake_ns=1_700_000_000_123_456_789, rx_bytes=10, tx_bytes=20),
            PeerStatus(public_key=K1, preshared_key=PSK, endpoint=None, persistent_keepalive=0,
                       allowed_ips=[], last_handshake_ns=0, rx_bytes=0, tx_bytes=0),
        ])
    assert format_get(status) == (
        f"private_key={H1}\n"
        "listen_port=51820\n"
        f"public_key={H2}\n"
        f"preshared_key={'00' * 32}\n"
        "protocol_version=1\n"
        "endpoint=[fe80::1%eth0]:51821\n"
        "last_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=123456789\n"
        "tx_bytes=20\n"
        "rx_bytes=10\n"
        "persistent_keepalive_interval=25\n"
        "allowed_ip=10.0.0.2/32\n"
        "allowed_ip=fd00::/64\n"
        f"public_key={H1}\n"
        f"preshared_key={PSK.hex()}\n"
        "protocol_version=1\n"
        "last_handshake_time_sec=0\n"
        "last_handshake_time_nsec=0\n"
        "tx_bytes=0\n"
        "rx_bytes=0\n"
        "persistent_keepalive_interval=0\n"
        "errno=0\n"
        "\n"
    )


def test_format_get_of_a_bare_device() -> None:
    # no private key, not listening, no mark: only the status
    assert format_get(DeviceStatus(None, 0, 0, [])) == "errno=0\n\n"
    assert format_get(DeviceStatus(bytes(32), 0, 7, [])) == "fwmark=7\nerrno=0\n\n"


def test_format_errno_is_negative_like_wireguard_go() -> None:
    assert format_errno(0) == "errno=0\n\n"
    assert format_errno(errno.EINVAL) == "errno=-22\n\n"
    assert format_errno(-errno.EPROTO) == "errno=-71\n\n"


# ---------------------------------------------------------------------------------------
# properties

_LINE_KEYS = st.sampled_from([
    "private_key", "listen_port", "fwmark", "replace_peers", "public_key", "remove",
    "update_only", "preshared_key", "endpoint", "persistent_keepalive_interval",
    "replace_allowed_ips", "allowed_ip", "protocol_version", "", "x",
])
_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["true", "1", "0", "65535", "65536", H1, "00" * 32, "1.2.3.4:5",
                     "[::1]:5", "[fe80::1%lo]:1", "10.0.0.0/8", "::/0", "-1", "2"]),
)
_LINES = st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", _LINE_KEYS, _VALUES),
    st.text(max_size=30),
), max_size=12).map(lambda lines: "\n".join(lines))


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(), _LINES))
def test_any_text_parses_or_is_refused(body: str) -> None:
    try:
        got = parse_set(body)
    except UapiError as exc:
        assert exc.errno in (errno.EINVAL, errno.EPROTO)
        assert "\n" not in exc.message
        return
    assert isinstance(got, DeviceSet)


def _read_get(text: str) -> DeviceStatus:
    """A tiny reader of get answers, written the way wg's userspace_get_device reads them."""
    assert text.endswith("errno=0\n\n")
    status = DeviceStatus(None, 0, 0, [])
    peer: PeerStatus | None = None
    for line in text[:-len("errno=0\n\n")].splitlines():
        key, _, value = line.partition("=")
        if key == "public_key":
            peer = PeerStatus(bytes.fromhex(value), None, None, 0, [], 0, 0, 0)
            status.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                status.private_key = bytes.fromhex(value)
            elif key == "listen_port":
                status.listen_port = int(value)
            else:
                assert key == "fwmark"
                status.fwmark = int(value)
        elif key == "preshared_key":
            peer.preshared_key = None if value == "00" * 32 else bytes.fromhex(value)
        elif key == "endpoint":
            host, _, port = value.rpartition(":")
            peer.endpoint = (host.strip("[]"), int(port))
        elif key == "last_handshake_time_sec":
            peer.last_handshake_ns += int(value) * 1_000_000_000
        elif key == "last_handshake_time_nsec":
            assert int(value) < 1_000_000_000
            peer.last_handshake_ns += int(value)
        elif key in ("tx_bytes", "rx_bytes"):
            setattr(peer, key, int(value))
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = int(value)
        elif key == "allowed_ip":
            peer.allowed_ips.append(ipaddress.ip_network(value))
        else:
            assert (key, value) == ("protocol_version", "1")
    return status


_KEYS = st.binary(min_size=32, max_size=32)
_NETS = st.one_of(
    st.builds(lambda a, n: ipaddress.IPv4Network((a, n), strict=False),
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, n: ipaddress.IPv6Network((a, n), strict=False),
              st.integers(0, 2**128 - 1), st.integers(0, 128)),
)
_ENDPOINTS = st.one_of(
    st.none(),
    st.tuples(st.ip_addresses().map(str), st.integers(0, 65535)),
    st.tuples(st.just("fe80::1%eth0"), st.integers(0, 65535)),
)
_PEERS = st.builds(
    PeerStatus, public_key=_KEYS,
    preshared_key=st.one_of(st.none(), _KEYS.filter(any)),
    endpoint=_ENDPOINTS, persistent_keepalive=st.integers(0, 65535),
    allowed_ips=st.lists(_NETS, max_size=4), last_handshake_ns=st.integers(0, 2**63 - 1),
    rx_bytes=st.integers(0, 2**64 - 1), tx_bytes=st.integers(0, 2**64 - 1),
)
_STATUS = st.builds(
    DeviceStatus, private_key=st.one_of(st.none(), _KEYS.filter(any)),
    listen_port=st.integers(0, 65535), fwmark=st.integers(0, 2**32 - 1),
    peers=st.lists(_PEERS, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(_STATUS)
def test_format_get_reads_back_the_same(status: DeviceStatus) -> None:
    assert _read_get(format_get(status)) == status


@settings(max_examples=300, deadline=None)
@given(_STATUS)
def test_what_get_prints_a_set_accepts(status: DeviceStatus) -> None:
    # wg syncconf/showconf round trip: the peer lines of a get answer are valid set lines
    # (except the read-only counters)
    readonly = ("last_handshake_time_sec", "last_handshake_time_nsec", "tx_bytes", "rx_bytes")
    lines = [line for line in format_get(status).split("\n")[:-3]
             if line.partition("=")[0] not in readonly]
    got = parse_set("".join(line + "\n" for line in lines) + "\n")
    assert [p.public_key for p in got.peers] == [p.public_key for p in status.peers]
    assert [p.allowed_ips for p in got.peers] == [p.allowed_ips for p in status.peers]
    assert [p.endpoint for p in got.peers] == [
        None if p.endpoint is None else (str(ipaddress.ip_address(p.endpoint[0])), p.endpoint[1])
        for p in status.peers]
