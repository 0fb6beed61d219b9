"""``simpletun bench``: what a tunnel costs, as ratios to the bare link measured in the
same run. Each mode gets a fresh pair of namespaces joined by veth:

- ``bare``: the veth link itself, the ceiling;
- ``classic``: simpletun on the classic wire (2-byte length framing over TCP);
- ``native``: simpletun's own wire between two simpletun peers, offloads on, one worker
  per CPU on each side (``--workers``);
- ``native-1w``: the same with one worker per side;
- ``enc-tcp``, ``enc-udp``, ``enc-icmp``: the encrypted tunnel (``-k``/``-P``: the WireGuard
  engine) over each transport; over TCP between simpletun peers super-packets travel whole,
  over UDP it is plain WireGuard; ``enc-udp-2w`` is the same with two worker processes per
  side (``--workers 2``);
- ``native-loss``, ``enc-tcp-loss``, ``enc-udp-loss``, ``enc-icmp-loss``: the same with 2% of
  the underlay's tunnel packets dropped (nft ``numgen random``), where TCP-in-TCP suffers and
  UDP should not;
- ``wg``: WireGuard, simpletun's engine (``simpletun-wg``) on both sides;
- ``wireguard-go``: WireGuard, Debian's ``wireguard-go`` on both sides (the reference);
- further tunnel modes as they exist.

The WireGuard modes run each implementation in the foreground (``-f``) on the same veth
underlay as ``bare``, configured with ``wg`` (:class:`simpletun.lab.wghost.WgInterface`),
MTU 1420 (wireguard-go's default), one handshake made before the pings. In every mode one
ping goes first, not measured (ARP, a handshake). A mode whose tool is
missing (``wireguard-go``, or ``wg`` for both) is skipped with a one-line reason, in the
table and in the JSON's ``skipped``, and the others still run.

For each: ping RTT p50/p99, TCP throughput with each stream count, CPU seconds per GB moved
(by the tunnel processes and their workers), the largest peak RSS of any of them, and each
figure's ratio to ``bare``.
Throughput comes from iperf3 when it is installed, else from the built-in sender/receiver
(:mod:`simpletun.lab.flow`); the output says which. A run that moved nothing (every SYN of
a stream lost on a lossy link, say) is reported as such: its throughput is None (JSON
null, "moved nothing" in the table) with a note, never a made-up number.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from ..device.holders import parent_pid
from ..errors import SimpletunError
from ..tunnel import breakdown as passes
from .netns import Lab, Namespace
from .testbed import OVERLAY, Testbed, Watched
from .wghost import WgInterface, WgLabError, implementation_cmd, wg_exe

#: mode name -> extra tunnel arguments (server, client); None for the bare link
MODES: dict[str, tuple[list[str], list[str]] | None] = {
    "bare": None,
    "classic": (["--classic"], ["--classic"]),
    "native": ([], []),
    "native-1w": (["--workers", "1"], ["--workers", "1"]),
    "enc-tcp": (["-t", "tcp"], ["-t", "tcp"]),
    "enc-udp": (["-t", "udp"], ["-t", "udp"]),
    "enc-udp-2w": (["-t", "udp", "--workers", "2"], ["-t", "udp", "--workers", "2"]),
    "enc-icmp": (["-t", "icmp"], ["-t", "icmp"]),
    "native-loss": ([], []),
    "enc-tcp-loss": (["-t", "tcp"], ["-t", "tcp"]),
    "enc-udp-loss": (["-t", "udp"], ["-t", "udp"]),
    "enc-icmp-loss": (["-t", "icmp"], ["-t", "icmp"]),
}
#: WireGuard modes -> the implementation run on both sides (wghost's names)
WG_MODES: dict[str, str] = {
    "wg": "simpletun-wg",
    "wireguard-go": "wireguard-go",
}
#: every mode, in the order a full run measures them
MODE_NAMES: tuple[str, ...] = (*MODES, *WG_MODES)
#: the WireGuard modes' listen port, on both sides
WG_PORT = 51820
#: modes measured with this percentage of the underlay's tunnel packets dropped at random
#: (nft, in both namespaces, each direction)
LOSS_PERCENT = 2
PORT = 5201
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ModeResult:
    mode: str
    rtt_p50_ms: float
    rtt_p99_ms: float
    throughput_mbps: dict[str, float | None]  # streams -> megabits/s; None: moved nothing
    cpu_s_per_gb: float | None  # tunnel processes; None for bare or when nothing moved
    peak_rss_mb: float | None  # the largest of the tunnel processes (workers included)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what went wrong, e.g. "moved nothing"
    #: ``--breakdown``: each side's per-pass medians during the pings ({"server": ..,
    #: "client": ..}, see :mod:`simpletun.tunnel.breakdown`); empty when not asked for
    breakdown: dict[str, Any] = field(default_factory=dict)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and all their descendants (the tunnel's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_pid(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pick_tool(wanted: str) -> str:
    if wanted == "auto":
        return "iperf3" if shutil.which("iperf3") else "builtin"
    if wanted == "iperf3" and not shutil.which("iperf3"):
        raise SimpletunError("iperf3 is not installed: apt-get install iperf3, or use "
                             "--tool builtin")
    return wanted


def rate_mbps(nbytes: int, seconds: float) -> float | None:
    """Megabits per second, or None for a run that moved nothing (or took no time)."""
    if nbytes <= 0 or seconds <= 0:
        return None
    return nbytes * 8 / seconds / 1e6


def throughput(server: Namespace, client: Namespace, address: str, streams: int,
               seconds: float, tool: str) -> tuple[float | None, int]:
    """Megabits per second from client to server (None if nothing moved), and the bytes
    moved."""
    if tool == "iperf3":
        srv = server.popen(["iperf3", "-s", "-1", "-B", address, "-p", str(PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # iperf3 takes whole seconds (its -t 0.5 is 0: forever)
        whole = str(max(1, round(seconds)))
        try:
            for _ in range(50):
                done = client.run(["iperf3", "-c", address, "-p", str(PORT), "-t",
                                   whole, "-P", str(streams), "-J"],
                                  timeout=seconds + 60)
                if done.returncode == 0:
                    break
                time.sleep(0.1)  # the server was not listening yet
            else:
                raise SimpletunError(f"iperf3 failed: {done.stdout[-300:]} {done.stderr}")
            end = json.loads(done.stdout)["end"]["sum_received"]
            nbytes = int(end["bytes"])
            return (end["bits_per_second"] / 1e6 if nbytes else None), nbytes
        finally:  # kill and reap: a server still waiting must not turn an error into a
            if srv.poll() is None:  # traceback (TimeoutExpired), nor hold the port
                srv.kill()
            srv.wait()
    sink = server.popen([sys.executable, "-m", "simpletun.lab.flow", "sink", address, str(PORT),
                         str(streams)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        text=True)
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise SimpletunError("the built-in receiver did not start")
        sent = client.run([sys.executable, "-m", "simpletun.lab.flow", "blast", address,
                           str(PORT), str(streams), str(seconds)], timeout=seconds + 60)
        said = sent.stdout.split()
        if sent.returncode != 0 or said[:1] != ["connected"]:
            raise SimpletunError("the built-in sender failed: "
                                 + (sent.stderr.strip().splitlines() or ["no output"])[-1])
        # the receiver waits for as many connections as the sender made, no more
        out, _ = sink.communicate(input=f"{said[1]}\n", timeout=60)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    total, elapsed = out.split()
    return rate_mbps(int(total), float(elapsed)), int(total)


def lossy(ns: Namespace, port: int, percent: int, *, icmp_on: str | None = None) -> None:
    """Drop ``percent`` % of the packets to and from ``port`` arriving in ``ns`` (nft); with
    ``icmp_on`` (an interface: the underlay) also of the echo requests and replies arriving
    there, which is where the ICMP transport's packets ride."""
    icmp = (f"  iifname \"{icmp_on}\" icmp type {{ echo-request, echo-reply }} "
            f"numgen random mod 100 < {percent} counter drop\n"
            f"  iifname \"{icmp_on}\" icmpv6 type {{ echo-request, echo-reply }} "
            f"numgen random mod 100 < {percent} counter drop\n") if icmp_on else ""
    rules = (f"table inet simpletun_loss {{\n chain input {{\n"
             f"  type filter hook input priority 0;\n"
             f"  th dport {port} numgen random mod 100 < {percent} counter drop\n"
             f"  th sport {port} numgen random mod 100 < {percent} counter drop\n"
             f"{icmp} }}\n}}\n")
    done = ns.run(["nft", "-f", "-"], input=rules)
    if done.returncode != 0:
        raise SimpletunError(f"cannot set up packet loss with nft ({done.stderr.strip()}): "
                             "apt-get install nftables, or leave out the -loss modes")


def dropped(ns: Namespace) -> int:
    """Packets the rules of :func:`lossy` dropped in ``ns``."""
    out = ns.run(["nft", "list", "table", "inet", "simpletun_loss"]).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+) ", out))


def skip_reason(mode: str) -> str | None:
    """Why ``mode`` cannot run here (one line: what is missing and how to get it), or None
    if it can."""
    impl = WG_MODES.get(mode)
    if impl is None:
        return None
    try:
        wg_exe()
        implementation_cmd(impl)
    except WgLabError as exc:
        return str(exc)
    return None


#: modes whose tunnel processes run the WireGuard engine in one process per side: the ones
#: --breakdown can time (with workers a ping may pass through any of them)
ENGINE_MODES = ("enc-tcp", "enc-udp", "enc-icmp", "enc-tcp-loss", "enc-udp-loss",
                "enc-icmp-loss", "wg")


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Any:
    """``name=value`` in the environment of processes started inside (None: as it was)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _collect(pids: Sequence[int], paths: Sequence[str]) -> dict[str, Any]:
    """Ask the tunnel processes for their per-pass medians (SIGUSR2) and read them."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    got: dict[str, Any] = {}
    for who, path in zip(("server", "client"), paths, strict=True):
        for _ in range(100):
            try:
                with open(path) as f:
                    got[who] = json.load(f)
                break
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
    return got


def wg_tunnel(bed: Testbed, impl: str, stack: ExitStack,
              breakdown: Sequence[str] = ()) -> list[int]:
    """WireGuard between the testbed's hosts on their veth underlay: ``impl`` in the
    foreground on each side (stopped, socket removed, when ``stack`` closes), peers of each
    other, the testbed's overlay addresses, the handshake made. Returns the two daemons'
    pids (the processes started with ``-f``)."""
    ends = []
    for i, ns in enumerate((bed.server, bed.client)):
        try:
            with _environment(passes.ENV, breakdown[i] if breakdown else None):
                ends.append(stack.enter_context(WgInterface(ns, impl, listen_port=WG_PORT)))
        except WgLabError as exc:  # one line: what failed, and the last thing it said
            said = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise SimpletunError(" ".join(said[:1] + said[1:][-1:])) from None
    server, client = ends
    for wg, overlay in ((server, OVERLAY[0]), (client, OVERLAY[1])):
        wg.address(overlay)
        wg.up()
    server.add_peer(client, allowed_ips=[f"{bed.client_overlay}/32"],
                    endpoint=f"{bed.client_underlay}:{WG_PORT}")
    client.add_peer(server, allowed_ips=[f"{bed.server_overlay}/32"],
                    endpoint=f"{bed.server_underlay}:{WG_PORT}")
    from ..device import link

    for wg in ends:
        link.wait_usable(wg.name, netns=wg.ns.name)
    # the first packet waits for the handshake: not one of the measured pings
    first = bed.client.ping(bed.server_overlay, count=1, deadline=10)
    if not first.ok:
        said = [(w.log().strip().splitlines() or ["nothing"])[-1][-160:] for w in ends]
        raise SimpletunError(f"{impl}: no ping over the tunnel after 10 s (no handshake?); "
                             f"last said: {said[0]!r} (server), {said[1]!r} (client)")
    pids = []
    for wg in ends:
        assert wg.proc is not None
        pids.append(wg.proc.pid)
    return pids


def measure_mode(mode: str, *, streams: Sequence[int], seconds: float, pings: int,
                 tool: str, progress: Callable[[str], None],
                 breakdown: bool = False) -> ModeResult:
    extra = MODES.get(mode)
    with Lab("bench") as lab, ExitStack() as stack:
        bed = Testbed(lab, ipv6_overlay=False, keys=mode.startswith("enc-"))
        procs: list[Watched] = []
        pids: list[int] = []
        timed = [os.path.join(lab.directory, f"passes-{who}.json") for who in
                 ("server", "client")] if breakdown and mode in ENGINE_MODES else []
        if mode in WG_MODES:
            progress(f"{mode}: starting {WG_MODES[mode]} on both sides")
            pids = wg_tunnel(bed, WG_MODES[mode], stack, timed)
            target = bed.server_overlay
        elif extra is None:
            target = bed.server_underlay
        else:
            with _environment(passes.ENV, timed[0] if timed else None):
                bed.start_server(*extra[0])
            with _environment(passes.ENV, timed[1] if timed else None):
                bed.start_client(*extra[1])
            bed.wait_ready()
            if mode.endswith("-loss"):
                for ns in (bed.server, bed.client):
                    lossy(ns, bed.port, LOSS_PERCENT, icmp_on="veth0")
            assert bed.server_proc is not None and bed.client_proc is not None
            procs = [bed.server_proc, bed.client_proc]
            pids = [w.proc.pid for w in procs]
            target = bed.server_overlay
        progress(f"{mode}: ping x{pings}")
        # one ping not measured: the first packet waits for ARP (a lost ARP request costs
        # the next pings a second each: p99 1000 ms on the bare link, seen once)
        bed.client.ping(target, count=1, deadline=3)
        p = bed.client.ping(target, count=pings, interval=0.01, deadline=pings * 0.05 + 10)
        if not p.ok and not (mode.endswith("-loss") and p.received > pings // 2):
            raise SimpletunError(f"{mode}: ping failed ({p.received}/{p.sent})")
        timings = _collect(pids, timed) if timed else {}
        results: dict[str, float | None] = {}
        notes: list[str] = []
        moved = 0
        tree = _tree(pids)
        cpu_before = sum(_cpu_seconds(pid) for pid in tree)
        for n in streams:
            progress(f"{mode}: TCP, {n} stream{'s' if n > 1 else ''}, {seconds:g} s ({tool})")
            mbps, nbytes = throughput(bed.server, bed.client, target, n, seconds, tool)
            results[str(n)] = mbps
            moved += nbytes
            if mbps is None:
                notes.append(f"{n} stream{'s' if n > 1 else ''}: moved nothing in {seconds:g} s"
                             + (" (no connection got through in time)" if not nbytes else ""))
        cpu = sum(_cpu_seconds(pid) for pid in tree) - cpu_before
        rss = max((_peak_rss_mb(pid) for pid in tree), default=None)
        for w in procs:
            w.stop()
    return ModeResult(
        mode=mode,
        rtt_p50_ms=statistics.median(p.rtts_ms),
        rtt_p99_ms=_percentile(p.rtts_ms, 0.99),
        throughput_mbps=results,
        cpu_s_per_gb=cpu / (moved / 1e9) if pids and moved else None,
        peak_rss_mb=rss,
        notes=notes,
        breakdown=timings,
    )


def add_ratios(results: list[ModeResult]) -> None:
    bare = next((r for r in results if r.mode == "bare"), None)
    if bare is None:
        return
    for r in results:
        r.ratios = {"rtt_p50": r.rtt_p50_ms / bare.rtt_p50_ms,
                    "rtt_p99": r.rtt_p99_ms / bare.rtt_p99_ms,
                    "rtt_p50_added_us": (r.rtt_p50_ms - bare.rtt_p50_ms) * 1000}
        for n, mbps in r.throughput_mbps.items():
            base = bare.throughput_mbps.get(n)
            if base and mbps is not None:
                r.ratios[f"throughput_{n}"] = mbps / base


def table(results: list[ModeResult], tool: str, seconds: float,
          skipped: Sequence[tuple[str, str]] = ()) -> str:
    """The results as a text table, then a row for each (mode, reason) ``skipped``."""
    streams = list(results[0].throughput_mbps) if results else []
    w = max([4, *(len(r.mode) for r in results), *(len(m) for m, _ in skipped)])
    head = f"{'mode':<{w}} {'rtt p50':>9} {'p99':>9} {'added':>8}"
    for n in streams:
        head += f" {f'{n} stream Mbit/s':>18} {'of bare':>8}"
    head += f" {'CPU s/GB':>9} {'peak RSS':>9}"
    lines = [head]
    for r in results:
        line = (f"{r.mode:<{w}} {r.rtt_p50_ms * 1000:7.0f}us {r.rtt_p99_ms * 1000:7.0f}us "
                f"{r.ratios.get('rtt_p50_added_us', 0):6.0f}us")
        for n in streams:
            ratio = r.ratios.get(f"throughput_{n}")
            mbps = r.throughput_mbps[n]
            shown = f"{mbps:.0f}" if mbps is not None else "moved nothing"
            line += f" {shown:>18} {f'{ratio:.1%}' if ratio else '-':>8}"
        cpu = f"{r.cpu_s_per_gb:.2f}" if r.cpu_s_per_gb is not None else "-"
        rss = f"{r.peak_rss_mb:.1f} MB" if r.peak_rss_mb is not None else "-"
        line += f" {cpu:>9} {rss:>9}"
        lines.append(line)
    lines.extend(f"{mode:<{w}} skipped: {reason}" for mode, reason in skipped)
    lines.extend(f"note: {r.mode}: {note}" for r in results for note in r.notes)
    bare = next((r for r in results if r.mode == "bare"), None)
    for r in results:
        if r.breakdown:
            least = min((m.get("passes", 0) for side in r.breakdown.values()
                         for m in side.values()), default=0)
            lines.append(f"{r.mode}: one ping's round trip, pass by pass (medians of "
                         f"{least:.0f} passes or more)")
            lines.extend(passes.summarise(
                r.breakdown.get("server", {}), r.breakdown.get("client", {}),
                r.ratios.get("rtt_p50_added_us", 0.0) if bare else 0.0,
                bare.rtt_p50_ms * 1000 if bare else r.rtt_p50_ms * 1000))
    lines.append(f"throughput by {tool}, {seconds:g} s per run; 'added' is the RTT p50 over "
                 "the bare link; CPU: all tunnel processes; RSS: the largest one")
    return "\n".join(lines)


def run(*, modes: Sequence[str], streams: Sequence[int], seconds: float, pings: int,
        tool: str, progress: Callable[[str], None], breakdown: bool = False) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise SimpletunError("the benchmark needs root (network namespaces): run it with sudo")
    unknown = [m for m in modes if m not in MODE_NAMES]
    if unknown:
        raise SimpletunError(f"unknown mode {unknown[0]!r}: choose from "
                             f"{', '.join(MODE_NAMES)}")
    tool = pick_tool(tool)
    results: list[ModeResult] = []
    skipped: list[tuple[str, str]] = []
    for m in modes:
        reason = skip_reason(m)
        if reason is not None:
            progress(f"{m}: skipped: {reason}")
            skipped.append((m, reason))
            continue
        results.append(measure_mode(m, streams=streams, seconds=seconds, pings=pings,
                                    tool=tool, progress=progress, breakdown=breakdown))
    add_ratios(results)
    return {"tool": tool, "seconds": seconds, "streams": list(streams),
            "cpus": os.cpu_count(), "kernel": os.uname().release,
            "results": [asdict(r) for r in results],
            "skipped": [{"mode": m, "reason": reason} for m, reason in skipped],
            "table": table(results, tool, seconds, skipped)}
