"""Taking a tunnel's device down while it runs drops packets (counted), never ends the
tunnel (issue 12 review)."""

from __future__ import annotations

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_device_taken_down_and_up_again(lab: Lab, transport: str) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    # a short dead-peer timeout: a peer whose packets the device cannot take is still
    # alive (what it sends counts, not what the device took)
    common = ["-t", transport, "--peer-timeout", "2", "--keepalive", "0.5"]
    workers = ["--workers", "1"] if transport == "tcp" else []
    bed.start(server_extra=[*common, *workers], client_extra=[*common, *workers])
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    link.set_down(bed.iface, netns=bed.server.name)
    assert not bed.client.ping(bed.server_overlay, count=30, interval=0.1, deadline=3.5).ok
    link.set_up(bed.iface, netns=bed.server.name)
    link.wait_usable(bed.iface, netns=bed.server.name)
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05, deadline=5).ok
    assert bed.server_proc is not None
    assert bed.server_proc.proc.poll() is None, bed.server_proc.text
    bed.server_proc.stop()
    assert "Traceback" not in bed.server_proc.text
    assert "device-down" in bed.server_proc.text, bed.server_proc.text
    assert "dead-peer" not in bed.server_proc.text, bed.server_proc.text
