"""One way to name a device's holders for every message (tunnel, deltun, dump, respond): a
tunnel's worker processes are named through the process that started them; and one reader
of a process's parent (/proc/PID/stat) for that and for the bench's process trees."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from simpletun.device import holders
from simpletun.device.holders import Holder
from simpletun.lab import bench


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_parent_pid(child: subprocess.Popen[bytes]) -> None:
    assert holders.parent_pid(child.pid) == os.getpid()
    assert holders.parent_pid(os.getpid()) == os.getppid()
    assert holders.parent_pid(2**22 + 1) is None  # above pid_max: never a process


def test_workers_are_named_through_their_starter(child: subprocess.Popen[bytes]) -> None:
    me, worker = Holder(os.getpid(), "simpletun", 1), Holder(child.pid, "simpletun", 1)
    other = Holder(1, "dump", 1)  # not related to this process as a parent
    assert holders.leading([me, worker]) == [me]
    assert holders.leading([worker]) == [worker]
    assert holders.held_by("tun0", found=[me, worker]) == f"pid {me.pid} (simpletun)"
    assert holders.held_by("tun0", found=[other, me, worker]) == (
        f"pid {other.pid} (dump), pid {me.pid} (simpletun)")
    assert holders.held_by("tun0", found=[]) == ""


def test_the_bench_tree_uses_the_same_parent(child: subprocess.Popen[bytes]) -> None:
    assert set(bench._tree([os.getpid()])) >= {os.getpid(), child.pid}
