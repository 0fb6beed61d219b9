"""quiet_kernel notes the kernel's echo settings in its state file before it changes the
first one: a server killed (SIGKILL) right after the change leaves the original value
behind for the next run to put back, not the 1 it wrote."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from simpletun.transport import icmp


@pytest.fixture
def sysctls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[int, Path]:
    """Stand-ins for the two echo switches, both on (0: the kernel answers pings)."""
    paths = {4: tmp_path / "icmp_echo_ignore_all", 6: tmp_path / "echo_ignore_all"}
    for path in paths.values():
        path.write_text("0\n")
    monkeypatch.setattr(icmp, "ECHO_SYSCTL", {f: str(p) for f, p in paths.items()})
    return paths


def _killed_after_first_change(state_dir: Path, paths: dict[int, Path]) -> None:
    """Run quiet_kernel in a child that is SIGKILLed as soon as a switch is written."""
    pid = os.fork()
    if pid == 0:
        real_open = open

        def dying_open(path: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
            f = real_open(path, mode, *args, **kw)
            if "w" in mode and str(path) in icmp.ECHO_SYSCTL.values():
                f.write("1")
                f.close()
                os.kill(os.getpid(), signal.SIGKILL)
            return f

        icmp.open = dying_open
        try:
            icmp.quiet_kernel(state_dir=str(state_dir))
        finally:
            os._exit(1)  # never reached with the fix or without: the kill comes first
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_kill_right_after_the_first_change_loses_nothing(tmp_path: Path,
                                                           sysctls: dict[int, Path]) -> None:
    state_dir = tmp_path / "run"
    _killed_after_first_change(state_dir, sysctls)
    assert sysctls[4].read_text().strip() == "1"  # changed, never put back
    (state,) = state_dir.iterdir()
    assert json.loads(state.read_text()) == {str(p): "0" for p in sysctls.values()}

    was_on, restore = icmp.quiet_kernel(state_dir=str(state_dir))  # the next run
    assert was_on == frozenset({4, 6})  # it answers pings as the host did
    assert all(p.read_text().strip() == "1" for p in sysctls.values())
    restore()
    assert all(p.read_text().strip() == "0" for p in sysctls.values())
    assert list(state_dir.iterdir()) == []


def test_settings_already_off_are_left_off(tmp_path: Path, sysctls: dict[int, Path]) -> None:
    sysctls[6].write_text("1\n")
    was_on, restore = icmp.quiet_kernel(state_dir=str(tmp_path))
    assert was_on == frozenset({4})
    restore()
    assert sysctls[4].read_text().strip() == "0" and sysctls[6].read_text().strip() == "1"


def test_a_killed_server_s_note_is_put_back_without_a_next_run(
        tmp_path: Path, sysctls: dict[int, Path]) -> None:
    """``simpletun down`` after the tunnel was killed: the note, not the switches as the
    kill left them, says what to put back (icmp.put_back); then the note is gone."""
    state_dir = tmp_path / "run"
    _killed_after_first_change(state_dir, sysctls)
    assert sysctls[4].read_text().strip() == "1"
    icmp.put_back(icmp.echo_state(str(state_dir)))
    assert all(p.read_text().strip() == "0" for p in sysctls.values())
    assert list(state_dir.iterdir()) == []
    icmp.put_back(icmp.echo_state(str(state_dir)))  # no note: nothing to do
