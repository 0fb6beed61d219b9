"""simpletun: Linux tun/tap devices from Python.

    from simpletun import open_tun, link
    with open_tun("tun%d") as dev:
        link.add_address(dev.name, "10.0.0.1/24")
        link.set_up(dev.name)
        packet = dev.read()
"""

from __future__ import annotations

from importlib import metadata as _metadata

from . import errors
from .device import link, tuntap
from .device.tuntap import Device, Queue, attach, delete, open_device, open_tap, open_tun
from .errors import (
    BadAddress,
    BadMac,
    BadMtu,
    BadName,
    DeviceBusy,
    DeviceDown,
    DeviceError,
    DeviceMismatch,
    NoSuchDevice,
    NoSuchUser,
    NotTap,
    NotTunTap,
    PacketRejected,
    PermissionDenied,
    SimpletunError,
    TunUnavailable,
)


def _version() -> str:
    """The installed distribution's version; "0+unknown" when running from a bare tree."""
    try:
        return _metadata.version("simpletun")
    except _metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

__all__ = [
    "BadAddress",
    "BadMac",
    "BadMtu",
    "BadName",
    "Device",
    "DeviceBusy",
    "DeviceDown",
    "DeviceError",
    "DeviceMismatch",
    "NoSuchDevice",
    "NoSuchUser",
    "NotTap",
    "NotTunTap",
    "PacketRejected",
    "PermissionDenied",
    "Queue",
    "SimpletunError",
    "TunUnavailable",
    "__version__",
    "attach",
    "delete",
    "errors",
    "link",
    "open_device",
    "open_tap",
    "open_tun",
    "tuntap",
]
