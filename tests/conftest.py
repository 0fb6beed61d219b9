"""Shared fixtures. Device and end-to-end tests need root; under CI (CI=true) a missing
privilege is an error, not a skip, so a green run always means they ran."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from simpletun.lab import netns

ROOT_DIRS = ("device", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(f"{os.sep}{d}{os.sep}" in str(item.fspath) for d in ROOT_DIRS):
            item.add_marker(pytest.mark.root)


@pytest.fixture(autouse=True)
def _require_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") is None or os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        pytest.fail("device and end-to-end tests must run as root in CI")
    pytest.skip("needs root")


@pytest.fixture
def lab() -> Iterator[netns.Lab]:
    """Throw-away namespaces, removed after the test whatever happened."""
    with netns.Lab("sttest") as the_lab:
        yield the_lab


@pytest.fixture
def inside(lab: netns.Lab) -> Iterator[netns.Namespace]:
    """Run the test itself inside a fresh namespace, then come back and remove it."""
    ns = lab.host("dev")
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        netns.enter(ns.name)
        yield ns
    finally:
        netns._libc.setns(home, netns.CLONE_NEWNET)
        os.close(home)


def simpletun(*args: str, ns: netns.Namespace | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "simpletun", *args]
    if ns is not None:
        return ns.run(cmd, timeout=timeout)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _leftovers() -> tuple[list[str], list[str]]:
    """Namespaces and host devices a test run may have left behind."""
    leftover_ns = [n for n in os.listdir(netns.link.NETNS_DIR)
                   if n.startswith(("sttest-", "selftest-"))] if os.path.isdir(
        netns.link.NETNS_DIR) else []
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        leftover_links = [
            name for msg in ipr.get_links()
            if (name := msg.get_attr("IFLA_IFNAME")).startswith("st")
        ]
    return leftover_ns, leftover_links


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any test left a namespace or a device on the host: checked once,
    when every test is over (with pytest-xdist, in the controller, after all workers)."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller checks once all are done
    leftover_ns, leftover_links = _leftovers()
    if leftover_ns or leftover_links:
        sys.stderr.write(f"\nleft behind by the tests: namespaces {leftover_ns}, "
                         f"devices {leftover_links}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
