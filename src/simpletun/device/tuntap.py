"""Linux tun/tap devices: the ioctls on ``/dev/net/tun`` and packet read/write.

Where a packet enters and leaves the program on the device side. A :class:`Device` is one
interface held open by this process, with one file descriptor per queue (one, unless
multi-queue). Everything a user can get wrong is turned into an exception from
:mod:`simpletun.errors` with a one-line message saying what to do.

Address, MTU, up/down and routes are not ioctls here: see :mod:`simpletun.device.link`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import grp
import os
import pwd
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import (
    BadName,
    DeviceBusy,
    DeviceDown,
    DeviceError,
    DeviceMismatch,
    NoSuchDevice,
    NoSuchUser,
    NotTunTap,
    PacketRejected,
    PermissionDenied,
    SimpletunError,
    TunUnavailable,
)

CLONE_DEVICE = "/dev/net/tun"
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

# ifr_flags (include/uapi/linux/if_tun.h)
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200
IFF_DETACH_QUEUE = 0x0400
IFF_PERSIST = 0x0800
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000

# ioctl numbers (x86_64 and most architectures)
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNSETVNETHDRSZ = 0x400454D8
TUNSETQUEUE = 0x400454D9

# TUNSETOFFLOAD flags
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

IFNAMSIZ = 16
VNET_HDR_LEN = 10
#: Large enough for any packet a device can hand over: a 64 KiB super-packet plus
#: vnet_hdr (up to 12), PI (4) and an Ethernet header with a VLAN tag (18).
READ_SIZE = 65536 + 64

_IFREQ = struct.Struct("16sH22x")


def check_name(name: str, *, pattern_ok: bool = True) -> str:
    """Return ``name`` if the kernel would accept it as an interface name, else BadName.

    ``""`` means "let the kernel choose"; a ``%d`` pattern such as ``tun%d`` is allowed
    where ``pattern_ok``.
    """
    if name == "":
        if pattern_ok:
            return name
        raise BadName("an interface name is required")
    raw = name.encode()
    problem = None
    if len(raw) >= IFNAMSIZ:
        problem = f"it is {len(raw)} bytes long, at most {IFNAMSIZ - 1} fit"
    elif name in (".", ".."):
        problem = "it is reserved"
    elif any(c in name for c in "/:") or any(c.isspace() for c in name):
        problem = "it contains '/', ':' or white space"
    elif "%" in name and name.count("%") == 1 and "%d" in name and not pattern_ok:
        raise BadName(f"{name!r} is a name pattern, not a device name: give the name of one "
                      f"device, e.g. {name.replace('%d', '0')}")
    elif "%" in name and (not pattern_ok or name.count("%") != 1 or "%d" not in name):
        problem = "the only pattern allowed is one '%d', as in tun%d"
    if problem:
        raise BadName(f"bad interface name {name!r}: {problem}")
    return name


def _mode(tap: bool) -> str:
    return "tap" if tap else "tun"


def _ifreq(name: str, flags: int) -> bytes:
    return _IFREQ.pack(name.encode(), flags)


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body with this thread in network namespace ``netns`` (a name under
    /run/netns), then come back; ``None`` stays where it is. Only the calling thread moves;
    descriptors opened inside stay valid (and their devices stay inside) after coming back."""
    if netns is None:
        yield
        return
    try:
        target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoSuchDevice(f"no network namespace named {netns!r} (see: ip netns list)") from None
    except OSError as exc:
        raise DeviceError(f"cannot open network namespace {netns!r}: {exc.strerror}") from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except OSError as exc:
                if exc.errno == errno.EPERM:
                    raise PermissionDenied(
                        f"entering network namespace {netns!r} needs CAP_SYS_ADMIN: run as root"
                    ) from None
                raise DeviceError(f"cannot enter network namespace {netns!r}: "
                                  f"{exc.strerror}") from None
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)


def _open_clone() -> int:
    try:
        return os.open(CLONE_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunUnavailable(
            f"{CLONE_DEVICE} does not exist: load the tun module (modprobe tun), or in a "
            "container pass the device in (docker run --device /dev/net/tun --cap-add NET_ADMIN)"
        ) from None
    except PermissionError:
        raise TunUnavailable(
            f"cannot open {CLONE_DEVICE} (permission denied): run as root, or make it usable "
            f"(chmod 0666 {CLONE_DEVICE}) and attach to a persistent device root made for you"
        ) from None
    except OSError as exc:
        raise TunUnavailable(f"cannot open {CLONE_DEVICE}: {exc.strerror}") from None


def exists(name: str) -> bool:
    if not name or "%" in name:
        return False
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def not_tun_tap(name: str, kind: str) -> NotTunTap:
    """The error for ``name`` existing as another ``kind`` of device (see link.kind_of)."""
    return NotTunTap(f"{name} is a {kind} device, not a tun/tap device: pick another name")


def _mismatch(name: str, tap: bool, multi_queue: bool, netns: str | None) -> DeviceMismatch:
    """Why attaching to an existing ``name`` gave EINVAL, as precisely as netlink tells."""
    from . import link

    wanted = f"{'multi-queue ' if multi_queue else ''}{_mode(tap)}"
    try:
        st = link.state(name, netns=netns)
    except SimpletunError:
        return DeviceMismatch(f"{name} refused the flags asked for ({wanted}): open it as it "
                              "was created (tap=, multi_queue=), or use attach() to take them "
                              "from the device")
    info = st.tun
    if info is None:
        return not_tun_tap(name, link.describe(st))
    if info.tap != tap:
        return DeviceMismatch(
            f"{name} is a {_mode(info.tap)} device but was opened as {_mode(tap)}: open it "
            f"as a {_mode(info.tap)} device, or delete it and create it again"
        )
    if info.multi_queue != multi_queue:
        have = "multi-queue" if info.multi_queue else "single-queue"
        return DeviceMismatch(f"{name} is a {have} {_mode(info.tap)} device: open it as "
                              f"{have}")
    return DeviceMismatch(f"{name} refused the flags asked for ({wanted}): open it as it was "
                          "created")


def _busy(name: str) -> DeviceBusy:
    """EBUSY on a single-queue device: say who holds it, this process included."""
    from .holders import holders

    found = holders(name, include_self=True)
    if any(h.pid == os.getpid() for h in found):
        return DeviceBusy(
            f"{name} is already open in this process (pid {os.getpid()}): use the Device "
            "that is open, or close it first (a single-queue device takes one holder)"
        )
    who = ", ".join(str(h) for h in found) or "another process"
    return DeviceBusy(f"{name} is already attached by {who} (EBUSY): a single-queue device "
                      "takes one holder; stop that process first")


def _attach_error(exc: OSError, name: str, *, tap: bool, multi_queue: bool,
                  creating: bool, exclusive: bool, netns: str | None = None) -> SimpletunError:
    shown = name or f"a new {_mode(tap)} device"
    if exc.errno == errno.EPERM:
        if creating:
            return PermissionDenied(
                f"creating {shown} needs CAP_NET_ADMIN: run as root, or have root make a "
                f"persistent device owned by {_whoami()} and attach to that"
            )
        return PermissionDenied(
            f"not allowed to attach to {name} (EPERM): run as root, or as the user or group "
            "that owns it (root gives it an owner or group when making it persistent)"
        )
    if exc.errno == errno.EBUSY:
        if exclusive:
            return DeviceBusy(
                f"{name} already exists: delete it first (tuntap.delete({name!r})) "
                "or choose another name"
            )
        return _busy(name)
    if exc.errno == errno.EINVAL and not creating:
        return _mismatch(name, tap, multi_queue, netns)
    if exc.errno == errno.E2BIG:
        return DeviceError(f"{name} has all the queues it can take (E2BIG): use fewer queues")
    if exc.errno in (errno.ENFILE, errno.EMFILE):
        return DeviceError(f"cannot open {shown}: too many open files; raise the limit")
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return DeviceError(f"cannot open {shown}: {exc.strerror} ({code})")


def _whoami() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def resolve_user(user: int | str) -> int:
    """A uid from a uid or a user name (NoSuchUser if the name is unknown)."""
    if isinstance(user, int) or user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise NoSuchUser(f"no user named {user!r}: give an existing user name or a uid") from None


def resolve_group(group: int | str) -> int:
    """A gid from a gid or a group name (NoSuchUser if the name is unknown)."""
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise NoSuchUser(
            f"no group named {group!r}: give an existing group name or a gid"
        ) from None


def _ioctl_int(fd: int, request: int, value: int) -> None:
    # fcntl passes an int argument as a C int; the kernel reads it as unsigned long.
    if value >= 1 << 31:
        value -= 1 << 32
    fcntl.ioctl(fd, request, value)


class Queue:
    """One file descriptor of a device: one packet per read, one packet per write."""

    __slots__ = ("_fd", "device_name")

    def __init__(self, fd: int, device_name: str) -> None:
        self._fd = fd
        self.device_name = device_name

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"queue of {self.device_name} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self, size: int = READ_SIZE) -> bytes:
        """One packet (with PI/vnet_hdr if the device has them). In non-blocking mode,
        BlockingIOError when none is waiting."""
        return os.read(self._fd, size)

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Read one packet into ``buf``; returns its length (allocation-free)."""
        return os.readv(self._fd, [buf])

    def read_parts(self, *bufs: bytearray | memoryview) -> int:
        """Read one packet spread over ``bufs`` (e.g. its vnet_hdr into one, the packet
        into another) with one readv; returns the total length."""
        return os.readv(self._fd, bufs)

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Write exactly one whole packet; returns its length. PacketRejected if the kernel
        refuses it, DeviceDown if the device is down."""
        return self.write_parts(packet)

    def write_parts(self, *parts: bytes | bytearray | memoryview) -> int:
        """Write one packet given in pieces (e.g. a vnet_hdr and the packet) with one
        writev; PacketRejected if the kernel refuses it, DeviceDown if the device is down."""
        try:
            return os.writev(self._fd, parts)
        except OSError as exc:
            if exc.errno == errno.EIO:  # tun_get_user: the interface is not IFF_UP
                raise DeviceDown(
                    f"{self.device_name} is down, so it takes no packets: bring it up first "
                    f"(link.set_up({self.device_name!r}))"
                ) from None
            if exc.errno in (errno.EINVAL, errno.EMSGSIZE, errno.EFAULT):
                raise PacketRejected(
                    f"{self.device_name} refused a packet of {sum(map(len, parts))} bytes "
                    f"({exc.strerror}): not a valid IP packet/Ethernet frame or too large"
                ) from None
            raise

    def set_blocking(self, blocking: bool) -> None:
        os.set_blocking(self._fd, blocking)

    def get_blocking(self) -> bool:
        return os.get_blocking(self._fd)

    def attach(self) -> None:
        """Re-enable a detached queue of a multi-queue device (TUNSETQUEUE)."""
        fcntl.ioctl(self._fd, TUNSETQUEUE, _ifreq("", IFF_ATTACH_QUEUE))

    def detach(self) -> None:
        """Stop the kernel from steering packets to this queue (TUNSETQUEUE)."""
        fcntl.ioctl(self._fd, TUNSETQUEUE, _ifreq("", IFF_DETACH_QUEUE))

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


@dataclass(frozen=True)
class Flags:
    """What TUNGETIFF says about an attached device.

    There is no ``pi`` here on purpose: TUNGETIFF ORs in IFF_NOFILTER, which has the same
    value as IFF_NO_PI (0x1000), so the bit says nothing about the PI header. Ask netlink
    instead (``link.tun_info(name).pi``).
    """

    raw: int

    @property
    def tap(self) -> bool:
        return bool(self.raw & IFF_TAP)

    @property
    def detached(self) -> bool:
        return bool(self.raw & IFF_DETACH_QUEUE)

    @property
    def multi_queue(self) -> bool:
        return bool(self.raw & IFF_MULTI_QUEUE)

    @property
    def vnet_hdr(self) -> bool:
        return bool(self.raw & IFF_VNET_HDR)

    @property
    def persist(self) -> bool:
        return bool(self.raw & IFF_PERSIST)


class Device:
    """A tun or tap interface held open by this process.

    Reads and writes go to queue 0 unless a queue is picked with :meth:`queue`; ``fileno()``
    is queue 0's, so a ``Device`` works with ``select``/``selectors`` directly. The
    interface disappears when the last descriptor closes unless :meth:`set_persist` was
    called. Use as a context manager to close every queue on exit.
    """

    def __init__(self, name: str, queues: list[Queue], *, tap: bool, pi: bool,
                 multi_queue: bool, vnet_hdr_size: int | None,
                 netns: str | None = None) -> None:
        self.name = name
        self.netns = netns  # the named namespace the device is in (None: where we were)
        self.queues = queues
        self.tap = tap
        self.pi = pi
        self.multi_queue = multi_queue
        self.vnet_hdr_size = vnet_hdr_size
        self._flags = (
            (IFF_TAP if tap else IFF_TUN)
            | (0 if pi else IFF_NO_PI)
            | (IFF_MULTI_QUEUE if multi_queue else 0)
            | (IFF_VNET_HDR if vnet_hdr_size is not None else 0)
        )

    # --- the packet path -------------------------------------------------------------
    def fileno(self) -> int:
        return self.queues[0].fileno()

    def read(self, size: int = READ_SIZE) -> bytes:
        """Read one packet from queue 0: an IP packet on tun, an Ethernet frame on tap,
        preceded by the vnet_hdr and/or PI header if the device was opened with them
        (``header_len`` bytes). Blocks until one arrives; in non-blocking mode raises
        BlockingIOError when none is waiting. A packet longer than ``size`` is cut short."""
        return self.queues[0].read(size)

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Like :meth:`read`, into ``buf`` without allocating; returns the length."""
        return self.queues[0].read_into(buf)

    def read_parts(self, *bufs: bytearray | memoryview) -> int:
        """Like :meth:`read`, spread over ``bufs`` (one readv); returns the total length."""
        return self.queues[0].read_parts(*bufs)

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Write one whole packet into the device through queue 0, as if it arrived from
        the network: an IP packet on tun, an Ethernet frame on tap, behind the same headers
        :meth:`read` gives. Returns the bytes written. Raises PacketRejected if the kernel
        refuses the packet (not IP/Ethernet, too large) and DeviceDown if the device is down
        (bring it up with ``link.set_up``)."""
        return self.queues[0].write(packet)

    def write_parts(self, *parts: bytes | bytearray | memoryview) -> int:
        """Like :meth:`write`, with the packet given in pieces (one writev)."""
        return self.queues[0].write_parts(*parts)

    def queue(self, index: int) -> Queue:
        """Queue ``index`` of a multi-queue device (0 is the one ``read``/``write`` use)."""
        return self.queues[index]

    def set_blocking(self, blocking: bool) -> None:
        for q in self.queues:
            q.set_blocking(blocking)

    @property
    def header_len(self) -> int:
        """Bytes in front of every packet: vnet_hdr and/or PI."""
        return (self.vnet_hdr_size or 0) + (4 if self.pi else 0)

    # --- more queues ---------------------------------------------------------------
    def add_queue(self, *, blocking: bool = True) -> Queue:
        """Open one more queue on a multi-queue device."""
        if not self.multi_queue:
            raise DeviceError(f"{self.name} is single-queue: open it with multi_queue=True")
        with in_netns(self.netns):
            fd = _open_clone()
            try:
                fcntl.ioctl(fd, TUNSETIFF, _ifreq(self.name, self._flags))
                if self.vnet_hdr_size is not None and self.vnet_hdr_size != VNET_HDR_LEN:
                    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", self.vnet_hdr_size))
                os.set_blocking(fd, blocking)
            except OSError as exc:
                os.close(fd)
                raise _attach_error(exc, self.name, tap=self.tap, multi_queue=True,
                                    creating=False, exclusive=False, netns=self.netns) from None
        q = Queue(fd, self.name)
        self.queues.append(q)
        return q

    # --- device settings -------------------------------------------------------------
    def _ioctl(self, what: str, request: int, value: int) -> None:
        try:
            _ioctl_int(self.fileno(), request, value)
        except PermissionError:
            raise PermissionDenied(
                f"{what} on {self.name} needs CAP_NET_ADMIN: run as root"
            ) from None
        except OSError as exc:
            raise DeviceError(f"{what} on {self.name} failed: {exc.strerror}") from None

    def set_persist(self, persist: bool = True) -> None:
        """Keep the interface after the last descriptor closes (or stop keeping it)."""
        self._ioctl("setting persistence", TUNSETPERSIST, 1 if persist else 0)

    def set_owner(self, user: int | str) -> None:
        """Let ``user`` (uid or name) attach without CAP_NET_ADMIN. The kernel has no way
        to clear an owner again short of deleting the device."""
        self._ioctl("setting the owner", TUNSETOWNER, resolve_user(user))

    def set_group(self, group: int | str) -> None:
        """Let members of ``group`` (gid or name) attach without CAP_NET_ADMIN."""
        self._ioctl("setting the group", TUNSETGROUP, resolve_group(group))

    def set_offload(self, flags: int) -> None:
        """TUNSETOFFLOAD with ``TUN_F_*`` flags (needs vnet_hdr for anything but 0)."""
        try:
            _ioctl_int(self.fileno(), TUNSETOFFLOAD, flags)
        except OSError as exc:
            raise DeviceError(
                f"{self.name} does not take offload flags {flags:#x} ({exc.strerror}): "
                "open it with vnet_hdr=True, or ask for fewer offloads"
            ) from None

    def set_vnet_hdr_size(self, size: int) -> None:
        for q in self.queues:
            try:
                fcntl.ioctl(q.fileno(), TUNSETVNETHDRSZ, struct.pack("i", size))
            except OSError as exc:
                raise DeviceError(
                    f"{self.name} does not take a vnet_hdr of {size} bytes ({exc.strerror}): "
                    "use at least 10"
                ) from None
        self.vnet_hdr_size = size

    def flags(self) -> Flags:
        """The flags the kernel reports for this device (TUNGETIFF)."""
        out = fcntl.ioctl(self.fileno(), TUNGETIFF, bytes(_IFREQ.size))
        return Flags(_IFREQ.unpack(out)[1])

    # --- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        for q in self.queues:
            q.close()

    @property
    def closed(self) -> bool:
        return all(q.closed for q in self.queues)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        """Packets as they arrive (blocking)."""
        while True:
            yield self.read()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.queues)} queue(s)"
        where = f" netns={self.netns}" if self.netns else ""
        return f"<Device {self.name} {_mode(self.tap)} pi={self.pi}{where} {state}>"


def open_device(
    name: str = "",
    *,
    tap: bool = False,
    pi: bool = False,
    multi_queue: bool = False,
    queues: int = 1,
    vnet_hdr: bool = False,
    vnet_hdr_size: int = VNET_HDR_LEN,
    offloads: int | None = None,
    blocking: bool = True,
    create: bool = True,
    exclusive: bool = False,
    netns: str | None = None,
) -> Device:
    """Create or attach to a tun (``tap=False``) or tap device and return it open.

    ``name`` is an exact name, a pattern such as ``tun%d``, or ``""`` for the kernel's
    choice; ``Device.name`` is the real one. ``create=False`` only attaches to an existing
    device (NoSuchDevice otherwise); ``exclusive=True`` only creates (DeviceBusy if it
    exists). ``queues > 1`` implies ``multi_queue``. ``pi`` adds the 4-byte packet-info
    header to every packet; ``vnet_hdr`` the virtio_net_hdr (``vnet_hdr_size`` bytes) that
    ``offloads`` (``TUN_F_*``) need. ``blocking=False`` makes reads raise BlockingIOError
    when no packet waits. ``netns`` opens the device inside that named network namespace
    (under /run/netns, as ``link``'s ``netns=``); the descriptors work from here.
    """
    check_name(name)
    if queues < 1:
        raise DeviceError("queues must be at least 1")
    multi_queue = multi_queue or queues > 1
    with in_netns(netns):
        existed = exists(name)
        if not create and not existed:
            where = f" in network namespace {netns}" if netns else ""
            raise NoSuchDevice(
                f"{name or 'the device'} does not exist{where}: create it first "
                f"({'open_tap' if tap else 'open_tun'}({name or 'NAME'!r}), and set_persist() "
                "to keep it)"
            )
        flags = (
            (IFF_TAP if tap else IFF_TUN)
            | (0 if pi else IFF_NO_PI)
            | (IFF_MULTI_QUEUE if multi_queue else 0)
            | (IFF_VNET_HDR if vnet_hdr else 0)
            | (IFF_TUN_EXCL if exclusive else 0)
        )
        fd = _open_clone()
        try:
            out = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
        except OSError as exc:
            os.close(fd)
            raise _attach_error(exc, name, tap=tap, multi_queue=multi_queue,
                                creating=not existed, exclusive=exclusive, netns=netns) from None
    real = _IFREQ.unpack(out)[0].rstrip(b"\0").decode()
    dev = Device(real, [Queue(fd, real)], tap=tap, pi=pi, multi_queue=multi_queue,
                 vnet_hdr_size=vnet_hdr_size if vnet_hdr else None, netns=netns)
    try:
        if vnet_hdr and vnet_hdr_size != VNET_HDR_LEN:
            dev.set_vnet_hdr_size(vnet_hdr_size)
        if offloads is not None:
            dev.set_offload(offloads)
        os.set_blocking(fd, blocking)
        for _ in range(queues - 1):
            dev.add_queue(blocking=blocking)
    except BaseException:
        dev.close()
        raise
    return dev


def open_tun(
    name: str = "",
    *,
    pi: bool = False,
    multi_queue: bool = False,
    queues: int = 1,
    vnet_hdr: bool = False,
    vnet_hdr_size: int = VNET_HDR_LEN,
    offloads: int | None = None,
    blocking: bool = True,
    create: bool = True,
    exclusive: bool = False,
    netns: str | None = None,
) -> Device:
    """A layer-3 device: every read/write is one IP packet. See :func:`open_device`."""
    return open_device(name, tap=False, pi=pi, multi_queue=multi_queue, queues=queues,
                       vnet_hdr=vnet_hdr, vnet_hdr_size=vnet_hdr_size, offloads=offloads,
                       blocking=blocking, create=create, exclusive=exclusive, netns=netns)


def open_tap(
    name: str = "",
    *,
    pi: bool = False,
    multi_queue: bool = False,
    queues: int = 1,
    vnet_hdr: bool = False,
    vnet_hdr_size: int = VNET_HDR_LEN,
    offloads: int | None = None,
    blocking: bool = True,
    create: bool = True,
    exclusive: bool = False,
    netns: str | None = None,
) -> Device:
    """A layer-2 device: every read/write is one Ethernet frame. See :func:`open_device`."""
    return open_device(name, tap=True, pi=pi, multi_queue=multi_queue, queues=queues,
                       vnet_hdr=vnet_hdr, vnet_hdr_size=vnet_hdr_size, offloads=offloads,
                       blocking=blocking, create=create, exclusive=exclusive, netns=netns)


def attach(
    name: str,
    *,
    tap: bool | None = None,
    multi_queue: bool | None = None,
    pi: bool = False,
    queues: int = 1,
    vnet_hdr: bool = False,
    vnet_hdr_size: int = VNET_HDR_LEN,
    offloads: int | None = None,
    blocking: bool = True,
    netns: str | None = None,
) -> Device:
    """Attach to an existing device without creating one (NoSuchDevice if there is none,
    NotTunTap if it is another kind of device); ``tap`` and ``multi_queue`` are taken from
    the device itself when not given. Other keywords as :func:`open_device`."""
    check_name(name, pattern_ok=False)
    if tap is None or multi_queue is None:
        from . import link

        st = link.state(name, netns=netns)
        if st.tun is None:
            raise not_tun_tap(name, link.describe(st))
        tap = st.tun.tap if tap is None else tap
        multi_queue = st.tun.multi_queue if multi_queue is None else multi_queue
    return open_device(name, tap=tap, multi_queue=multi_queue, pi=pi, queues=queues,
                       vnet_hdr=vnet_hdr, vnet_hdr_size=vnet_hdr_size, offloads=offloads,
                       blocking=blocking, create=False, netns=netns)


def delete(name: str, *, netns: str | None = None) -> None:
    """Remove a persistent device, as ``tunctl -d`` / ``ip tuntap del`` do: attach with its
    own flags and clear persistence, so it goes away when the last holder closes."""
    check_name(name, pattern_ok=False)
    with attach(name, netns=netns) as dev:
        dev.set_persist(False)
