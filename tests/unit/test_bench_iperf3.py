"""The bench's iperf3 path: when the iperf3 client fails, the one-line error stands; the
iperf3 server, still waiting, is killed and reaped (it used to be waited for 10 s, and the
TimeoutExpired that followed replaced the error with a traceback)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from simpletun.errors import SimpletunError
from simpletun.lab import bench


class Server:
    """Stands in for the server's namespace: its iperf3 server never exits by itself."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        assert cmd[0] == "iperf3"
        proc = subprocess.Popen(["sleep", "60"], **kwargs)
        self.procs.append(proc)
        return proc


class Client:
    """Stands in for the client's namespace: its iperf3 client never gets through."""

    def run(self, cmd: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "iperf3: error - unable to connect")


def test_a_failed_iperf3_run_is_one_error_and_its_server_is_reaped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.time, "sleep", lambda _s: None)
    server = Server()
    try:
        with pytest.raises(SimpletunError, match=r"iperf3 failed:.*unable to connect"):
            bench.throughput(server, Client(), "10.0.0.1", 1, 1.0, "iperf3")
        (proc,) = server.procs
        assert proc.returncode is not None  # killed and reaped
    finally:
        for proc in server.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("seconds,given", [(0.5, "1"), (1.0, "1"), (2.6, "3"), (10, "10")])
def test_iperf3_is_given_whole_seconds(monkeypatch: pytest.MonkeyPatch, seconds: float,
                                       given: str) -> None:
    """iperf3 reads -t as an integer: "0.5" would be 0, which it runs forever."""
    asked: list[list[str]] = []

    class Answering:
        def run(self, cmd: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
            asked.append(cmd)
            report = '{"end": {"sum_received": {"bytes": 1000, "bits_per_second": 8000.0}}}'
            return subprocess.CompletedProcess(cmd, 0, report, "")

    server = Server()
    try:
        assert bench.throughput(server, Answering(), "192.0.2.1", 1, seconds,  # type: ignore[arg-type]
                                "iperf3") == (0.008, 1000)
    finally:
        for p in server.procs:
            p.kill()
            p.wait()
    assert asked[0][asked[0].index("-t") + 1] == given
