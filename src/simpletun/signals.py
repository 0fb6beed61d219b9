"""The signals that stop a simpletun process the clean way (what was changed is put back,
the summary printed): one list for every part that installs, ignores or holds them; and
the one way a child process asks to follow its parent when that goes."""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1

#: Ctrl-C, a service manager or kill, a closed terminal, Ctrl-\\
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent goes, however it goes (no
    orphaned workers or engines). A change of user clears it: ask again after one."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
