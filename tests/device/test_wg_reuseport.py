"""The kernel's side of ``--workers``: a reuseport group with the steering program gives
each transport message to the worker its receiver index names and everything else (the
handshakes) to the leader, whatever port it comes from; and the group keeps the address
and port of the socket it replaces (a client's ephemeral port too)."""

from __future__ import annotations

import select
import socket
import struct

from simpletun.wireguard import workers


def _group(n: int) -> list[socket.socket]:
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    group = workers.reuseport_group(first, n)
    assert [s.getsockname() for s in group] == [("127.0.0.1", port)] * n
    return group


def _who(group: list[socket.socket]) -> int:
    ready = select.select(group, [], [], 2.0)[0]
    assert len(ready) == 1, ready
    ready[0].recv(2048)
    return group.index(ready[0])


def test_the_group_steers_by_receiver_index_and_handshakes_to_the_leader() -> None:
    group = _group(3)
    try:
        address = group[0].getsockname()
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        try:
            for i, index in enumerate([0, 1, 2, 3, 4, 5, 0x1FF, 0xABCDEF07]):
                message = struct.pack("<IIQ", 4, index, i) + bytes(16)
                senders[i % 4].sendto(message, address)  # from several ports
                assert _who(group) == (index & 0xFF) % 3, index
            for kind in (1, 2, 3):
                senders[kind].sendto(bytes([kind, 0, 0, 0]) + bytes(144), address)
                assert _who(group) == 0
            senders[0].sendto(b"\x04", address)  # too short to read: the leader's
            assert _who(group) == 0
        finally:
            for s in senders:
                s.close()
    finally:
        for s in group:
            s.close()
