"""Watch a tun/tap device that another program holds, the way tcpdump does.

Attaching to such a device (``tuntap.attach``) would add a queue to it: on a multi-queue
device the kernel then steers some of the holder's flows to the watcher, which takes them
away, and the packets it reads carry the holder's vnet_hdr, which the watcher does not
expect. A packet socket (``AF_PACKET``, ``ETH_P_ALL``) bound to the interface instead
gets a copy of every packet in both directions on all queues, and the device is left
untouched. On a tun device (``ARPHRD_NONE``) a packet is the bare IP packet, on a tap
device an Ethernet frame: the same bytes ``dump`` reads from its own queue.
"""

from __future__ import annotations

import errno
import socket

from ..errors import DeviceError, NoSuchDevice, PermissionDenied

ETH_P_ALL = 0x0003  # every protocol (socket.ETH_P_ALL appears only in Python 3.12)
ARPHRD_ETHER = 1
PACKET_OUTGOING = 4  # sll_pkttype of a packet the host sent out of the interface
RCVBUF = 4 << 20  # room for bursts while the packets are being described


class Sniffer:
    """A packet socket on interface ``name``: ``read_into`` gives one packet (no header in
    front: ``header_len`` is 0) and sets :attr:`outgoing` for it. Usable with ``select``
    and as a context manager."""

    header_len = 0

    def __init__(self, name: str) -> None:
        self.name = name
        # protocol 0: nothing is queued before bind() picks the interface
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._sock.bind((name, ETH_P_ALL))
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            hatype = self._sock.getsockname()[3]
        except OSError as exc:
            self._sock.close()
            if exc.errno == errno.ENODEV:
                raise NoSuchDevice(f"{name} does not exist") from None
            if exc.errno == errno.EPERM:
                raise PermissionDenied(f"watching {name} needs CAP_NET_RAW: run it with sudo"
                                       ) from None
            raise DeviceError(f"cannot watch {name}: {exc.strerror}") from None
        self.tap = hatype == ARPHRD_ETHER
        #: whether the last packet read was sent by this host into the device (the holder
        #: reads it) rather than written into the device by the holder
        self.outgoing = False

    @property
    def direction(self) -> str:
        """The last packet's direction as tcpdump names it: "Out" or "In"."""
        return "Out" if self.outgoing else "In"

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_into(self, buf: bytearray | memoryview) -> int:
        n, address = self._sock.recvfrom_into(buf)
        self.outgoing = address[2] == PACKET_OUTGOING
        return n

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
