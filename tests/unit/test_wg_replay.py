"""The transport replay window (replay.Window): checked by cases and, with hypothesis,
against a reference (every counter seen kept in a set; anything more than WINDOW behind the
greatest is too old)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simpletun.wireguard.replay import REJECT_AFTER_MESSAGES, WINDOW, Window


class Reference:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.last = 0

    def accept(self, counter: int) -> bool:
        if counter >= REJECT_AFTER_MESSAGES or counter in self.seen:
            return False
        if counter < self.last and self.last - counter > WINDOW:
            return False
        self.seen.add(counter)
        self.last = max(self.last, counter)
        return True


def test_window_size_is_wireguard_gos() -> None:
    assert WINDOW == 8128
    assert REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1


def test_in_order_and_duplicates() -> None:
    w = Window()
    for c in range(1000):
        assert w.accept(c)
        assert not w.accept(c)
    assert not w.accept(0)
    assert not w.accept(999)


def test_out_of_order_within_the_window() -> None:
    w = Window()
    assert w.accept(WINDOW + 100)
    # everything from 100 up to the last is still taken, once, in any order
    for c in [WINDOW + 99, 100, 5000, 101, WINDOW, 8000]:
        assert w.accept(c), c
        assert not w.accept(c), c
    assert not w.accept(99)  # exactly one beyond the window
    assert not w.accept(0)


def test_too_old() -> None:
    w = Window()
    assert w.accept(100_000)
    assert not w.accept(100_000 - WINDOW - 1)
    assert w.accept(100_000 - WINDOW)
    assert not w.accept(1)


def test_jump_beyond_the_ring_forgets_everything_behind() -> None:
    w = Window()
    for c in range(200):
        assert w.accept(c)
    far = 10 * WINDOW + 17
    assert w.accept(far)
    for c in range(far - WINDOW, far):
        assert w.accept(c), c  # no stale bit from the ring's earlier lap
    assert not w.accept(far - WINDOW - 1)
    assert not w.accept(150)
    # a jump of exactly one ring lap (128 blocks)
    w2 = Window()
    assert w2.accept(64)
    assert w2.accept(64 + 128 * 64)
    assert not w2.accept(64)  # too old now, not confused with its ring slot
    assert w2.accept(65 + 127 * 64)


def test_reject_after_messages() -> None:
    w = Window()
    assert not w.accept(REJECT_AFTER_MESSAGES)
    assert not w.accept(2**64 - 1)
    assert w.accept(REJECT_AFTER_MESSAGES - 1)
    assert not w.accept(REJECT_AFTER_MESSAGES - 1)
    assert w.accept(REJECT_AFTER_MESSAGES - 2)
    assert not w.accept(REJECT_AFTER_MESSAGES)


_BASES = st.sampled_from([0, 2**32 - 5000, REJECT_AFTER_MESSAGES - 30_000])
_OFFSETS = st.one_of(st.integers(0, 200), st.integers(0, 3 * WINDOW),
                     st.integers(0, 40 * WINDOW))


@given(_BASES, st.lists(_OFFSETS, max_size=300))
@settings(max_examples=300, deadline=None)
def test_window_matches_the_reference(base: int, offsets: list[int]) -> None:
    w, ref = Window(), Reference()
    if base:  # start where the base is (as if earlier counters went before)
        assert w.accept(base) == ref.accept(base)
    for off in offsets:
        c = base + off
        assert w.accept(c) == ref.accept(c), (c, ref.last)


@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
@settings(max_examples=100, deadline=None)
def test_window_matches_the_reference_on_any_counters(counters: list[int]) -> None:
    w, ref = Window(), Reference()
    for c in counters:
        assert w.accept(c) == ref.accept(c), c
