import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.device.pi import (
    ETH_P_IP,
    ETH_P_IPV6,
    TUN_PKT_STRIP,
    PacketInfo,
    add_pi,
    pack_pi,
    proto_of_ip,
    strip_pi,
    unpack_pi,
)

from .vectors import TUN_PING4, TUN_PING6


def test_vectors() -> None:
    assert pack_pi(ETH_P_IP) == b"\x00\x00\x08\x00"
    assert pack_pi(ETH_P_IPV6, TUN_PKT_STRIP) == b"\x00\x01\x86\xdd"
    assert unpack_pi(b"\x00\x01\x86\xdd") == PacketInfo(1, ETH_P_IPV6)
    assert unpack_pi(b"\x00\x01\x86\xdd").truncated
    assert not unpack_pi(b"\x00\x00\x08\x00rest").truncated


def test_add_pi_guesses_from_version() -> None:
    assert add_pi(TUN_PING4)[:4] == b"\x00\x00\x08\x00"
    assert add_pi(TUN_PING6)[:4] == b"\x00\x00\x86\xdd"
    assert proto_of_ip(b"") == 0
    assert proto_of_ip(b"\x10") == 0


def test_short_buffer_is_an_error() -> None:
    with pytest.raises(ValueError, match="too short"):
        unpack_pi(b"\x00\x00\x08")


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=100))
def test_round_trip(flags: int, proto: int, payload: bytes) -> None:
    info, rest = strip_pi(pack_pi(proto, flags) + payload)
    assert info == PacketInfo(flags, proto)
    assert rest == payload
