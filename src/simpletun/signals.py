"""The signals that stop a simpletun process the clean way (what was changed is put back,
the summary printed): one list for every part that installs, ignores or holds them."""

from __future__ import annotations

import signal

#: Ctrl-C, a service manager or kill, a closed terminal, Ctrl-\\
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
