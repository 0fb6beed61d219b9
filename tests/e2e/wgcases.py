"""Shared pieces of the WireGuard end-to-end tests (interop, hub, wg-quick, attacks): build
a pair with any two implementations, check pings both ways, move data, read counters, and
check that nothing was left behind. Failures carry every implementation's log.

    from .wgcases import IMPLS, assert_ping_both_ways, wg_pair

    @pytest.mark.parametrize("left,right", [("wireguard-go", "simpletun-wg"), ...])
    def test_x(lab, left, right):
        with wg_pair(lab, left, right, underlay=6) as p:
            assert_ping_both_ways(p)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from simpletun.lab import wghost
from simpletun.lab.netns import Lab
from simpletun.lab.wghost import DumpPeer, WgHost, WgPair

IMPLS = wghost.IMPLEMENTATIONS
MB = wghost.MB
UNDERLAYS = [4, 6]
#: every ordered pair of implementations (left, right)
COMBOS = [(a, b) for a in IMPLS for b in IMPLS]


@contextmanager
def wg_pair(lab: Lab, left: str = "wireguard-go", right: str = "wireguard-go",
            **kwargs: Any) -> Iterator[WgPair]:
    """:func:`simpletun.lab.wghost.pair` that stops its interfaces on the way out and, if
    the body fails, adds every implementation's output to the failure."""
    p = wghost.pair(lab, left, right, **kwargs)
    try:
        yield p
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{p.logs()}") from None
    except Exception:
        print(p.logs())  # shown by pytest with the traceback
        raise
    finally:
        p.close()


def overlay(host: WgHost, family: int) -> str:
    return host.overlay6 if family == 6 else host.overlay4


def assert_ping(src: WgHost, dst: WgHost, family: int = 4, *, count: int = 3,
                interval: float = 0.05) -> None:
    target = overlay(dst, family)
    result = src.ns.ping(target, count=count, interval=interval, deadline=5)
    assert result.ok, f"{src.name} -> {target}:\n{result.output}"


def assert_ping_both_ways(p: WgPair, families: Sequence[int] = (4, 6), *,
                          count: int = 3) -> None:
    """left -> right and right -> left over each overlay family; every ping answered.
    The side that knows its peer's endpoint pings first (with ``endpoints="right"`` the
    left cannot send until the right has shaken hands)."""
    first, second = (p.right, p.left) if p.endpoints == "right" else (p.left, p.right)
    for family in families:
        assert_ping(first, second, family, count=count)
        assert_ping(second, first, family, count=count)


def assert_transfer(p: WgPair, sender: WgHost, receiver: WgHost, size: int,
                    family: int = 4) -> None:
    """``size`` bytes over the tunnel, sha256 checked on both ends."""
    moved, _digest, _seconds = p.transfer(sender, receiver, size, family=family)
    assert moved == size


def peer_of(host: WgHost, other: WgHost) -> DumpPeer:
    """What ``host``'s interface says of its peer ``other`` (``wg show dump``)."""
    return host.iface.show_dump().peer(other.iface.public_key)


def counters(p: WgPair) -> tuple[DumpPeer, DumpPeer]:
    """(left's view of right, right's view of left)."""
    return peer_of(p.left, p.right), peer_of(p.right, p.left)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 5.0,
               every: float = 0.05) -> None:
    """Poll ``check`` until it holds; AssertionError naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g} s")
        time.sleep(every)


def processes_with(text: str) -> list[int]:
    """PIDs whose command line holds ``text`` (an interface name: its implementation)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if text.encode() in argv:
            found.append(int(entry))
    return found


def assert_nothing_left(lab_prefix: str, names: Sequence[str]) -> None:
    """No namespace of the lab, no UAPI socket of ours, no process on one of ``names``."""
    from simpletun.device import link

    spaces = [n for n in os.listdir(link.NETNS_DIR) if n.startswith(lab_prefix + "-")] \
        if os.path.isdir(link.NETNS_DIR) else []
    assert not spaces, f"namespaces left: {spaces}"
    assert not wghost.our_sockets(), f"UAPI sockets left: {wghost.our_sockets()}"
    procs = {name: pids for name in names if (pids := processes_with(name))}
    assert not procs, f"implementations still running: {procs}"


class _Transcribed(Protocol):
    transcript: list[str]

    def close(self) -> None: ...


R = TypeVar("R", bound=_Transcribed)


@contextmanager
def transcribed(runner: R) -> Iterator[R]:
    """``runner`` (a config file and the commands run on it) for a ``with`` block: an
    assertion that fails inside carries the commands' transcript, and ``close()`` takes
    down what is left, whatever happened."""
    try:
        yield runner
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{''.join(runner.transcript)}") from None
    finally:
        runner.close()

