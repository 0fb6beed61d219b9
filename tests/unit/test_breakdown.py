"""The per-pass latency breakdown (``simpletun bench --breakdown``): what the wrappers count
and how the two sides' medians become the bench's lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simpletun.tunnel import breakdown


class FakeSide:
    def __init__(self) -> None:
        self.waiting = [2, 0]

    def read_batch(self, views: list[Any], room: int) -> int:
        return self.waiting.pop(0)

    def _write(self, packets: int, size: int, *parts: bytes) -> bool:
        return True


class FakeLink:
    def __init__(self) -> None:
        self.queue: list[Any] = [([b"m"], ("h", 1)), None]

    def receive(self, buf: bytearray) -> Any:
        return self.queue.pop(0) if self.queue else None

    def send(self, data: bytes, address: Any) -> None:
        pass

    def send_batch(self, frames: list[bytes], address: Any) -> None:
        pass


class FakeEngine:
    def __init__(self) -> None:
        self.side = FakeSide()
        self.link = FakeLink()

    def _from_device(self) -> None:
        n = self.side.read_batch([None] * 64, 0)
        for _ in range(n):
            self.link.send(b"x", ("h", 1))

    def _from_network(self) -> None:
        while self.link.receive(bytearray(1)) is not None:
            self.side._write(1, 1, b"p")


def test_not_installed_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(breakdown.ENV, raising=False)
    engine = FakeEngine()
    assert breakdown.install(engine) is None
    assert "_from_device" not in vars(engine)  # the methods stay the class's


def test_passes_count_their_system_calls(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    out = tmp_path / "passes.json"
    monkeypatch.setenv(breakdown.ENV, str(out))
    engine = FakeEngine()
    rec = breakdown.install(engine)
    assert rec is not None
    engine._from_device()  # two reads and the one that found nothing, two sends
    engine._from_network()  # a receive with a message, one that found nothing, one write
    engine._from_device()  # found nothing at all: still a pass (one empty read)
    m = rec.medians()
    assert m["out"]["passes"] == 2
    assert list(rec.calls["out"]) == [5, 1] and list(rec.empty["out"]) == [1, 1]
    assert list(rec.calls["in"]) == [3] and list(rec.empty["in"]) == [1]
    for d in ("out", "in"):
        assert m[d]["pass_us"] >= m[d]["syscalls_us"] > 0
    breakdown.dump(rec)
    assert json.loads(out.read_text()) == json.loads(json.dumps(m))


def test_a_new_link_is_timed_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(breakdown.ENV, str(tmp_path / "p.json"))
    engine = FakeEngine()
    rec = breakdown.install(engine)
    engine.link = FakeLink()  # the engine rebound its socket
    breakdown.wrap_link(rec, engine.link)
    engine._from_network()
    assert list(rec.calls["in"]) == [3]


def test_summary_adds_the_four_passes_and_names_the_rest() -> None:
    side = {"out": {"passes": 10, "pass_us": 50.0, "syscalls_us": 30.0, "python_us": 20.0,
                    "syscalls": 3, "empty_syscalls": 1},
            "in": {"passes": 10, "pass_us": 40.0, "syscalls_us": 25.0, "python_us": 15.0,
                   "syscalls": 3, "empty_syscalls": 1}}
    lines = breakdown.summarise(side, side, rtt_added_us=300.0, bare_us=40.0)
    assert len(lines) == 6
    assert lines[1].split()[:3] == ["client", "device", "->"]
    assert "180.0us" in lines[-1] and "(160us of 340us)" in lines[-1]
    assert "(no passes recorded)" in breakdown.summarise({}, side, 300.0, 40.0)[2]
