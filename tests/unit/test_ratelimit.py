from hypothesis import given
from hypothesis import strategies as st

from simpletun.tunnel.ratelimit import AnswerLimiter, LimitedLog, LineLimiter


def test_burst_then_held_back_then_counted() -> None:
    lim = LineLimiter(burst=3, interval=3.0)
    assert [lim.allow("k", 0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert lim.allow("other", 0.0) == 0  # kinds are limited apart
    assert lim.allow("k", 1.0) == 2  # one token back after a second: says what it held


def test_flood_of_2000_lines_gives_a_handful() -> None:
    lines: list[str] = []
    now = [0.0]
    log = LimitedLog(lines.append, burst=5, interval=10.0, clock=lambda: now[0])
    for i in range(2000):  # 2,000 connects in 10 s
        now[0] = i * 0.005
        log("refused", f"refused {i}")
    assert 5 <= len(lines) <= 11  # the burst, then one per 2 s
    now[0] = 100.0
    log("refused", "later")
    assert lines[-1].startswith("later (") and "held back" in lines[-1]


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=300))
def test_never_more_than_the_rate_allows(times: list[float]) -> None:
    lim = LineLimiter(burst=4, interval=8.0)
    passed = [t for t in sorted(times) if lim.allow("k", t) is not None]
    span = (max(times) - min(times)) if times else 0.0
    assert len(passed) <= 4 + span * 4 / 8.0 + 1e-9


def test_answers_per_address() -> None:
    lim = AnswerLimiter(interval=0.1, per_second=1000)
    assert lim.allow(("a", 1), 10.0)
    assert not lim.allow(("a", 1), 10.05)  # the same address, too soon
    assert lim.allow(("b", 1), 10.05)  # a flood from a does not starve b
    assert lim.allow(("a", 1), 10.2)


def test_answers_in_all_are_capped() -> None:
    lim = AnswerLimiter(interval=0.1, per_second=100)
    allowed = sum(lim.allow(("spoofed", i), 50.0) for i in range(1000))
    assert allowed == 100  # the bucket, then nothing until it refills
    assert lim.allow(("next", 0), 50.02)  # two more tokens after 20 ms


def test_answer_memory_is_bounded() -> None:
    lim = AnswerLimiter(interval=1.0, per_second=1e9, size=8)
    for i in range(100):
        assert lim.allow(i, 1.0)
    assert len(lim._last) == 8
    assert not lim.allow(99, 1.5) and lim.allow(0, 1.5)  # 0 was forgotten
