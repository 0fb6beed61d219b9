"""wg-quick's PreUp/PostUp/PreDown/PostDown: each line run by bash, ``%i`` replaced by the
interface name, said before it runs (``[#] LINE``, as wg-quick does)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterable

from ..errors import HookFailed


def run(phase: str, hooks: Iterable[str], name: str, log: Callable[[str], None], *,
        strict: bool = True) -> None:
    """Run ``hooks`` in order. A hook that fails raises :class:`HookFailed` (``strict``:
    bringing a tunnel up stops there) or is said and passed over (taking one down goes on)."""
    for hook in hooks:
        line = hook.replace("%i", name)
        log(f"[#] {line}")
        try:
            code = subprocess.run(["bash", "-c", line], check=False,
                                  preexec_fn=unblock).returncode
        except OSError as exc:
            code, why = -1, f"cannot run bash: {exc.strerror}"
        else:
            why = f"exit status {code}"
        if code != 0:
            message = f"{phase} hook failed ({why}): {line}"
            if strict:
                raise HookFailed(message)
            log(f"warning: {message}")


def unblock() -> None:
    """A hook starts with no signal blocked (the supervisor waits for its own with them
    blocked)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
