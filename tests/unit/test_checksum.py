from hypothesis import given
from hypothesis import strategies as st

from simpletun.packets.checksum import checksum, ones_sum, pseudo4, verify

from .vectors import TUN_PING4, TUN_PING6, TUN_TCP_SYN


def reference(data: bytes) -> int:
    """RFC 1071, word by word."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_rfc1071_example() -> None:
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_ipv4_header_example() -> None:
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(header) == 0xB861


def test_kernel_packets_verify() -> None:
    assert verify(TUN_PING4[:20])  # IPv4 header
    assert verify(TUN_PING4[20:])  # ICMP
    assert verify(TUN_TCP_SYN[:20])
    tcp = TUN_TCP_SYN[20:]
    assert verify(tcp, pseudo4(TUN_TCP_SYN[12:16], TUN_TCP_SYN[16:20], 6, len(tcp)))
    assert TUN_PING6[6] == 58


@given(st.binary(max_size=3000))
def test_matches_reference(data: bytes) -> None:
    assert checksum(data) == reference(data)


@given(st.binary(min_size=2, max_size=500).filter(lambda b: len(b) % 2 == 0))
def test_filled_in_checksum_verifies(data: bytes) -> None:
    body = bytearray(data[:-2] + b"\0\0")
    c = checksum(body)
    body[-2:] = c.to_bytes(2, "big")
    assert verify(body)
