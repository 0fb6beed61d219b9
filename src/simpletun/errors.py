"""One exception type per failure a user can cause, each carrying a one-line message that
says what went wrong and what to do about it.

The command line prints ``str(exc)`` and exits non-zero; library users can catch the
specific type or the common base :class:`SimpletunError`.
"""

from __future__ import annotations


class SimpletunError(Exception):
    """Base of every error simpletun raises on purpose. ``str(exc)`` is one line."""

    exit_code = 1


class TunUnavailable(SimpletunError):
    """``/dev/net/tun`` is missing or cannot be opened."""


class PermissionDenied(SimpletunError):
    """EPERM: no CAP_NET_ADMIN and not the device's owner or group."""


class DeviceBusy(SimpletunError):
    """EBUSY: another process holds a single-queue device."""


class DeviceMismatch(SimpletunError):
    """EINVAL on attach: tun vs tap, multi-queue or not, or not a tun/tap device at all."""


class NoSuchDevice(SimpletunError):
    """The named interface does not exist (where creating it is not wanted)."""


class BadName(SimpletunError):
    """An interface name the kernel would refuse."""


class BadAddress(SimpletunError):
    """An address, prefix or route the user gave cannot be parsed or applied."""


class NoSuchUser(SimpletunError):
    """A user or group name that does not resolve."""


class DeviceError(SimpletunError):
    """Any other failure of a device or netlink operation, with the system's reason."""


class PacketRejected(SimpletunError):
    """The kernel refused a packet written to the device (not an IP packet, too big...)."""


class HandshakeFailed(SimpletunError):
    """The two simpletun peers cannot work together (tun vs tap, MTU, version)."""
