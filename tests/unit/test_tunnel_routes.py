"""A stop signal while the tunnel adds its routes (in a forked child) must not lose what was
added: the stop is held until the result is recorded, then delivered, and the routes are
removed. (Without it, the KeyboardInterrupt cut the parent's wait for the child short: the
child went on to add the host route and the routes, and nothing removed them.)"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable, Iterator

import pytest

from simpletun.cli import tunnel
from simpletun.cli._common import sigterm_as_interrupt
from simpletun.device import routing
from simpletun.signals import STOP_SIGNALS

HOST = routing.HostRoute("203.0.113.1", "198.51.100.1", "eth0", 2)
HALVES = list(routing.HALVES[4])


@pytest.fixture
def stops_interrupt() -> Iterator[None]:
    """The tunnel's stop handlers, for this test only."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    sigterm_as_interrupt()
    try:
        yield
    finally:
        for signo, handler in saved.items():
            signal.signal(signo, handler)


def alone(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a forked child, where this is the only thread: the tunnel holds stop
    signals in its one thread, and a process with others (pytest-xdist's worker) would have
    them delivered there meanwhile. A failure inside fails here."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "failed in the child (above)"


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_while_routes_are_added_still_removes_them(
        monkeypatch: pytest.MonkeyPatch, stops_interrupt: None, signo: int) -> None:
    alone(lambda: _stop_while_routes_are_added(monkeypatch, signo))


def _stop_while_routes_are_added(monkeypatch: pytest.MonkeyPatch, signo: int) -> None:
    def configure(*_args: object, **_kw: object) -> tunnel.Configured:
        os.kill(os.getppid(), signo)  # the stop comes while the child is at work
        return tunnel.Configured(1500, True, True, [HOST], HALVES)

    monkeypatch.setattr(tunnel, "_configure", configure)
    configured: list[tunnel.Configured] = []
    with pytest.raises(KeyboardInterrupt):
        tunnel._set_up("tun0", [], None, HALVES, ("203.0.113.1",), None, configured)
    assert configured and configured[0].kept == [HOST] and configured[0].routed == HALVES

    removed: list[tuple[str, list[object]]] = []

    def unroute(name: str, done: tunnel.Configured) -> None:
        removed.append((name, [*done.routed, *done.kept]))

    monkeypatch.setattr(tunnel, "_unroute", unroute)
    # in a forked child: what it does is seen here only through a pipe
    monkeypatch.setattr(tunnel.isolate, "in_child", lambda fn: fn())
    tunnel._tear_down("tun0", configured)
    assert removed == [("tun0", [*HALVES, HOST])]


def test_nothing_to_remove_forks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_fn: object) -> None:
        raise AssertionError("no child needed")

    monkeypatch.setattr(tunnel.isolate, "in_child", fail)
    tunnel._tear_down("tun0", [])
    tunnel._tear_down("tun0", [tunnel.Configured(1500, True, True)])


def test_routes_are_removed_before_the_host_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other way round, the server's packets would go into the tunnel meanwhile."""
    order: list[str] = []
    monkeypatch.setattr(routing, "remove_routes",
                        lambda nets, name: order.append(f"{name}: {', '.join(map(str, nets))}"))
    monkeypatch.setattr(routing, "forget", lambda route: order.append(str(route)))
    tunnel._unroute("tun0", tunnel.Configured(1500, True, True, [HOST], HALVES))
    assert order == ["tun0: 0.0.0.0/1, 128.0.0.0/1", str(HOST)]
