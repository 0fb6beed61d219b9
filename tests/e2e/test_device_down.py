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
    bed.start(server_extra=["-t", transport, "--workers", "1"] if transport == "tcp"
              else ["-t", transport],
              client_extra=["-t", transport, "--workers", "1"] if transport == "tcp"
              else ["-t", transport])
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    link.set_down(bed.iface, netns=bed.server.name)
    assert not bed.client.ping(bed.server_overlay, count=3, interval=0.05, deadline=1).ok
    link.set_up(bed.iface, netns=bed.server.name)
    link.wait_usable(bed.iface, netns=bed.server.name)
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05, deadline=5).ok
    assert bed.server_proc is not None
    assert bed.server_proc.proc.poll() is None, bed.server_proc.text
    bed.server_proc.stop()
    assert "Traceback" not in bed.server_proc.text
    assert "device-down" in bed.server_proc.text, bed.server_proc.text
