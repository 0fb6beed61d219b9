"""Taking a tunnel's device down while it runs drops packets (counted), never ends the
tunnel (issue 12 review): the plaintext TCP wire and the encrypted engine on UDP and TCP."""

from __future__ import annotations

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed

CASES = [("tcp", False), ("tcp", True), ("udp", True)]


@pytest.mark.parametrize("transport,keys", CASES,
                         ids=[f"{t}-{'encrypted' if k else 'plaintext'}" for t, k in CASES])
def test_device_taken_down_and_up_again(lab: Lab, transport: str, keys: bool) -> None:
    bed = Testbed(lab, ipv6_overlay=False, keys=keys)
    common = ["-t", transport]
    if not keys:
        # a short dead-peer timeout: a peer whose packets the device cannot take is still
        # alive (what it sends counts, not what the device took)
        common += ["--peer-timeout", "2", "--keepalive", "0.5", "--workers", "1"]
    bed.start(server_extra=common, client_extra=common)
    assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    link.set_down(bed.iface, netns=bed.server.name)
    assert not bed.client.ping(bed.server_overlay, count=30, interval=0.1, deadline=3.5).ok
    link.set_up(bed.iface, netns=bed.server.name)
    link.wait_usable(bed.iface, netns=bed.server.name)
    assert bed.client.ping(bed.server_overlay, count=3, interval=0.05, deadline=5).ok
    assert bed.server_proc is not None and bed.client_proc is not None
    for proc in (bed.server_proc, bed.client_proc):
        assert proc.proc.poll() is None, proc.text
    bed.server_proc.stop()
    assert "Traceback" not in bed.server_proc.text
    assert "device-down" in bed.server_proc.lines[-1], bed.server_proc.text
    assert "dead-peer" not in bed.server_proc.text, bed.server_proc.text
