"""Linux tun/tap devices: the ioctls on ``/dev/net/tun`` and packet read/write.

Where a packet enters and leaves the program on the device side. A :class:`Device` is one
interface held open by this process, with one file descriptor per queue (one, unless
multi-queue). Everything a user can get wrong is turned into an exception from
:mod:`simpletun.errors` with a one-line message saying what to do.

Address, MTU, up/down and routes are not ioctls here: see :mod:`simpletun.device.link`.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import (
    BadName,
    DeviceBusy,
    DeviceError,
    DeviceMismatch,
    NoSuchDevice,
    NoSuchUser,
    PacketRejected,
    PermissionDenied,
    SimpletunError,
    TunUnavailable,
)

CLONE_DEVICE = "/dev/net/tun"

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
    elif "%" in name and (not pattern_ok or name.count("%") != 1 or "%d" not in name):
        problem = "the only pattern allowed is one '%d', as in tun%d"
    if problem:
        raise BadName(f"bad interface name {name!r}: {problem}")
    return name


def _mode(tap: bool) -> str:
    return "tap" if tap else "tun"


def _ifreq(name: str, flags: int) -> bytes:
    return _IFREQ.pack(name.encode(), flags)


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
            f"(chmod 0666 {CLONE_DEVICE}) and attach to a device made for you with "
            "'simpletun mktun NAME --user YOU'"
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


def _mismatch_message(name: str, tap: bool, multi_queue: bool) -> str:
    """Why attaching to an existing ``name`` gave EINVAL, as precisely as netlink tells."""
    from . import link

    wanted = f"{'multi-queue ' if multi_queue else ''}{_mode(tap)}"
    try:
        info = link.tun_info(name)
    except SimpletunError:
        info = None
    if info is None:
        kind = link.link_kind(name)
        if kind is not None:
            return (
                f"{name} exists but is a {kind} device, not tun/tap: "
                "pick another name or delete it first"
            )
        return (
            f"{name} exists with other flags than {wanted}: open it as it was created "
            "(tun or tap, multi-queue or not)"
        )
    if info.tap != tap:
        fix = "open it as tap (--tap, or -a)" if info.tap else "open it as tun (drop --tap/-a)"
        return (
            f"{name} is a {_mode(info.tap)} device but was opened as {_mode(tap)}: "
            f"{fix}, or delete it and create it again"
        )
    if info.multi_queue != multi_queue:
        have = "multi-queue" if info.multi_queue else "single-queue"
        fix = "open it with multi-queue" if info.multi_queue else "open it without multi-queue"
        return f"{name} is a {have} {_mode(info.tap)} device: {fix}"
    return f"{name} refused the flags asked for ({wanted}): open it as it was created"


def _attach_error(exc: OSError, name: str, *, tap: bool, multi_queue: bool,
                  creating: bool, exclusive: bool) -> SimpletunError:
    shown = name or f"a new {_mode(tap)} device"
    if exc.errno == errno.EPERM:
        if creating:
            return PermissionDenied(
                f"creating {shown} needs CAP_NET_ADMIN: run as root, or have root make a "
                f"persistent device you own (simpletun mktun NAME --user {_whoami()})"
            )
        return PermissionDenied(
            f"not allowed to attach to {name} (EPERM): run as root, or as the user or group "
            f"that owns it (set with: simpletun mktun {name} --user USER)"
        )
    if exc.errno == errno.EBUSY:
        if exclusive:
            return DeviceBusy(
                f"{name} already exists: delete it first (simpletun deltun {name}) "
                "or choose another name"
            )
        return DeviceBusy(
            f"{name} is already attached by another process (EBUSY): stop it, or open with "
            "multi-queue on a multi-queue device"
        )
    if exc.errno == errno.EINVAL and not creating:
        return DeviceMismatch(_mismatch_message(name, tap, multi_queue))
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
        """Write exactly one whole packet; PacketRejected if the kernel refuses it."""
        return self.write_parts(packet)

    def write_parts(self, *parts: bytes | bytearray | memoryview) -> int:
        """Write one packet given in pieces (e.g. a vnet_hdr and the packet) with one
        writev; PacketRejected if the kernel refuses it."""
        try:
            return os.writev(self._fd, parts)
        except OSError as exc:
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
                 multi_queue: bool, vnet_hdr_size: int | None) -> None:
        self.name = name
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
        return self.queues[0].read(size)

    def read_into(self, buf: bytearray | memoryview) -> int:
        return self.queues[0].read_into(buf)

    def read_parts(self, *bufs: bytearray | memoryview) -> int:
        return self.queues[0].read_parts(*bufs)

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        return self.queues[0].write(packet)

    def write_parts(self, *parts: bytes | bytearray | memoryview) -> int:
        return self.queues[0].write_parts(*parts)

    def queue(self, index: int) -> Queue:
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
        fd = _open_clone()
        try:
            fcntl.ioctl(fd, TUNSETIFF, _ifreq(self.name, self._flags))
            if self.vnet_hdr_size is not None and self.vnet_hdr_size != VNET_HDR_LEN:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", self.vnet_hdr_size))
            os.set_blocking(fd, blocking)
        except OSError as exc:
            os.close(fd)
            raise _attach_error(exc, self.name, tap=self.tap, multi_queue=True,
                                creating=False, exclusive=False) from None
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
                "open it with vnet_hdr, or ask for fewer offloads"
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
        return f"<Device {self.name} {_mode(self.tap)} pi={self.pi} {state}>"


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
) -> Device:
    """Create or attach to a tun (``tap=False``) or tap device and return it open.

    ``name`` is an exact name, a pattern such as ``tun%d``, or ``""`` for the kernel's
    choice; ``Device.name`` is the real one. ``create=False`` only attaches to an existing
    device (NoSuchDevice otherwise); ``exclusive=True`` only creates (DeviceBusy if it
    exists). ``queues > 1`` implies ``multi_queue``.
    """
    check_name(name)
    if queues < 1:
        raise DeviceError("queues must be at least 1")
    multi_queue = multi_queue or queues > 1
    existed = exists(name)
    if not create and not existed:
        raise NoSuchDevice(
            f"{name or 'the device'} does not exist: create it first (simpletun mktun "
            f"{name or 'NAME'}{' --tap' if tap else ''})"
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
                            creating=not existed, exclusive=exclusive) from None
    real = _IFREQ.unpack(out)[0].rstrip(b"\0").decode()
    dev = Device(real, [Queue(fd, real)], tap=tap, pi=pi, multi_queue=multi_queue,
                 vnet_hdr_size=vnet_hdr_size if vnet_hdr else None)
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


def open_tun(name: str = "", **options: object) -> Device:
    """A layer-3 device: every read/write is one IP packet. See :func:`open_device`."""
    return open_device(name, tap=False, **options)  # type: ignore[arg-type]


def open_tap(name: str = "", **options: object) -> Device:
    """A layer-2 device: every read/write is one Ethernet frame. See :func:`open_device`."""
    return open_device(name, tap=True, **options)  # type: ignore[arg-type]


def attach(name: str, **options: object) -> Device:
    """Attach to an existing device without creating one; tun/tap and multi-queue are
    taken from the device itself when not given."""
    check_name(name, pattern_ok=False)
    if "tap" not in options or "multi_queue" not in options:
        from . import link

        info = link.tun_info(name)
        if info is None:
            raise DeviceMismatch(f"{name} is not a tun/tap device")
        options.setdefault("tap", info.tap)
        options.setdefault("multi_queue", info.multi_queue)
    return open_device(name, create=False, **options)  # type: ignore[arg-type]


def delete(name: str) -> None:
    """Remove a persistent device, as ``tunctl -d`` / ``ip tuntap del`` do: attach with its
    own flags and clear persistence, so it goes away when the last holder closes."""
    check_name(name, pattern_ok=False)
    with attach(name) as dev:
        dev.set_persist(False)
