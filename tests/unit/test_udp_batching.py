"""UDP GSO grouping and GRO splitting (transport.udp), pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from simpletun.transport.udp import gso_runs, segments


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
