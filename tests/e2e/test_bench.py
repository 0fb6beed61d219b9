"""``simpletun bench`` runs, tears down, and reports every field (values are not asserted:
timings are noisy; only that they are real measurements)."""

from __future__ import annotations

import json
import math

from simpletun.lab.netns import Lab

from ..conftest import simpletun


def _check_report(report: dict, modes: list[str], streams: list[int]) -> None:
    assert report["tool"] in ("iperf3", "builtin")
    assert isinstance(report["table"], str) and "of bare" in report["table"]
    assert [r["mode"] for r in report["results"]] == modes
    for r in report["results"]:
        assert set(r) == {"mode", "rtt_p50_ms", "rtt_p99_ms", "throughput_mbps", "cpu_s_per_gb",
                          "peak_rss_mb", "ratios"}
        assert 0 < r["rtt_p50_ms"] <= r["rtt_p99_ms"]
        assert set(r["throughput_mbps"]) == {str(n) for n in streams}
        assert all(v > 0 and math.isfinite(v) for v in r["throughput_mbps"].values())
        keys = {"rtt_p50", "rtt_p99", "rtt_p50_added_us"} | {f"throughput_{n}" for n in streams}
        assert set(r["ratios"]) == keys
        if r["mode"] == "bare":
            assert r["cpu_s_per_gb"] is None and r["peak_rss_mb"] is None
            assert r["ratios"]["throughput_1" if 1 in streams else f"throughput_{streams[0]}"] == 1
        else:
            assert r["cpu_s_per_gb"] > 0 and r["peak_rss_mb"] > 1


def test_bench_json_every_mode(lab: Lab) -> None:
    done = simpletun("bench", "--seconds", "1", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    _check_report(report, [r["mode"] for r in report["results"]], [1, 4])
    assert report["results"][0]["mode"] == "bare" and len(report["results"]) >= 2
    assert "bench: classic: TCP, 4 streams" in done.stderr  # progress lines


def test_bench_builtin_tool_and_narrowing(lab: Lab) -> None:
    done = simpletun("bench", "--seconds", "0.5", "--pings", "10", "--tool", "builtin",
                     "--modes", "bare,classic", "--streams", "2", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tool"] == "builtin"
    _check_report(report, ["bare", "classic"], [2])


def test_bench_rejects_unknown_mode() -> None:
    done = simpletun("bench", "--modes", "bare,warp")
    assert done.returncode == 2
    assert "unknown mode 'warp'" in done.stderr
