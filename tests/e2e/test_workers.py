"""--workers: one process and one connection per queue of a multi-queue device."""

from __future__ import annotations

import contextlib
import os
import re
import signal

import pytest

from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed

MB = 1024 * 1024


def _per_queue(lines: list[str], what: str) -> dict[int, int]:
    """queue -> the most packets ``what`` ("sent"/"received") in any of the workers'
    disconnect or shutdown lines."""
    out: dict[int, int] = {}
    for line in lines:
        m = re.search(r"queue (\d+): .*?\(?(\d+) packets sent, (\d+) received", line)
        if m:
            n = int(m[2] if what == "sent" else m[3])
            out[int(m[1])] = max(n, out.get(int(m[1]), 0))
    return out


def test_two_workers_spread_flows_over_both_connections(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(server_extra=["--workers", "2"], client_extra=["--workers", "2"])
    assert bed.server_proc and bed.client_proc
    bed.server_proc.wait_for("on queue 1 of 2")
    bed.transfer(8 * MB)
    for i in range(12):  # new flows: the kernel hashes each to one queue (2^-11: all on one)
        bed.transfer(32 * 1024, port=5002 + i)
    assert bed.client_proc.stop() == 0
    assert bed.server_proc.stop() == 0
    sent = _per_queue(bed.client_proc.lines, "sent")
    received = _per_queue(bed.server_proc.lines, "received")
    assert set(sent) == {0, 1} and all(sent.values()), bed.client_proc.text
    assert set(received) == {0, 1} and all(received.values()), bed.server_proc.text


@pytest.mark.parametrize(("server_n", "client_n"), [("1", "2"), ("2", "1")])
def test_uneven_worker_counts_agree_on_the_smaller(lab: Lab, server_n: str,
                                                   client_n: str) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    bed.start(server_extra=["--workers", server_n], client_extra=["--workers", client_n])
    assert bed.server_proc and bed.client_proc
    if client_n == "2":
        bed.client_proc.wait_for("the server serves 1 queue(s): using 1 of 2")
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05).ok
    for i in range(4):  # whatever queue each flow hashes to, it arrives
        bed.transfer(2 * MB, port=5002 + i)
    assert bed.server_proc.count("client 192.0.2.2:") == 1


def test_workers_need_the_native_wire(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    proc = bed.start_client("--classic", "--workers", "2", wait=False)
    assert proc.proc.wait(20) == 2
    proc.stop()
    assert "--workers needs the native wire: drop --classic" in proc.text


def _interrupt(pid: int, *, group: bool) -> None:
    """Ctrl-C: SIGINT to the tunnel and, as a terminal does, with ``group`` to its workers
    at the same moment."""
    children: list[str] = []
    if group:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    os.kill(pid, signal.SIGINT)
    for child in children:
        with contextlib.suppress(ProcessLookupError):  # e.g. a short-lived helper
            os.kill(int(child), signal.SIGINT)


def _summary_of(lines: list[str]) -> tuple[dict[int, int], list[str]]:
    """The final summary: each worker's line (queue -> packets) and the total lines."""
    queues = {int(m[1]): int(m[2]) for x in lines
              if (m := re.search(r"queue (\d+): shutting down: (\d+) packets? sent", x))}
    totals = [x for x in lines if "shutting down: total of 2 workers: " in x]
    return queues, totals


@pytest.mark.parametrize("group", [False, True], ids=["parent", "group"])
def test_ctrl_c_prints_every_workers_summary_and_a_total(lab: Lab, group: bool) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    for _run in range(3):
        bed.start(server_extra=["--workers", "2"], client_extra=["--workers", "2"])
        assert bed.server_proc and bed.client_proc
        bed.server_proc.wait_for("on queue 1 of 2")
        for i in range(4):  # flows over both queues
            bed.transfer(256 * 1024, port=5002 + i)
        for proc in (bed.client_proc, bed.server_proc):
            _interrupt(proc.proc.pid, group=group)
            assert proc.proc.wait(15) == 0
            proc.stop()
            queues, totals = _summary_of(proc.lines)
            assert set(queues) == {0, 1} and len(totals) == 1, proc.text
            assert proc.lines[-1] == totals[0], proc.text  # the total comes last
            moved = sum(queues.values())
            assert f"total of 2 workers: {moved} packet" in totals[0], proc.text
            assert "Traceback" not in proc.text
