"""End to end: real ``ping`` answered through a device by ``simpletun dump --respond`` and
``simpletun respond``, in tun and tap mode, over IPv4 and IPv6; the dump's lines and its
pcap (read back by our reader and by tcpdump) show those packets."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab, Namespace
from simpletun.lab.testbed import Watched
from simpletun.tools import pcap
from simpletun.tools.describe import describe

from ..conftest import simpletun

ADDR4, ADDR6 = "10.99.0.1/24", "fd99::1/64"


def start(ns: Namespace, *args: str) -> Watched:
    proc = ns.popen([sys.executable, "-m", "simpletun", *args], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    return Watched(proc, args[0])


def wait_ready(ns: Namespace, name: str, proc: Watched, marker: str) -> None:
    """Wait for the command's ready line (it holds the device from then on) and for IPv6
    duplicate address detection to end."""
    proc.wait_for(marker)
    link.wait_usable(name, netns=ns.name)


def stop(proc: Watched) -> tuple[str, str]:
    """SIGTERM; returns (stdout, stderr) after a clean exit."""
    assert proc.stop() == 0, proc.text
    assert proc.proc.stdout is not None
    return proc.proc.stdout.read(), proc.text


@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
def test_dump_with_responder_shows_and_captures_pings(lab: Lab, tmp_path: Path,
                                                      tap: bool) -> None:
    ns = lab.host("dump")
    kind = "tap" if tap else "tun"
    name = f"st{kind}9"
    cap_file = tmp_path / "capture.pcap"
    proc = start(ns, "dump", name, f"--{kind}", "--respond", "--address", ADDR4,
                 "--address", ADDR6, "--pcap", str(cap_file))
    wait_ready(ns, name, proc, "listening on")
    p4 = ns.ping("10.99.0.2", count=3)
    p6 = ns.ping("fd99::2", count=3)
    out, err = stop(proc)
    assert p4.ok and p6.ok, p4.output + p6.output + err

    lines = out.splitlines()
    eth = 14 if tap else 0
    for seq in (1, 2, 3):
        for pattern in (
            rf"IPv4 10\.99\.0\.1 > 10\.99\.0\.2 ICMP echo request id 0x[0-9a-f]+ seq {seq}, {84 + eth} bytes",
            rf"IPv4 10\.99\.0\.2 > 10\.99\.0\.1 ICMP echo reply id 0x[0-9a-f]+ seq {seq}, {84 + eth} bytes",
            rf"IPv6 fd99::1 > fd99::2 ICMPv6 echo request id 0x[0-9a-f]+ seq {seq}, {104 + eth} bytes",
            rf"IPv6 fd99::2 > fd99::1 ICMPv6 echo reply id 0x[0-9a-f]+ seq {seq}, {104 + eth} bytes",
        ):
            assert any(re.fullmatch(pattern, line) for line in lines), (pattern, out)
    if tap:
        assert "ARP who-has 10.99.0.2 tell 10.99.0.1, 42 bytes" in lines
        assert "ARP 10.99.0.2 is-at 02:53:54:00:00:01, 42 bytes" in lines
        assert any("neighbor advertisement tgt is fd99::2" in line for line in lines), out
    assert f"{name} did not exist: created a temporary {kind} device" in err

    # the capture holds exactly what was printed, in order, with the right link type
    captured = pcap.read(str(cap_file))
    assert captured.linktype == (pcap.LINKTYPE_ETHERNET if tap else pcap.LINKTYPE_RAW)
    assert [describe(r.data, tap=tap) for r in captured.records] == lines
    assert f"{len(lines)} written to {cap_file}" in err

    # and tcpdump, which Wireshark users trust, reads it the same way
    tcpdump = shutil.which("tcpdump")
    assert tcpdump, "tcpdump is installed by the test set-up (scripts/setup)"
    read = subprocess.run([tcpdump, "-nr", str(cap_file)], capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    assert read.stdout.count("ICMP echo request") == 3
    assert read.stdout.count("ICMP6, echo request") == 3
    assert read.stdout.count("ICMP echo reply") == 3
    assert read.stdout.count("ICMP6, echo reply") == 3
    assert not link.exists(name, netns=ns.name)  # the temporary device went with dump


@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
def test_respond_answers_every_other_address(lab: Lab, tap: bool) -> None:
    ns = lab.host("resp")
    kind = "tap" if tap else "tun"
    name = f"stresp{kind}"
    made = simpletun("mktun", name, f"--{kind}" if tap else "--mtu", *([] if tap else ["1500"]),
                     "--address", ADDR4, "--address", ADDR6, "--up", ns=ns)
    assert made.returncode == 0, made.stderr
    proc = start(ns, "respond", name)
    wait_ready(ns, name, proc, "answering on")
    results = [ns.ping(addr, count=2) for addr in
               ("10.99.0.2", "10.99.0.77", "10.99.0.254", "fd99::2", "fd99::abcd")]
    out, err = stop(proc)
    for r in results:
        assert r.ok, r.output + err
    assert "answering on" in err and "10.99.0.0/24 (not 10.99.0.1)" in err
    summary = err.strip().splitlines()[-1]
    assert "answered" in summary and "6 echo" in summary and "4 echo6" in summary, err
    if tap:
        assert re.search(r"\d+ arp", summary) and re.search(r"\d+ ndp", summary), summary
    assert out == ""  # quiet without -v
    assert link.exists(name, netns=ns.name)  # a persistent device stays
    assert simpletun("deltun", name, ns=ns).returncode == 0


def test_dump_of_existing_device_stops_after_count(lab: Lab) -> None:
    """No responder: the echo requests still go into the device and are shown."""
    ns = lab.host("count")
    assert simpletun("mktun", "stcount", "--address", "10.98.0.1/24", "--up",
                     ns=ns).returncode == 0
    proc = start(ns, "dump", "stcount", "-c", "2", "--time")
    wait_ready(ns, "stcount", proc, "listening on")
    ns.run(["ping", "-c", "5", "-i", "0.2", "-W", "1", "10.98.0.2"])
    assert proc.proc.wait(10) == 0, proc.text
    out, err = stop(proc)
    lines = out.splitlines()
    assert len(lines) == 2
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{6} IPv4 10\.98\.0\.1 > 10\.98\.0\.2 ICMP echo "
                            r"request id 0x[0-9a-f]+ seq \d, 84 bytes", line) for line in lines)
    assert "created a temporary" not in err
    assert err.strip().endswith("2 packets captured")


def test_selftest_command(lab: Lab) -> None:
    done = simpletun("selftest", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("self-check passed")


@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
def test_demo_command(lab: Lab, tap: bool) -> None:
    done = simpletun("demo", "--megabytes", "2", *(["--tap"] if tap else []), timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ping through the tunnel     10.200.0.1: 20/20 replies" in out
    assert "ping6 through the tunnel       fd20::1: 20/20 replies" in out
    assert "TCP 2 MiB through the tunnel:" in out and "sha256 matches" in out
    assert out.strip().endswith("demo passed")


def test_pcap_into_a_missing_directory_names_the_path(lab: Lab, tmp_path: Path) -> None:
    ns = lab.host("nopcap")
    target = tmp_path / "no" / "such" / "dir" / "x.pcap"
    done = simpletun("dump", "stnopcap", "--pcap", str(target), ns=ns)
    assert done.returncode == 1
    assert done.stderr == (f"simpletun: cannot write the capture to {target}: the directory "
                           f"{target.parent} does not exist; create it or give another path\n")
    assert not link.exists("stnopcap", netns=ns.name)  # refused before a device was made
