"""The one place a command's status lines go through: levels, timestamps, journald, JSON.

``setup(verbosity, json)`` once (the root command does it from ``-q``/``-v``/``--log-json``),
then ``log(message, level)``. Lines go to stderr:

- on a terminal, a file or a pipe: ``2026-11-25T07:41:09.123+00:00 message`` (ISO 8601, local
  time with its offset);
- under journald (stderr is the journal stream: ``$JOURNAL_STREAM``'s ``dev:inode`` is
  stderr's, as systemd.exec(5) says): no timestamp (the journal adds its own), but the
  syslog priority in front, ``<3>``..``<7>``, as sd-daemon(3) describes, so the journal keeps
  the level;
- with ``json``: one object per line, ``{"time": ..., "level": ..., "message": ...}``, plus
  ``"held_back": N`` when a rate-limited line (:class:`~simpletun.tunnel.ratelimit.LimitedLog`)
  says N similar lines were held back before it.

Levels: ``error``, ``warning``, ``info``, ``debug``. Verbosity -1 (quiet) lets warnings and
errors through, 0 info too, 1 and more debug too. A message starting ``warning:`` (or
``error:``) is at that level whatever the caller said. The formatting is pure
(:func:`format_line`: the time is passed in).
"""

from __future__ import annotations

import json as jsonlib
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from ..tunnel.ratelimit import HELD

#: syslog priorities (sd-daemon(3): ``SD_ERR`` ``<3>`` ... ``SD_DEBUG`` ``<7>``)
PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}
#: the lowest verbosity at which a level is shown
THRESHOLD = {"error": -1, "warning": -1, "info": 0, "debug": 1}


@dataclass
class Settings:
    """How lines are written; :func:`setup` sets the process's own."""

    verbosity: int = 0
    json: bool = False
    #: stderr is the journal: None until looked at (:func:`under_journal`)
    journal: bool | None = None


_settings = Settings()


def setup(verbosity: int = 0, json: bool = False) -> None:
    """Set the level (-1 quiet, 0 normal, 1+ verbose) and the form (JSON lines or text) of
    every line this process logs from now on; looks whether stderr is the journal."""
    global _settings
    _settings = Settings(verbosity=verbosity, json=json, journal=under_journal())


def settings() -> Settings:
    """The current settings (a copy)."""
    return Settings(_settings.verbosity, _settings.json, _settings.journal)


def under_journal(fd: int = 2, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``fd`` is the stream systemd connected to the journal: ``$JOURNAL_STREAM``
    holds its ``device:inode`` (systemd.exec(5)); a pipe or file passed on to a child does
    not match, so the child's own stderr is checked, not just the variable."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def level_of(message: str, level: str = "info") -> str:
    """The level of a line: ``warning:``/``error:`` at its start say so; otherwise
    ``level`` (unknown names are info)."""
    if message.startswith("warning:"):
        return "warning"
    if message.startswith("error:"):
        return "error"
    return level if level in PRIORITY else "info"


def shown(level: str, verbosity: int) -> bool:
    """Whether a line of ``level`` is written at ``verbosity``."""
    return verbosity >= THRESHOLD.get(level, 0)


def timestamp(now: float) -> str:
    """ISO 8601, local time with its UTC offset, to the millisecond."""
    return datetime.fromtimestamp(now).astimezone().isoformat(timespec="milliseconds")


def format_line(message: str, level: str, *, now: float, json: bool = False,
                journal: bool = False) -> str:
    """The line (with its newline) that :func:`log` writes. Pure."""
    if json:
        record: dict[str, object] = {"time": timestamp(now), "level": level,
                                     "message": message}
        held = HELD.search(message)
        if held is not None:
            record["held_back"] = int(held.group(1))
        text = jsonlib.dumps(record, ensure_ascii=False)
    else:
        # one entry per line: a message never spans lines
        text = message.replace("\n", " ") if "\n" in message else message
        if not journal:
            text = f"{timestamp(now)} {text}"
    if journal:
        text = f"<{PRIORITY[level]}>{text}"
    return text + "\n"


def log(message: str, level: str = "info") -> None:
    """Write ``message`` at ``level`` to stderr, if the verbosity lets it through."""
    level = level_of(message, level)
    if shown(level, _settings.verbosity):
        emit(message, level)


def emit(message: str, level: str = "debug", *, stream: TextIO | None = None) -> None:
    """Write ``message`` whatever the verbosity (the per-packet lines that ``-d`` asked
    for), in the current form."""
    if _settings.journal is None:
        _settings.journal = under_journal()
    line = format_line(message, level, now=time.time(), json=_settings.json,
                       journal=_settings.journal)
    out = stream if stream is not None else sys.stderr
    try:
        out.write(line)
        out.flush()
    except (OSError, ValueError):  # stderr gone, closed, or a hung-up terminal (EIO):
        pass                        # nothing left to tell, and the tunnel goes on


def error(message: str) -> None:
    """The one line a failing command ends with (``simpletun: what went wrong``): as it is
    on a terminal or pipe (no timestamp, as every command's error has always been), with its
    priority under journald, an object with ``--log-json``."""
    if _settings.journal is None:
        _settings.journal = under_journal()
    if not _settings.json and not _settings.journal:
        try:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return
    emit(message, "error")
