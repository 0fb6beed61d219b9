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

__all__ = [
    "BadAddress",
    "BadName",
    "Device",
    "DeviceBusy",
    "DeviceError",
    "DeviceMismatch",
    "NoSuchDevice",
    "NoSuchUser",
    "PacketRejected",
    "PermissionDenied",
    "Queue",
    "SimpletunError",
    "TunUnavailable",
    "attach",
    "delete",
    "errors",
    "link",
    "open_device",
    "open_tap",
    "open_tun",
    "tuntap",
]
