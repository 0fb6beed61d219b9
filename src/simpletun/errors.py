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


class NotTunTap(DeviceMismatch):
    """The named interface exists but is not a tun/tap device (loopback, veth, Ethernet...)."""


class NotTap(DeviceMismatch):
    """Something only a tap (Ethernet) device has, such as a MAC address, asked of another
    kind of device."""


class NoSuchDevice(SimpletunError):
    """The named interface does not exist (where creating it is not wanted)."""


class BadName(SimpletunError):
    """An interface name the kernel would refuse."""


class BadAddress(SimpletunError):
    """An address, prefix or route the user gave cannot be parsed or applied."""


class BadMtu(BadAddress):
    """An MTU the device cannot take (tun 68..65535, tap 68..65521), or one too small for
    the IPv6 addresses asked for (IPv6 needs 1280)."""


class BadMac(BadAddress):
    """A MAC address that is malformed, multicast or all zeros."""


class NoSuchUser(SimpletunError):
    """A user or group name that does not resolve."""


class DeviceError(SimpletunError):
    """Any other failure of a device or netlink operation, with the system's reason."""


class DeviceDown(DeviceError):
    """A packet was written to a device that is down (EIO): bring it up first."""


class PacketRejected(SimpletunError):
    """The kernel refused a packet written to the device (not an IP packet, too big...)."""


class HandshakeFailed(SimpletunError):
    """The two simpletun peers cannot work together (tun vs tap, MTU, version)."""


class BadKey(SimpletunError):
    """A WireGuard key that is not 32 bytes in the expected text form (base64 or hex)."""


class ControlSocketError(SimpletunError):
    """The WireGuard control socket (``/var/run/wireguard/IFACE.sock``) cannot be served:
    another process answers on it, or the path cannot be made."""


class ConfigError(SimpletunError):
    """A configuration file that cannot be used: the message names the file, the line and
    the key (``wg0.conf:7: AllowedIPs: ...``)."""


class HookFailed(SimpletunError):
    """A PreUp/PostUp/PreDown/PostDown line of a configuration file failed."""


class TunnelState(SimpletunError):
    """``up`` of a tunnel that is up already, ``down`` of one that is not."""
