"""UDP GSO grouping and GRO splitting (transport.udp), pure."""

from __future__ import annotations

import errno
import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.transport.udp import Endpoint, gso_runs, segments


@given(st.lists(st.integers(1, 1500), max_size=80))
def test_gso_runs_cover_everything_in_valid_groups(sizes: list[int]) -> None:
    runs = gso_runs(sizes)
    assert [i for a, b in runs for i in range(a, b)] == list(range(len(sizes)))
    for a, b in runs:
        group = sizes[a:b]
        assert len(group) <= 64 and (len(group) == 1 or sum(group) <= 65000)
        assert all(s == group[0] for s in group[:-1]) and group[-1] <= group[0]


def test_gso_runs_examples() -> None:
    assert gso_runs([1400] * 5 + [600, 1400, 1400]) == [(0, 6), (6, 8)]
    assert gso_runs([100, 200, 200]) == [(0, 1), (1, 3)]


def test_segments() -> None:
    buf = memoryview(bytearray(b"aaabbbcc" + bytes(10)))
    assert [bytes(s) for s in segments(buf, 8, 3)] == [b"aaa", b"bbb", b"cc"]
    assert [bytes(s) for s in segments(buf, 8, 0)] == [b"aaabbbcc"]


class _RefusingSocket:
    """A UDP socket whose GSO sends the kernel refuses with ``errno``; plain sends go."""

    family = socket.AF_INET

    def __init__(self, refusal: int) -> None:
        self.refusal = refusal
        self.sent: list[bytes] = []

    def setsockopt(self, *_args: object) -> None:
        pass

    def sendmsg(self, *_args: object) -> int:
        raise OSError(self.refusal, os.strerror(self.refusal))

    def sendto(self, data: bytes, _address: object) -> int:
        self.sent.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("refusal,gso_after", [
    (errno.EMSGSIZE, True),  # one datagram above the path MTU: this batch one by one
    (errno.EIO, False),  # no GSO here at all: off for good
])
def test_a_refused_gso_send_goes_out_one_by_one(refusal: int, gso_after: bool) -> None:
    sock = _RefusingSocket(refusal)
    ep = Endpoint(sock)  # type: ignore[arg-type]
    frames: list[bytes | memoryview] = [b"a" * 1484, b"b" * 1484, b"c" * 80]
    ep.send_batch(frames, ("192.0.2.1", 1))
    assert sock.sent == [bytes(f) for f in frames]  # nothing lost
    assert ep.gso is gso_after
