"""Undoing what ``simpletun up`` recorded in its state file (:mod:`.state`): each change
by its kind, last first, one that is not there (any more) no error; and the processes it
started, stopped (SIGTERM, then SIGKILL after a while)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from ..device import isolate, link, policy, routing, tuntap
from ..errors import SimpletunError
from . import dns, hooks
from .state import Process, State

STOP_WAIT = 15.0  # seconds the engine gets to end before SIGKILL

Log = Callable[[str], None]


def undo(change: dict[str, Any]) -> None:
    """Undo one recorded change (not made, or undone already: nothing to do)."""
    kind = change["kind"]
    if kind == "device":
        name = change["name"]
        with contextlib.suppress(SimpletunError):
            if isolate.in_child(lambda: link.exists(name)):
                tuntap.delete(name)
    elif kind == "rule":
        rule = policy.Rule(**change["rule"])
        isolate.in_child(lambda: policy.remove_rule(rule))
    elif kind == "host-route":
        route = routing.HostRoute(**change["route"])
        isolate.in_child(lambda: routing.forget(route))
    elif kind == "nft":
        subprocess.run(["nft", "delete", "table", *change["table"].split()],
                       capture_output=True, check=False, preexec_fn=hooks.unblock)
    elif kind == "dns":
        dns.unset(change["record"])
    elif kind == "file":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(change["path"])
    elif kind == "icmp-echo":
        from ..transport import icmp

        icmp.put_back(change["state"])


def undo_all(st: State, out: Log) -> None:
    """Every change of ``st`` undone, last first; one that fails is said, the rest go on."""
    for change in list(reversed(st.changes)):
        try:
            undo(change)
        except (SimpletunError, OSError) as exc:
            out(f"warning: could not undo {change['kind']} ({exc}): undo it by hand")
        st.undone(change)


def stop_process(proc: Process | None, wait: float = STOP_WAIT) -> None:
    if proc is None or not proc.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while proc.alive() and time.monotonic() < deadline:
        reap(proc.pid)
        time.sleep(0.02)
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    reap(proc.pid)


def reap(pid: int) -> int | None:
    """The exit status of our child ``pid`` if it ended (None: running, or not ours)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def finish(st: State, out: Log) -> None:
    """What a supervisor that died would have done: PreDown, the engine stopped, every
    change undone, PostDown, the state removed."""
    hooks.run("PreDown", st.pre_down, st.name, out, strict=False)
    stop_process(st.engine)
    undo_all(st, out)
    hooks.run("PostDown", st.post_down, st.name, out, strict=False)
    st.remove()



__all__ = ["finish", "reap", "stop_process", "undo", "undo_all"]
