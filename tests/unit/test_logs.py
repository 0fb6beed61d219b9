"""service.logs: levels, the three forms (terminal/pipe with ISO 8601 times, journald with
syslog priorities and no time, JSON lines), journald detection, and the rate limiter's
held-back count in the JSON form."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import datetime

import pytest

from simpletun.cli import tunnel
from simpletun.service import logs
from simpletun.tunnel.ratelimit import LimitedLog

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
NOW = 1_764_000_000.25  # 2025-11-24T16:00:00.250 UTC


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    saved = logs.settings()
    yield
    logs._settings = saved


def setup(verbosity: int = 0, json: bool = False, journal: bool = False) -> None:
    logs.setup(verbosity, json)
    logs._settings.journal = journal  # what stderr is, decided by the test


def test_a_terminal_or_pipe_line_has_an_iso_8601_time() -> None:
    line = logs.format_line("listening", "info", now=NOW)
    assert re.fullmatch(ISO + r" listening\n", line), line
    stamp = datetime.fromisoformat(line.split()[0])
    assert stamp.timestamp() == NOW


@pytest.mark.parametrize("level,priority", [("error", 3), ("warning", 4), ("info", 6),
                                            ("debug", 7)])
def test_under_journald_the_priority_leads_and_there_is_no_time(level: str,
                                                                priority: int) -> None:
    assert logs.format_line("up", level, now=NOW, journal=True) == f"<{priority}>up\n"


def test_a_line_is_one_entry_even_if_the_message_has_a_newline() -> None:
    assert logs.format_line("a\nb", "info", now=NOW, journal=True) == "<6>a b\n"


def test_json_lines() -> None:
    line = logs.format_line('peer "x" up', "warning", now=NOW, json=True)
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert set(record) == {"time", "level", "message"}
    assert record["level"] == "warning" and record["message"] == 'peer "x" up'
    assert datetime.fromisoformat(record["time"]).timestamp() == NOW
    # under journald the JSON keeps its priority in front
    assert logs.format_line("x", "error", now=NOW, json=True,
                            journal=True).startswith('<3>{"time": ')


def test_the_rate_limiters_held_back_count_is_a_field_in_json() -> None:
    lines: list[str] = []
    clock = [100.0]
    limited = LimitedLog(lambda m: lines.append(logs.format_line(m, "info", now=NOW,
                                                                 json=True)),
                         burst=1, interval=10.0, clock=lambda: clock[0])
    for _ in range(4):
        limited("junk", "dropped a junk frame from 192.0.2.7")
    clock[0] += 10.0
    limited("junk", "dropped a junk frame from 192.0.2.7")
    first, later = (json.loads(x) for x in lines)
    assert "held_back" not in first
    assert later["held_back"] == 3
    assert later["message"] == "dropped a junk frame from 192.0.2.7 (3 similar lines held back)"


@pytest.mark.parametrize("message,given,level", [
    ("warning: not encrypted", "info", "warning"),
    ("error: gone", "info", "error"),
    ("listening", "info", "info"),
    ("listening", "debug", "debug"),
    ("listening", "nonsense", "info"),
    ("a warning: not at the start", "info", "info"),
])
def test_level_of(message: str, given: str, level: str) -> None:
    assert logs.level_of(message, given) == level


@pytest.mark.parametrize("verbosity,shown", [
    (-1, ["error", "warning"]),
    (0, ["error", "warning", "info"]),
    (1, ["error", "warning", "info", "debug"]),
    (3, ["error", "warning", "info", "debug"]),
])
def test_verbosity(capsys: pytest.CaptureFixture[str], verbosity: int,
                   shown: list[str]) -> None:
    setup(verbosity, journal=True)
    for level in ("error", "warning", "info", "debug"):
        logs.log(f"a {level} line", level)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "".join(f"<{logs.PRIORITY[x]}>a {x} line\n" for x in shown)


def test_the_tunnels_log_and_debug_line_go_through_it(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    setup(-1, journal=True)
    tunnel.log("tun0: listening on TCP port 55555")
    tunnel.log("warning: this tunnel is not encrypted")
    tunnel.debug_line("TAP2NET 84 bytes")  # -d asked for it: shown even when quiet
    assert capsys.readouterr().err == ("<4>warning: this tunnel is not encrypted\n"
                                       "<7>TAP2NET 84 bytes\n")
    setup(0, json=True)
    tunnel.log("tun0: listening on TCP port 55555")
    record = json.loads(capsys.readouterr().err)
    assert (record["level"], record["message"]) == ("info", "tun0: listening on TCP port 55555")
    assert re.fullmatch(ISO, record["time"])


def test_errors_keep_their_plain_form_and_take_a_priority_under_journald(
        capsys: pytest.CaptureFixture[str]) -> None:
    setup(-1)
    logs.error("simpletun: no such device")
    assert capsys.readouterr().err == "simpletun: no such device\n"
    setup(0, journal=True)
    logs.error("simpletun: no such device")
    assert capsys.readouterr().err == "<3>simpletun: no such device\n"
    setup(0, json=True)
    logs.error("simpletun: no such device")
    record = json.loads(capsys.readouterr().err)
    assert (record["level"], record["message"]) == ("error", "simpletun: no such device")


def test_journald_is_recognised_by_the_device_and_inode_of_stderr() -> None:
    with tempfile.TemporaryFile() as journal, tempfile.TemporaryFile() as other:
        st = os.fstat(journal.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.under_journal(journal.fileno(), env)
        # a child whose stderr was redirected elsewhere keeps the variable, not the stream
        assert not logs.under_journal(other.fileno(), env)
        assert not logs.under_journal(journal.fileno(), {})
        for junk in ("", "12", "a:b", f"{st.st_dev}:", f":{st.st_ino}", f"{st.st_dev}-1"):
            assert not logs.under_journal(journal.fileno(), {"JOURNAL_STREAM": junk}), junk
        closed = os.dup(journal.fileno())
        os.close(closed)
        assert not logs.under_journal(closed, env)
