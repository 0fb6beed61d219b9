"""``simpletun bench`` runs, tears down, and reports every field (values are not asserted:
timings are noisy; only that they are real measurements)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import ExitStack
from typing import Any

import pytest

from simpletun.device import link
from simpletun.errors import SimpletunError
from simpletun.lab import bench, wghost
from simpletun.lab.netns import Lab, veth
from simpletun.lab.testbed import Testbed

from ..conftest import simpletun


def _check_report(report: dict[str, Any], modes: list[str], streams: list[int]) -> None:
    assert report["tool"] in ("iperf3", "builtin")
    assert isinstance(report["table"], str) and "of bare" in report["table"]
    assert [r["mode"] for r in report["results"]] == modes
    for r in report["results"]:
        assert set(r) == {"mode", "rtt_p50_ms", "rtt_p99_ms", "throughput_mbps", "cpu_s_per_gb",
                          "peak_rss_mb", "ratios", "notes", "breakdown"}
        assert 0 < r["rtt_p50_ms"] <= r["rtt_p99_ms"]
        assert set(r["throughput_mbps"]) == {str(n) for n in streams}
        # a run that moved nothing (lost SYNs on a lossy link) is null, with a note
        moved = {n: v for n, v in r["throughput_mbps"].items() if v is not None}
        assert all(v > 0 and math.isfinite(v) for v in moved.values())
        assert len(r["notes"]) == len(streams) - len(moved), r
        if r["mode"] != "bare":
            assert r["mode"].endswith("-loss") or len(moved) == len(streams), r
        bare = report["results"][0]["throughput_mbps"] if report["results"][0]["mode"] == \
            "bare" else {}
        keys = {"rtt_p50", "rtt_p99", "rtt_p50_added_us"} | {
            f"throughput_{n}" for n in moved if bare.get(n) is not None}
        assert set(r["ratios"]) == keys
        if r["mode"] == "bare":
            assert r["cpu_s_per_gb"] is None and r["peak_rss_mb"] is None
            assert all(r["ratios"][f"throughput_{n}"] == 1 for n in moved)
        else:
            assert (r["cpu_s_per_gb"] > 0 or not moved) and r["peak_rss_mb"] > 1


def _wg_row(report: dict[str, Any], mode: str, streams: list[int]) -> dict[str, Any]:
    """The WireGuard mode's row, with every figure measured (not skipped)."""
    assert report["skipped"] == [], report["skipped"]
    row: dict[str, Any] = next(r for r in report["results"] if r["mode"] == mode)
    assert set(row["throughput_mbps"]) == {str(n) for n in streams}
    assert all(v is not None and v > 0 for v in row["throughput_mbps"].values()), row
    assert row["rtt_p50_ms"] > 0 and "rtt_p50_added_us" in row["ratios"]
    assert row["cpu_s_per_gb"] is not None and row["cpu_s_per_gb"] > 0
    assert row["peak_rss_mb"] is not None and row["peak_rss_mb"] > 1
    assert row["notes"] == []
    assert any(line.split()[:1] == [mode] for line in report["table"].splitlines())
    return row


def test_bench_json_every_mode(lab: Lab) -> None:
    done = simpletun("bench", "--seconds", "1", "--streams", "1", "--pings", "10", "--json",
                     timeout=400)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    _check_report(report, [r["mode"] for r in report["results"]], [1])
    assert report["results"][0]["mode"] == "bare" and len(report["results"]) >= 2
    # every mode by default, the WireGuard ones too (their tools are installed here)
    assert [r["mode"] for r in report["results"]] == list(bench.MODE_NAMES)
    assert "bench: classic: TCP, 1 stream" in done.stderr  # progress lines
    assert shutil.which("wireguard-go"), "wireguard-go is not installed: run scripts/setup"
    for impl, mode in (("simpletun-wg", "wg"), ("wireguard-go", "wireguard-go")):
        _wg_row(report, mode, [1])
        assert f"bench: {mode}: starting {impl} on both sides" in done.stderr
    assert wghost.our_sockets() == []


def test_bench_builtin_tool_and_narrowing(lab: Lab) -> None:
    """The built-in generator, whether iperf3 is installed or not, also on a lossy mode;
    --breakdown times the engine's passes during the pings (and only the engine's)."""
    done = simpletun("bench", "--seconds", "0.5", "--pings", "10", "--tool", "builtin",
                     "--modes", "bare,classic,enc-udp-loss", "--streams", "2", "--json",
                     "--breakdown", timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tool"] == "builtin"
    _check_report(report, ["bare", "classic", "enc-udp-loss"], [2])
    bare, classic, enc = report["results"]
    assert bare["breakdown"] == classic["breakdown"] == {}
    assert set(enc["breakdown"]) == {"server", "client"}
    for side in enc["breakdown"].values():
        assert set(side) == {"out", "in"}
        for m in side.values():
            # at least the pings (some lost on this lossy link); each pass made system
            # calls and took longer than they did
            assert m["passes"] >= 5 and m["syscalls"] >= 1
            assert 0 < m["syscalls_us"] < m["pass_us"] and m["python_us"] > 0
    assert "enc-udp-loss: one ping's round trip, pass by pass" in report["table"]
    assert "server socket -> device" in report["table"]


def test_builtin_sender_gets_through_lost_syns_and_reports_nothing_moved(lab: Lab) -> None:
    """The first SYN lost: the sender tries again at once rather than after the kernel's
    1 s, so a 1 s run still moves data. Every SYN lost: the run reports that it moved
    nothing (None), promptly, instead of dividing by zero or waiting for a connection."""
    server, client = lab.host("bsrv"), lab.host("bcli")
    veth(server, "veth0", client, "veth0", a_addrs=["192.0.2.1/24"], b_addrs=["192.0.2.2/24"])
    syn = f"tcp dport {bench.PORT} tcp flags & (syn | ack) == syn"

    def drop(match: str) -> None:
        rules = (f"flush ruleset\ntable inet t {{\n chain input {{\n"
                 f"  type filter hook input priority 0;\n  {syn} {match} counter drop\n }}\n}}\n")
        done = server.run(["nft", "-f", "-"], input=rules)
        assert done.returncode == 0, done.stderr

    def dropped() -> int:
        out = server.run(["nft", "list", "table", "inet", "t"]).stdout
        return int(out.split("counter packets ")[1].split()[0])

    drop("numgen inc mod 2 == 0")  # the 1st, 3rd, ... SYN
    mbps, nbytes = bench.throughput(server, client, "192.0.2.1", 1, 1.0, "builtin")
    assert dropped() == 1
    assert nbytes > 0 and mbps is not None and mbps > 0

    drop("")  # every SYN
    began = time.monotonic()
    mbps, nbytes = bench.throughput(server, client, "192.0.2.1", 2, 1.0, "builtin")
    assert (mbps, nbytes) == (None, 0)
    assert dropped() >= 2
    assert time.monotonic() - began < 30


def test_bench_rejects_unknown_mode() -> None:
    done = simpletun("bench", "--modes", "bare,warp")
    assert done.returncode == 2
    assert "unknown mode 'warp'" in done.stderr


@pytest.mark.parametrize("impl", wghost.IMPLEMENTATIONS)
def test_wg_tunnel_measures_the_daemons_and_cleans_up_on_failure(lab: Lab, impl: str) -> None:
    """The pids the bench reads CPU and RSS from are the two daemons started with -f, one
    in each namespace, and the overlay really runs through them (wg's counters); a failure
    inside the mode still stops them and removes their UAPI sockets."""
    bed = Testbed(lab, ipv6_overlay=False)
    with pytest.raises(RuntimeError, match="failed mid-measurement"), ExitStack() as stack:
        pids = bench.wg_tunnel(bed, impl, stack)
        assert len(pids) == 2
        names = []
        for pid, ns in zip(pids, (bed.server, bed.client), strict=True):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
            assert "-f" in argv
            assert any(impl in a or (impl == "simpletun-wg" and a == "simpletun.cli.wg")
                       for a in argv), argv
            names.append(argv[argv.index("-f") + 1])
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(
                os.path.join(link.NETNS_DIR, ns.name)).st_ino
            assert bench._cpu_seconds(pid) >= 0 and bench._peak_rss_mb(pid) > 1
        assert sorted(wghost.our_sockets()) == sorted(f"{n}.sock" for n in names)
        before = bench._cpu_seconds(pids[0]) + bench._cpu_seconds(pids[1])
        mbps, nbytes = bench.throughput(bed.server, bed.client, bed.server_overlay, 1, 0.5,
                                        "builtin")
        assert mbps is not None and nbytes > 0
        assert bench._cpu_seconds(pids[0]) + bench._cpu_seconds(pids[1]) > before
        dump = wghost.parse_dump(bed.server.run(["wg", "show", names[0], "dump"]).stdout)
        assert dump.peers[0].rx_bytes > nbytes  # every byte went through the daemons
        raise RuntimeError("failed mid-measurement")
    assert wghost.our_sockets() == []
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)  # stopped and reaped


def test_wg_tunnel_that_cannot_start_is_one_line(lab: Lab, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    """An implementation that dies at once: one line saying which and what it said last,
    nothing left behind."""
    script = "echo starting >&2; echo 'cannot open tun: no such device' >&2; exit 3"
    monkeypatch.setattr(wghost, "implementation_cmd",
                        lambda impl: ["/bin/sh", "-c", script, impl])
    bed = Testbed(lab, ipv6_overlay=False)
    with pytest.raises(SimpletunError) as err, ExitStack() as stack:
        bench.wg_tunnel(bed, "simpletun-wg", stack)
    message = str(err.value)
    assert "\n" not in message
    assert "exited with status 3" in message and "cannot open tun: no such device" in message
    assert "starting" not in message
    assert wghost.our_sockets() == []
