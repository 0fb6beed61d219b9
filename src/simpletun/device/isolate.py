"""Run a function in a forked child and hand its result back, so that what it imports and
allocates (pyroute2 for netlink configuration: ~25 MB) never stays in this long-running
process. A :class:`SimpletunError` raised in the child is raised again here, same type and
message; anything else becomes a SimpletunError with its text."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import TypeVar

from .. import errors

T = TypeVar("T")


def in_child(fn: Callable[[], T]) -> T:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report, leave without cleanup handlers
        os.close(read_fd)
        try:
            payload = pickle.dumps(("ok", fn()))
        except errors.SimpletunError as exc:
            payload = pickle.dumps(("error", type(exc).__name__, str(exc)))
        except BaseException as exc:
            payload = pickle.dumps(("error", "SimpletunError", f"{type(exc).__name__}: {exc}"))
        with os.fdopen(write_fd, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    if not data:
        raise errors.SimpletunError("the configuration helper process died without a word")
    result = pickle.loads(data)
    if result[0] == "ok":
        return result[1]  # type: ignore[no-any-return]
    kind = getattr(errors, result[1], errors.SimpletunError)
    if not (isinstance(kind, type) and issubclass(kind, errors.SimpletunError)):
        kind = errors.SimpletunError
    raise kind(result[2])
