"""What ``simpletun up`` changed, kept in ``/run/simpletun/NAME.json`` so that ``down``
undoes exactly that, also after the tunnel was killed (SIGKILL, a crash).

Each change is written down *before* it is made (the file replaced whole, atomically), so a
kill at any point leaves a record that covers it; undoing a change that was not made, or
was undone already, is not an error. Processes are kept as (pid, start time), so a pid
the kernel gave to another program since is never signalled."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import SimpletunError

STATE_DIR = "/run/simpletun"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None if there is no such
    process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


@dataclass(frozen=True)
class Process:
    pid: int
    start: int

    @classmethod
    def me(cls) -> Process:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> Process:
        return cls(pid, start_time(pid) or 0)

    def alive(self) -> bool:
        """Still this process (not a zombie, not the pid reused)."""
        fields = _stat(self.pid)
        return fields is not None and int(fields[19]) == self.start and fields[0] != "Z"


@dataclass
class State:
    name: str
    config: str
    supervisor: Process
    engine: Process | None = None
    #: the changes made, in order; each a dict with a "kind" (see service.up.undo)
    changes: list[dict[str, Any]] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    directory: str = STATE_DIR

    @property
    def path(self) -> str:
        return path(self.name, self.directory)

    def create(self) -> None:
        """The first save, exclusive: FileExistsError if the file is there (another ``up``
        of this name is on its way)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.save()

    def save(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        data = asdict(self)
        del data["directory"]
        tmp = f"{self.path}.{os.getpid()}.new"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    def record(self, change: dict[str, Any]) -> None:
        """Write ``change`` down (before it is made)."""
        self.changes.append(change)
        self.save()

    def forget(self) -> None:
        """The last change was not made after all (nothing to undo for it)."""
        self.changes.pop()
        self.save()

    def undone(self, change: dict[str, Any]) -> None:
        """``change`` is undone: a second undo (a ``down`` after a supervisor killed while
        taking the tunnel down) must not undo it again."""
        self.changes.remove(change)
        self.save()

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def path(name: str, directory: str = STATE_DIR) -> str:
    return os.path.join(directory, f"{name}.json")


def load(name: str, directory: str = STATE_DIR) -> State | None:
    """The state of tunnel ``name``, None if it is not up."""
    try:
        with open(path(name, directory)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SimpletunError(f"{path(name, directory)}: cannot read it ({exc}): remove it "
                             "and undo what is left by hand (ip link del, ip rule del)") from None
    engine = data.get("engine")
    return State(name=data["name"], config=data["config"],
                 supervisor=Process(**data["supervisor"]),
                 engine=Process(**engine) if engine else None,
                 changes=list(data.get("changes", [])), pre_down=list(data.get("pre_down", [])),
                 post_down=list(data.get("post_down", [])), directory=directory)


def names(directory: str = STATE_DIR) -> list[str]:
    """The tunnels ``up`` has state for."""
    try:
        return sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".json")
                      and not f.startswith("icmp-echo-"))
    except FileNotFoundError:
        return []
