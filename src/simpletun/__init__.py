"""simpletun: Linux tun/tap devices from Python.

    from simpletun import open_tun, link
    with open_tun("tun%d") as dev:
        link.add_address(dev.name, "10.0.0.1/24")
        link.set_up(dev.name)
        packet = dev.read()
"""

from __future__ import annotations

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


def __getattr__(name: str) -> str:
    """``__version__``, looked up when first asked for: importlib.metadata costs the
    long-running tunnel process about 3 MB of peak RSS."""
    if name != "__version__":
        raise AttributeError(f"module 'simpletun' has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("simpletun")
    except metadata.PackageNotFoundError:  # running from a bare tree
        version = "0+unknown"
    globals()["__version__"] = version
    return version

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
