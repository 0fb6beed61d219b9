"""The bench's report when a run moved nothing (a stream whose SYNs were all lost on a lossy
link): no division by zero, None (JSON null) with a note, "moved nothing" in the table."""

from __future__ import annotations

import json
from dataclasses import asdict

from simpletun.lab.bench import ModeResult, add_ratios, rate_mbps, table


def test_rate_of_a_run_that_moved_nothing_is_none() -> None:
    assert rate_mbps(0, 0.0) is None
    assert rate_mbps(0, 1.0) is None
    assert rate_mbps(1000, 0.0) is None
    assert rate_mbps(125_000_000, 1.0) == 1000.0


def test_report_of_a_mode_that_moved_nothing() -> None:
    bare = ModeResult("bare", 0.05, 0.08, {"1": 9000.0, "4": 20000.0}, None, None)
    lossy = ModeResult("enc-udp-loss", 0.2, 0.4, {"1": None, "4": 800.0}, None, 30.0,
                       notes=["1 stream: moved nothing in 1 s (no connection got through "
                              "in time)"])
    results = [bare, lossy]
    add_ratios(results)
    assert "throughput_1" not in lossy.ratios
    assert lossy.ratios["throughput_4"] == 800.0 / 20000.0
    shown = table(results, "builtin", 1)
    row = next(line for line in shown.splitlines() if line.startswith("enc-udp-loss"))
    assert "moved nothing" in row and "4.0%" in row
    assert "note: enc-udp-loss: 1 stream: moved nothing in 1 s" in shown
    back = json.loads(json.dumps([asdict(r) for r in results]))
    assert back[1]["throughput_mbps"] == {"1": None, "4": 800.0}
    assert back[1]["notes"] and back[0]["notes"] == []


def test_bare_that_moved_nothing_gives_no_ratios() -> None:
    bare = ModeResult("bare", 0.05, 0.08, {"1": None}, None, None, notes=["moved nothing"])
    tunnel = ModeResult("native", 0.1, 0.2, {"1": 5000.0}, 1.0, 30.0)
    add_ratios([bare, tunnel])
    assert "throughput_1" not in tunnel.ratios
    assert "moved nothing" in table([bare, tunnel], "builtin", 1)
