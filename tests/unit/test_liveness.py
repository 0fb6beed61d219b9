from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.tunnel.liveness import DEAD, KEEPALIVE, Liveness


def test_keepalive_then_dead() -> None:
    live = Liveness(100.0, interval=10, timeout=30)
    assert live.due(105) is None and live.wait(105) == 5
    assert live.due(110) == KEEPALIVE
    live.sent(110)
    assert live.wait(110) == 10
    live.received(115)
    assert live.due(119.9) is None
    assert live.due(120) == KEEPALIVE
    live.sent(120)
    live.sent(140)
    assert live.due(144.9) is None and live.wait(144.9) == pytest.approx(0.1)
    assert live.due(145) == DEAD  # dead wins over a keepalive that is due too
    assert live.silence(145) == 30


def test_disabled() -> None:
    live = Liveness(0.0, interval=None, timeout=None)
    assert live.due(1e9) is None and live.wait(1e9) is None
    with pytest.raises(ValueError):
        Liveness(0.0, interval=0, timeout=None)
    with pytest.raises(ValueError):
        Liveness(0.0, interval=None, timeout=-1)


@given(st.lists(st.tuples(st.sampled_from("srt"), st.floats(0, 50)), max_size=40),
       st.floats(0.1, 20), st.floats(0.1, 60))
def test_wait_never_skips_an_event(events: list[tuple[str, float]], interval: float,
                                   timeout: float) -> None:
    """Sleeping for wait() and then asking due() never misses or delays an event."""
    now = 0.0
    live = Liveness(now, interval=interval, timeout=timeout)
    for what, step in events:
        wait = live.wait(now)
        assert wait is not None
        if live.due(now) is None:
            assert wait > 0
            assert live.due(now + wait + 1e-9) is not None  # select may wake a hair early
        now += step
        if what == "s":
            live.sent(now)
        elif what == "r":
            live.received(now)
