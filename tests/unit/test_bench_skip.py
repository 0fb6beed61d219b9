"""The bench's WireGuard modes when a tool is missing: skipped with a one-line reason (in
the table and the JSON), the other modes still measured, exit status 0, no error. The
missing executable is simulated by making its lookup (shutil.which) fail."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from simpletun.cli import run as cli_run
from simpletun.lab import bench

real_which = shutil.which


def without(*missing: str) -> Callable[..., str | None]:
    def which(cmd: str, *args: Any, **kwargs: Any) -> str | None:
        return None if cmd in missing else real_which(cmd, *args, **kwargs)
    return which


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """bench.run without root or namespaces: every mode it measures is recorded and gets
    made-up figures."""
    calls: list[str] = []

    def fake(mode: str, **_kw: Any) -> bench.ModeResult:
        calls.append(mode)
        return bench.ModeResult(mode, 0.05 if mode == "bare" else 0.5, 0.1,
                                {"1": 1000.0}, None if mode == "bare" else 10.0,
                                None if mode == "bare" else 30.0)

    monkeypatch.setattr(bench, "measure_mode", fake)
    monkeypatch.setattr(bench.os, "geteuid", lambda: 0)
    return calls


def test_skip_reason_names_the_missing_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", without("wireguard-go"))
    reason = bench.skip_reason("wireguard-go")
    assert reason is not None and "wireguard-go is not installed" in reason
    assert "apt-get install wireguard-go" in reason and "\n" not in reason
    for mode in ("wg", "bare", "native", "enc-udp-loss"):  # nothing else needs wireguard-go
        assert bench.skip_reason(mode) is None

    monkeypatch.setattr(shutil, "which", without("wg"))  # both WireGuard modes need wg
    for mode in ("wg", "wireguard-go"):
        reason = bench.skip_reason(mode)
        assert reason is not None and "wg is not installed" in reason and "\n" not in reason
    assert bench.skip_reason("bare") is None


def test_installed_tools_skip_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: f"/usr/bin/{cmd}")
    assert all(bench.skip_reason(m) is None for m in bench.MODE_NAMES)
    assert {"bare", "wg", "wireguard-go"} <= set(bench.MODE_NAMES)


def test_run_skips_wireguard_go_and_measures_the_rest(
        monkeypatch: pytest.MonkeyPatch, measured: list[str]) -> None:
    monkeypatch.setattr(shutil, "which", without("wireguard-go", "iperf3"))
    said: list[str] = []
    report = bench.run(modes=["bare", "wireguard-go", "wg"], streams=[1], seconds=1, pings=5,
                       tool="auto", progress=said.append)
    assert measured == ["bare", "wg"]
    assert [r["mode"] for r in report["results"]] == ["bare", "wg"]
    (skip,) = report["skipped"]
    assert skip["mode"] == "wireguard-go" and "wireguard-go is not installed" in skip["reason"]
    rows = report["table"].splitlines()
    row = next(line for line in rows if line.startswith("wireguard-go"))
    assert row.split()[1] == "skipped:" and skip["reason"] in row
    assert any(line.startswith("wg ") and "1000" in line for line in rows)
    assert any("wireguard-go: skipped: wireguard-go is not installed" in s for s in said)
    json.dumps(report)  # still JSON


def test_cli_reports_the_skip_and_exits_0(monkeypatch: pytest.MonkeyPatch,
                                          measured: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", without("wireguard-go", "iperf3"))
    assert cli_run(["bench", "--modes", "bare,wireguard-go", "--streams", "1"]) == 0
    out = capsys.readouterr().out
    assert measured == ["bare"]
    assert "wireguard-go skipped: wireguard-go is not installed" in " ".join(out.split())

    assert cli_run(["bench", "--modes", "wireguard-go", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"] == [] and report["skipped"][0]["mode"] == "wireguard-go"
    assert measured == ["bare"]  # nothing more was measured
