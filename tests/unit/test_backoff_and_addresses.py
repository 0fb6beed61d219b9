import pytest

from simpletun.transport.tcp import TransportError, show, split_host_port
from simpletun.tunnel.backoff import Backoff


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0, jitter=0.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_jitter_stays_within_bounds() -> None:
    low = Backoff(1.0, 10.0, jitter=0.2, rand=lambda: 0.0)
    high = Backoff(1.0, 10.0, jitter=0.2, rand=lambda: 0.999999)
    assert low.next() == pytest.approx(0.8)
    assert high.next() == pytest.approx(1.2, rel=1e-5)


@pytest.mark.parametrize("text,expected", [
    ("192.0.2.1", ("192.0.2.1", 55555)),
    ("192.0.2.1:7000", ("192.0.2.1", 7000)),
    ("server.example", ("server.example", 55555)),
    ("fd00::2", ("fd00::2", 55555)),
    ("[fd00::2]:5555", ("fd00::2", 5555)),
    ("[fd00::2]", ("fd00::2", 55555)),
])
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text, 55555) == expected


@pytest.mark.parametrize("text", ["192.0.2.1:0", "192.0.2.1:x", "[fd00::2]:99999", ":80"])
def test_bad_host_port(text: str) -> None:
    with pytest.raises(TransportError):
        split_host_port(text, 55555)


def test_show() -> None:
    assert show(("192.0.2.1", 80)) == "192.0.2.1:80"
    assert show(("::ffff:192.0.2.1", 80, 0, 0)) == "192.0.2.1:80"
    assert show(("fd00::1", 80, 0, 0)) == "[fd00::1]:80"
