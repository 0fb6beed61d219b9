"""Encrypted TCP between simpletun peers: a TCP super-packet (vnet_hdr, up to 64 KiB)
travels whole in one WireGuard message (the EXT_SUPER extension) and reaches the far
device as one write; a side without offloads cuts what it receives into segments."""

from __future__ import annotations

import pytest

from simpletun.device import link
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed

MB = 1024 * 1024


def _rx(bed: Testbed) -> tuple[int, int]:
    counters = link.state(bed.iface, netns=bed.server.name).counters
    return counters["rx_packets"], counters["rx_bytes"]


@pytest.mark.parametrize("server_extra,whole", [
    ([], True),
    (["--no-offload"], False),  # the server's device has no vnet_hdr: it cuts them
], ids=["both-offload", "server-without"])
def test_super_packets_travel_whole(lab: Lab, server_extra: list[str], whole: bool) -> None:
    bed = Testbed(lab, keys=True, ipv6_overlay=False)
    bed.start(server_extra=["-t", "tcp", *server_extra], client_extra=["-t", "tcp"])
    packets, size = _rx(bed)
    assert bed.transfer(20 * MB)[0] == 20 * MB  # sha256 checked by transfer
    packets, size = (a - b for a, b in zip(_rx(bed), (packets, size), strict=True))
    mtu = link.state(bed.iface, netns=bed.server.name).mtu
    average = size / packets
    if whole:  # most writes are super-packets of many segments
        assert average > 8 * mtu, (packets, size)
    else:
        assert average <= mtu, (packets, size)
