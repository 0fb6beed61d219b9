"""The device library against the real kernel (root, each test in its own namespace)."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import subprocess
import sys
import time

import pytest
from pyroute2 import IPRoute

from simpletun.device import link, tuntap
from simpletun.device.pi import ETH_P_ARP, ETH_P_IP, add_pi, unpack_pi
from simpletun.errors import (
    DeviceBusy,
    DeviceDown,
    DeviceError,
    DeviceMismatch,
    NoSuchDevice,
    NotTunTap,
    PacketRejected,
    TunUnavailable,
)
from simpletun.lab.netns import Lab, Namespace

from ..packets import udp4

#: A process that holds a tun device open until its stdin closes.
HOLD = ("import sys; from simpletun.device import tuntap; d = tuntap.open_tun(sys.argv[1]); "
        "print('open', flush=True); sys.stdin.read()")


@pytest.mark.parametrize("tap", [False, True])
def test_open_by_name_pattern_or_unnamed(inside: Namespace, tap: bool) -> None:
    kind = "tap" if tap else "tun"
    with tuntap.open_device("stexact", tap=tap) as exact, \
            tuntap.open_device("stpat%d", tap=tap) as pattern, \
            tuntap.open_device("", tap=tap) as unnamed:
        assert exact.name == "stexact"
        assert pattern.name == "stpat0"
        assert unnamed.name == f"{kind}0"
        for dev in (exact, pattern, unnamed):
            info = link.tun_info(dev.name)
            assert info is not None and info.tap is tap
            assert dev.flags().tap is tap
            assert not info.pi
    assert not link.exists("stexact")  # gone with its last descriptor


def test_persist_owner_group_and_delete(inside: Namespace) -> None:
    with tuntap.open_tap("stper") as dev:
        dev.set_persist(True)
        dev.set_owner("nobody")
        dev.set_group(4321)
    info = link.tun_info("stper")
    assert info is not None
    assert (info.persist, info.tap, info.owner, info.group) == (True, True, 65534, 4321)
    with tuntap.attach("stper") as again:  # kind detected from the device
        assert again.tap
    tuntap.delete("stper")
    assert not link.exists("stper")


def test_busy_device_says_what_to_do(inside: Namespace) -> None:
    """Held by another process: that process is named."""
    holder = inside.popen([sys.executable, "-c", HOLD, "stbusy"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    with pytest.raises(DeviceBusy) as exc:
        tuntap.open_tun("stbusy")
    holder.communicate()
    comm = os.path.basename(sys.executable)[:15]  # what ps shows for it
    assert str(exc.value) == (
        f"stbusy is already attached by pid {holder.pid} ({comm}) (EBUSY): a single-queue "
        "device takes one holder; stop that process first"
    )


def test_busy_in_this_process_says_so(inside: Namespace) -> None:
    """Opening the same device twice in one process is not "another process"."""
    with tuntap.open_tun("stbusy"), pytest.raises(DeviceBusy) as exc:
        tuntap.open_tun("stbusy")
    assert str(exc.value) == (
        f"stbusy is already open in this process (pid {os.getpid()}): use the Device that "
        "is open, or close it first (a single-queue device takes one holder)"
    )


def test_exclusive_create_of_existing(inside: Namespace) -> None:
    with tuntap.open_tun("stex") as dev:
        dev.set_persist(True)
    try:
        with pytest.raises(DeviceBusy, match="stex already exists: delete it first"):
            tuntap.open_tun("stex", exclusive=True)
    finally:
        tuntap.delete("stex")


def test_tun_tap_mismatch(inside: Namespace) -> None:
    with tuntap.open_tap("sttap") as dev:
        dev.set_persist(True)
    with tuntap.open_tun("sttun") as dev:
        dev.set_persist(True)
    try:
        with pytest.raises(DeviceMismatch) as exc:
            tuntap.open_tun("sttap")
        assert str(exc.value) == ("sttap is a tap device but was opened as tun: open it as "
                                  "a tap device, or delete it and create it again")
        with pytest.raises(DeviceMismatch, match="sttun is a tun device but was opened as tap: "
                                                 "open it as a tun device"):
            tuntap.open_tap("sttun")
        with pytest.raises(DeviceMismatch, match="single-queue tun device: open it as "
                                                 "single-queue"):
            tuntap.open_tun("sttun", multi_queue=True)
    finally:
        tuntap.delete("sttap")
        tuntap.delete("sttun")


def test_not_a_tun_device(inside: Namespace) -> None:
    with IPRoute() as ipr:
        ipr.link("add", ifname="stveth", kind="veth", peer={"ifname": "stveth1"})
    with pytest.raises(NotTunTap, match="stveth is a veth device, not a tun/tap device"):
        tuntap.open_tun("stveth")
    with pytest.raises(NotTunTap, match="stveth is a veth device, not a tun/tap device"):
        tuntap.attach("stveth")


def test_loopback_is_not_called_a_tun_with_other_flags(inside: Namespace) -> None:
    """``simpletun -i lo -s`` said "lo exists with other flags than tun"."""
    with pytest.raises(NotTunTap) as exc:
        tuntap.open_tun("lo")
    assert str(exc.value) == "lo is a loopback device, not a tun/tap device: pick another name"
    assert isinstance(exc.value, DeviceMismatch)


def test_attach_only_to_existing(inside: Namespace) -> None:
    with pytest.raises(NoSuchDevice, match=r"stnone does not exist: create it first "
                                           r"\(open_tun\('stnone'\), and set_persist\(\)"):
        tuntap.open_tun("stnone", create=False)


def test_missing_clone_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuntap, "CLONE_DEVICE", "/nonexistent/net/tun")
    with pytest.raises(TunUnavailable, match=r"does not exist: load the tun module \(modprobe"):
        tuntap.open_tun("x")


def _up(name: str, cidr: str) -> None:
    link.add_address(name, cidr)
    link.set_up(name)


def _udp_flows(dst: str, count: int, port: int = 9) -> None:
    """Send one datagram from each of ``count`` source ports (distinct flows)."""
    for i in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("", 40000 + i))
            s.sendto(b"flow %d" % i, (dst, port))


def _drain(fd: int, wait: float = 0.5) -> list[bytes]:
    got: list[bytes] = []
    while select.select([fd], [], [], wait)[0]:
        got.append(os.read(fd, 65536))
        wait = 0.1
    return got


def test_multi_queue(inside: Namespace) -> None:
    with tuntap.open_tun("stmq", queues=2) as dev:
        assert len(dev.queues) == 2
        info = link.tun_info("stmq")
        assert info is not None and info.multi_queue and info.queues == 2
        _up("stmq", "10.98.0.1/24")
        _udp_flows("10.98.0.2", 32)
        per_queue = [
            [p for p in _drain(q.fileno()) if p[0] >> 4 == 4 and p[9] == 17]
            for q in dev.queues
        ]
        assert sum(map(len, per_queue)) == 32
        assert all(per_queue), f"flows were not spread: {list(map(len, per_queue))}"
        # a detached queue gets nothing; the other takes every flow
        dev.queue(1).detach()
        assert tuntap.Flags(_getiff(dev.queue(1).fileno())).detached
        _udp_flows("10.98.0.2", 16)
        assert not _drain(dev.queue(1).fileno(), 0.2)
        assert len([p for p in _drain(dev.queue(0).fileno()) if p[9] == 17]) == 16
        dev.queue(1).attach()
        # a third queue can be added, and a second opener joins too
        dev.add_queue()
        with tuntap.open_tun("stmq", multi_queue=True) as other:
            assert other.name == "stmq"
            assert link.tun_info("stmq").queues == 4  # type: ignore[union-attr]


def _getiff(fd: int) -> int:
    import fcntl

    return int.from_bytes(fcntl.ioctl(fd, tuntap.TUNGETIFF, bytes(40))[16:18], "little")


def test_add_queue_needs_multi_queue(inside: Namespace) -> None:
    with tuntap.open_tun("stsq") as dev, pytest.raises(DeviceError, match="single-queue"):
        dev.add_queue()


def _listen_udp(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    s.settimeout(2)
    return s


@pytest.mark.parametrize("pi", [False, True])
def test_packet_info_round_trip(inside: Namespace, pi: bool) -> None:
    with tuntap.open_tun("stpi", pi=pi) as dev:
        assert link.tun_info("stpi").pi is pi  # type: ignore[union-attr]
        _up("stpi", "10.97.0.1/24")
        # out of the host, into the device: read one packet
        _udp_flows("10.97.0.2", 1, port=7777)
        packets = [p for p in _drain(dev.fileno()) if p[4 if pi else 0] >> 4 == 4]
        assert len(packets) == 1
        raw = packets[0]
        if pi:
            info = unpack_pi(raw)
            assert (info.flags, info.proto) == (0, ETH_P_IP)
            raw = raw[4:]
        assert raw[0] == 0x45 and raw[9] == 17 and raw.endswith(b"flow 0")
        # from the device into the host: write one packet, a socket receives it
        with _listen_udp(5555) as sock:
            packet = udp4("10.97.0.2", "10.97.0.1", 6000, 5555, b"hello through tun")
            written = dev.write(add_pi(packet) if pi else packet)
            assert written == len(packet) + (4 if pi else 0)
            data, peer = sock.recvfrom(100)
            assert (data, peer) == (b"hello through tun", ("10.97.0.2", 6000))


def test_packet_info_on_tap_names_the_ethertype(inside: Namespace) -> None:
    with tuntap.open_tap("stpitap", pi=True) as dev:
        _up("stpitap", "10.96.0.1/24")
        _udp_flows("10.96.0.2", 1)  # makes the kernel ARP for 10.96.0.2
        frames = _drain(dev.fileno())
        protos = {unpack_pi(f).proto for f in frames}
        assert ETH_P_ARP in protos


def test_wrong_packet_is_refused_with_a_clear_error(inside: Namespace) -> None:
    with tuntap.open_tun("strej") as dev:
        _up("strej", "10.95.0.1/24")
        with pytest.raises(PacketRejected, match="strej refused a packet of 20 bytes"):
            dev.write(b"\x00" * 20)  # version 0: not IP


def test_non_blocking(inside: Namespace) -> None:
    with tuntap.open_tun("stnb", blocking=False) as dev:
        assert not dev.queue(0).get_blocking()
        with pytest.raises(BlockingIOError):
            dev.read()
        dev.set_blocking(True)
        assert dev.queue(0).get_blocking()


def test_vnet_hdr_and_offloads(inside: Namespace) -> None:
    with tuntap.open_tun("stvnet", vnet_hdr=True,
                         offloads=tuntap.TUN_F_CSUM | tuntap.TUN_F_TSO4) as dev:
        assert dev.flags().vnet_hdr
        assert dev.header_len == 10
        _up("stvnet", "10.94.0.1/24")
        _udp_flows("10.94.0.2", 1)
        packets = [p for p in _drain(dev.fileno()) if p[10] >> 4 == 4]
        assert len(packets) == 1
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = struct.unpack(
            "<BBHHHH", packets[0][:10])
        assert packets[0][10] == 0x45  # the IP packet starts after the header
        assert (gso_type, gso_size) == (0, 0)  # one small datagram: not a super-packet
        if flags & 1:  # NEEDS_CSUM: the UDP checksum is left to us, at 20 + 6
            assert (csum_start, csum_offset) == (20, 6)
        dev.set_vnet_hdr_size(12)
        assert dev.header_len == 12
        with pytest.raises(DeviceError, match="does not take a vnet_hdr of 4 bytes"):
            dev.set_vnet_hdr_size(4)
        with pytest.raises(DeviceError, match="does not take offload flags 0x80"):
            dev.set_offload(0x80)  # no such offload


def test_iterating_reads_packets(inside: Namespace) -> None:
    with tuntap.open_tun("stiter") as dev:
        _up("stiter", "10.93.0.1/24")
        _udp_flows("10.93.0.2", 1)
        deadline = time.monotonic() + 2
        for packet in dev:
            if packet[0] >> 4 == 4 or time.monotonic() > deadline:
                break
        assert packet[0] >> 4 == 4


def test_read_into_is_one_packet(inside: Namespace) -> None:
    with tuntap.open_tun("stri") as dev:
        _up("stri", "10.92.0.1/24")
        _udp_flows("10.92.0.2", 2)
        buf = bytearray(tuntap.READ_SIZE)
        sizes = []
        while len(sizes) < 2 and select.select([dev], [], [], 1)[0]:
            n = dev.read_into(buf)
            if buf[0] >> 4 == 4:
                sizes.append(n)
        assert sizes == [20 + 8 + 6, 20 + 8 + 6]


def test_write_to_a_down_device(inside: Namespace) -> None:
    """It was a bare OSError: [Errno 5]."""
    with tuntap.open_tun("stdown") as dev:
        packet = udp4("10.9.0.1", "10.9.0.2", 5000, 6000, b"x")
        with pytest.raises(DeviceDown) as exc:
            dev.write(packet)
        assert str(exc.value) == ("stdown is down, so it takes no packets: bring it up first "
                                  "(link.set_up('stdown'))")
        assert isinstance(exc.value, DeviceError)
        link.set_up("stdown")
        assert dev.write(packet) == len(packet)


def test_open_inside_a_named_namespace(lab: Lab) -> None:
    """netns= as every link call takes it; the fd works from here, and more queues open
    in the same namespace."""
    ns = lab.host("far")
    home = os.stat("/proc/thread-self/ns/net").st_ino
    with tuntap.open_tun("stfar", netns=ns.name, queues=2) as dev:
        assert dev.netns == ns.name and len(dev.queues) == 2
        assert not link.exists("stfar")  # not out here
        info = link.tun_info("stfar", netns=ns.name)
        assert info is not None and info.queues == 2
        dev.add_queue()
        assert link.tun_info("stfar", netns=ns.name).queues == 3  # type: ignore[union-attr]
        link.add_address("stfar", "10.93.0.1/24", netns=ns.name)
        link.set_up("stfar", netns=ns.name)
        ns.run([sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
                "socket.SOCK_DGRAM).sendto(b'far', ('10.93.0.2', 9))"], check=True)
        dev.set_blocking(False)
        got = [p for q in dev.queues for p in _drain(q.fileno()) if p[0] >> 4 == 4]
        assert [p[-3:] for p in got] == [b"far"]
        with tuntap.attach("stfar", netns=ns.name, multi_queue=True) as again:
            assert again.name == "stfar"
        with pytest.raises(NoSuchDevice, match="stnone does not exist in network namespace"):
            tuntap.open_tun("stnone", netns=ns.name, create=False)
        with pytest.raises(DeviceMismatch, match="stfar is a tun device but was opened as "
                                                 "tap"):
            tuntap.open_tap("stfar", netns=ns.name, multi_queue=True)
        with pytest.raises(NotTunTap, match="lo is a loopback device"):
            tuntap.open_tun("lo", netns=ns.name)
    assert not link.exists("stfar", netns=ns.name)
    with pytest.raises(NoSuchDevice, match="no network namespace named 'st-none'"):
        tuntap.open_tun("stx", netns="st-none")
    assert os.stat("/proc/thread-self/ns/net").st_ino == home  # back where it was


def test_oserror_numbers_are_not_leaked(inside: Namespace) -> None:
    """A closed device says so instead of EBADF."""
    dev = tuntap.open_tun("stclosed")
    dev.close()
    assert dev.closed
    with pytest.raises(ValueError, match="closed"):
        dev.fileno()
    assert errno.EBADF  # the error we no longer show
