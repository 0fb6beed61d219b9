"""Where one pass of a tunnel's loop spends its time: the per-pass latency breakdown that
``simpletun bench --breakdown`` prints.

A pass is what the loop does for one wake-up of one fd: **out** (device -> network: the
device read, the Python work of routing and sealing, the socket send) or **in** (network ->
device: the socket receive, opening, the device write). :func:`install` wraps the engine's
pass methods and the system calls they make (its device side's reads and writes, its link's
receives and sends) with clocks, only when ``SIMPLETUN_BREAKDOWN=FILE`` is in the tunnel's
environment: without it nothing is wrapped and the hot path is untouched. With it each
wrapper adds a clock read (about 0.1 us each) to what it measures.

Per pass it records the whole pass and the time inside system calls (the reads that only
learn EAGAIN included, and counted); Python is the rest. On SIGUSR2, and when the tunnel
ends, :meth:`Recorder.dump` writes the samples' medians as JSON to FILE (the bench signals
after its pings, before the throughput runs add passes of another kind); :func:`summarise` turns
the two sides' files into the bench's table, with what remains of the round trip (the
kernel's work and the processes' wake-ups) beside them.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from array import array
from collections.abc import Callable
from typing import Any

ENV = "SIMPLETUN_BREAKDOWN"
KEEP = 200_000  # samples per direction at most (memory bounded on a long run)
_clock = time.perf_counter_ns


class Recorder:
    """Samples of passes: for each direction, per pass the total, the time in system calls,
    the number of system calls and of those that found nothing (EAGAIN), in ns."""

    def __init__(self) -> None:
        self.total: dict[str, array[int]] = {"out": array("q"), "in": array("q")}
        self.syscall: dict[str, array[int]] = {"out": array("q"), "in": array("q")}
        self.calls: dict[str, array[int]] = {"out": array("q"), "in": array("q")}
        self.empty: dict[str, array[int]] = {"out": array("q"), "in": array("q")}
        self._sys = 0  # ns in system calls during the current pass
        self._calls = 0
        self._empty = 0

    def pass_wrapper(self, direction: str, fn: Callable[[], None]) -> Callable[[], None]:
        total, syscall = self.total[direction], self.syscall[direction]
        calls, empty = self.calls[direction], self.empty[direction]

        def timed() -> None:
            self._sys = self._calls = self._empty = 0
            start = _clock()
            fn()
            took = _clock() - start
            if len(total) < KEEP and self._calls:  # a pass that did no I/O is not one
                total.append(took)
                syscall.append(self._sys)
                calls.append(self._calls)
                empty.append(self._empty)
        return timed

    def syscall_wrapper(self, fn: Callable[..., Any],
                        nothing: Callable[[Any], bool] = lambda r: False) -> Callable[..., Any]:
        """``fn`` timed as a system call; ``nothing(result)`` says a call found nothing."""
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = _clock()
            try:
                result = fn(*args, **kwargs)
            except BlockingIOError:
                self._sys += _clock() - start
                self._calls += 1
                self._empty += 1
                raise
            self._sys += _clock() - start
            self._calls += 1
            if nothing(result):
                self._empty += 1
            return result
        return timed

    def medians(self) -> dict[str, dict[str, float]]:
        """Per direction: passes, and medians of the whole pass, the system calls and the
        Python work in microseconds, and system calls per pass."""
        out: dict[str, dict[str, float]] = {}
        for d in ("out", "in"):
            total, sys_ = self.total[d], self.syscall[d]
            if not total:
                continue
            out[d] = {
                "passes": len(total),
                "pass_us": statistics.median(total) / 1000,
                "syscalls_us": statistics.median(sys_) / 1000,
                "python_us": statistics.median(t - s for t, s in zip(total, sys_,
                                                                     strict=True)) / 1000,
                "syscalls": statistics.median(self.calls[d]),
                "empty_syscalls": statistics.median(self.empty[d]),
            }
        return out

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.medians(), f)


def install(engine: Any) -> Recorder | None:
    """Wrap ``engine`` (a WireGuard :class:`~simpletun.wireguard.engine.Engine`) when
    ``SIMPLETUN_BREAKDOWN`` is set; returns the recorder (None when not asked for). The
    engine dumps it when it closes."""
    if not os.environ.get(ENV):
        return None
    rec = Recorder()
    side = engine.side
    side.read_batch = _reads(rec, side.read_batch)
    side._write = rec.syscall_wrapper(side._write)
    wrap_link(rec, engine.link)
    engine._from_device = rec.pass_wrapper("out", engine._from_device)
    engine._from_network = rec.pass_wrapper("in", engine._from_network)
    path = os.environ[ENV]
    signal.signal(signal.SIGUSR2, lambda _s, _f: rec.dump(path))
    return rec


def wrap_link(rec: Recorder | None, link: Any) -> None:
    """Time ``link``'s receives and sends (again when the engine binds a new link)."""
    if rec is None:
        return
    link.receive = rec.syscall_wrapper(link.receive, lambda r: r is None)
    link.send = rec.syscall_wrapper(link.send)
    link.send_batch = rec.syscall_wrapper(link.send_batch)


def _reads(rec: Recorder, read_batch: Callable[..., int]) -> Callable[..., int]:
    """The device side's batch read: one read per packet and one more that finds nothing
    (the batch ends at EAGAIN) unless the batch filled."""
    def timed(views: Any, *args: Any, **kwargs: Any) -> int:
        start = _clock()
        n = read_batch(views, *args, **kwargs)
        rec._sys += _clock() - start
        full = n >= min(len(views), kwargs.get("limit", len(views)))
        rec._calls += n + (0 if full else 1)
        rec._empty += 0 if full else 1
        return n
    return timed


def dump(rec: Recorder | None) -> None:
    path = os.environ.get(ENV)
    if rec is not None and path:
        rec.dump(path)


def summarise(server: dict[str, Any], client: dict[str, Any], rtt_added_us: float,
              bare_us: float) -> list[str]:
    """Lines for the bench: each side's passes for one ping's round trip (client out,
    server in, server out, client in), and the rest of the round trip."""
    order = [("client", "out", client), ("server", "in", server),
             ("server", "out", server), ("client", "in", client)]
    lines = [f"  {'pass':<24} {'whole':>8} {'syscalls':>9} {'python':>8} {'calls':>6} "
             f"{'EAGAIN':>7}"]
    inside = 0.0
    for who, d, data in order:
        m = data.get(d)
        label = f"{who} {'device -> socket' if d == 'out' else 'socket -> device'}"
        if not m:
            lines.append(f"  {label:<24} (no passes recorded)")
            continue
        inside += m["pass_us"]
        lines.append(f"  {label:<24} {m['pass_us']:6.1f}us {m['syscalls_us']:7.1f}us "
                     f"{m['python_us']:6.1f}us {m['syscalls']:6.0f} {m['empty_syscalls']:7.0f}")
    rest = rtt_added_us + bare_us - inside
    lines.append(f"  {'in the four passes':<24} {inside:6.1f}us; the rest of the round trip "
                 f"({rest:.0f}us of {rtt_added_us + bare_us:.0f}us) is the kernel's work and "
                 "the processes' wake-ups")
    return lines


__all__ = ["ENV", "Recorder", "dump", "install", "summarise", "wrap_link"]
