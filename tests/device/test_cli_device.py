"""``simpletun mktun`` / ``deltun`` as a user of tunctl or ``ip tuntap`` would use them."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest
from pyroute2 import IPRoute

from simpletun.cli._common import configure
from simpletun.device import link, tuntap
from simpletun.errors import BadMtu
from simpletun.lab.netns import Namespace

from ..conftest import simpletun
from .test_tuntap import HOLD


def test_mktun_everything(inside: Namespace) -> None:
    done = simpletun("mktun", "stall", "--tap", "--user", "nobody", "--group", "nogroup",
                     "--multi-queue", "--vnet-hdr", "--address", "10.87.0.1/24",
                     "--address", "fd87::1/64", "--mtu", "1420", "--up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("stall: persistent tap, multi-queue, owner 65534, group "
                                   "65534, 10.87.0.1/24, fd87::1/64, mtu 1420, up")
    st = link.state("stall")
    assert st.tun is not None
    assert (st.tun.tap, st.tun.persist, st.tun.multi_queue, st.tun.vnet_hdr) == (
        True, True, True, True)
    assert (st.tun.owner, st.tun.group, st.mtu, st.up) == (65534, 65534, 1420, True)
    assert {ipaddress.ip_interface("10.87.0.1/24"), ipaddress.ip_interface("fd87::1/64")} <= set(
        link.addresses("stall"))
    gone = simpletun("deltun", "stall")
    assert (gone.returncode, gone.stdout.strip()) == (0, "stall: deleted")
    assert not link.exists("stall")


def test_mktun_pattern_and_pi(inside: Namespace) -> None:
    done = simpletun("mktun", "stp%d", "--pi")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stp0: persistent tun, owner -, group -")
    assert link.tun_info("stp0").pi  # type: ignore[union-attr]
    assert simpletun("deltun", "stp0").returncode == 0


def test_mktun_existing_is_refused(inside: Namespace) -> None:
    assert simpletun("mktun", "stdup").returncode == 0
    try:
        again = simpletun("mktun", "stdup")
        assert again.returncode == 1
        assert again.stderr.strip() == ("simpletun: stdup already exists: delete it first "
                                        "(simpletun deltun stdup) or choose another name")
    finally:
        simpletun("deltun", "stdup")


def test_mktun_failure_leaves_nothing_behind(inside: Namespace) -> None:
    done = simpletun("mktun", "sthalf", "--address", "10.86.0.1/24", "--address", "10.86.0.1/24")
    assert done.returncode == 1
    assert done.stderr.strip() == ("simpletun: adding 10.86.0.1/24 to sthalf: sthalf already "
                                   "has that address")
    assert not link.exists("sthalf")


def test_deltun_errors(inside: Namespace) -> None:
    missing = simpletun("deltun", "stnothere")
    assert (missing.returncode, missing.stderr.strip()) == (
        1, "simpletun: no interface named stnothere")
    with IPRoute() as ipr:
        ipr.link("add", ifname="stv0", kind="veth", peer={"ifname": "stv1"})
    veth = simpletun("deltun", "stv0")
    assert veth.stderr.strip() == (
        "simpletun: stv0 is a veth device, not a tun/tap device: deltun removes only tun/tap "
        "devices; remove a veth device with: ip link del stv0")
    assert simpletun("mktun", "stheld").returncode == 0
    with tuntap.attach("stheld"):
        busy = simpletun("deltun", "stheld")
        assert busy.returncode == 1
        assert busy.stderr.strip() == (f"simpletun: stheld is in use by pid {os.getpid()} "
                                       f"({_comm()}) (EBUSY): stop that process, then run "
                                       "deltun again")
    assert simpletun("deltun", "stheld").stdout.strip() == "stheld: deleted"


def _comm() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


def test_deltun_refuses_loopback(inside: Namespace) -> None:
    """It advised 'ip link del' on loopback."""
    done = simpletun("deltun", "lo")
    assert (done.returncode, done.stderr.strip()) == (
        1, "simpletun: lo is a loopback device, not a tun/tap device: deltun removes only "
           "tun/tap devices")
    assert link.exists("lo")


def test_tunnel_on_loopback_says_what_lo_is(inside: Namespace) -> None:
    """``-i lo -s`` said "lo exists with other flags than tun"."""
    done = simpletun("-i", "lo", "-s", "-p", "5597", timeout=15)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "simpletun: lo is a loopback device, not a tun/tap device: pick another name")
    assert "Traceback" not in done.stderr


def test_deltun_refuses_a_pattern(inside: Namespace) -> None:
    done = simpletun("deltun", "tun%d")
    assert (done.returncode, done.stderr.strip()) == (
        1, "simpletun: 'tun%d' is a name pattern, not a device name: give the name of one "
           "device, e.g. tun0")


def test_deltun_on_a_held_device_that_is_not_persistent(inside: Namespace) -> None:
    """It said "no longer persistent" with rc 0 though nothing changed: the device is the
    holder's, and goes when the holder exits."""
    holder = inside.popen([sys.executable, "-c", HOLD, "sttemp"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    done = simpletun("deltun", "sttemp")
    comm = os.path.basename(sys.executable)[:15]
    assert (done.returncode, done.stderr.strip(), done.stdout) == (
        1, f"simpletun: sttemp is not persistent: it is held by pid {holder.pid} ({comm}) and "
           "goes away when that process exits; stop it to remove the device", "")
    assert link.exists("sttemp")
    holder.communicate()
    assert not link.exists("sttemp")


def test_mktun_mac(inside: Namespace) -> None:
    done = simpletun("mktun", "stmac", "--tap", "--mac", "02:53:54:00:AB:01", "--up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("stmac: persistent tap, mac 02:53:54:00:ab:01, owner -, "
                                   "group -, up")
    assert link.state("stmac").mac == "02:53:54:00:ab:01"
    assert simpletun("deltun", "stmac").returncode == 0


@pytest.mark.parametrize("args,message", [
    (["--mac", "02:53:54:00:00:01"], "--mac needs a tap device: a tun device (layer 3) has no "
                                     "MAC address; add --tap"),
    (["--tap", "--mac", "01:00:5e:00:00:01"], "01:00:5e:00:00:01 is a multicast address: a "
                                              "device needs a unicast one (first byte even, "
                                              "e.g. 02:53:54:00:00:01)"),
    (["--tap", "--mac", "02:53:54:00:01"], "bad MAC address '02:53:54:00:01': give six hex "
                                           "bytes, e.g. 02:53:54:00:00:01"),
])
def test_mktun_mac_errors(inside: Namespace, args: list[str], message: str) -> None:
    done = simpletun("mktun", "stbadmac", *args)
    assert (done.returncode, done.stderr.strip()) == (1, f"simpletun: {message}")
    assert not link.exists("stbadmac")


def test_mktun_tap_mtu_range(inside: Namespace) -> None:
    """Help says 68..65535, but a tap device takes at most 65521: say so, in one line."""
    done = simpletun("mktun", "stbig", "--tap", "--mtu", "65535")
    assert (done.returncode, done.stderr) == (
        1, "simpletun: MTU 65535 is out of range for stbig (tap): use 68..65521\n")
    assert not link.exists("stbig")
    ok = simpletun("mktun", "stbig", "--tap", "--mtu", "65521")
    assert ok.returncode == 0, ok.stderr
    assert link.state("stbig").mtu == 65521
    assert simpletun("deltun", "stbig").returncode == 0


def test_mtu_below_1280_with_ipv6_is_refused(inside: Namespace) -> None:
    """The IPv6 address was silently lost: addresses went on before the MTU."""
    done = simpletun("mktun", "stsmall", "--mtu", "1000", "--address", "fd86::1/64",
                     "--address", "10.86.1.1/24")
    assert (done.returncode, done.stderr) == (
        1, "simpletun: IPv6 needs an MTU of at least 1280: with --mtu 1000 the kernel would "
           "drop fd86::1/64; use --mtu 1280 or more, or IPv4 addresses only\n")
    assert not link.exists("stsmall")
    # IPv4 only is fine below 1280; at 1280 IPv6 stays
    assert simpletun("mktun", "stsmall", "--mtu", "1000", "--address",
                     "10.86.1.1/24").returncode == 0
    assert simpletun("deltun", "stsmall").returncode == 0
    done = simpletun("mktun", "stsmall", "--mtu", "1280", "--address", "fd86::1/64")
    assert done.returncode == 0, done.stderr
    assert ipaddress.ip_interface("fd86::1/64") in link.addresses("stsmall")
    assert link.state("stsmall").mtu == 1280
    assert simpletun("deltun", "stsmall").returncode == 0


def test_configure_sets_the_mtu_before_the_addresses(inside: Namespace) -> None:
    """A device at MTU 1000 (no IPv6 on it) gets --mtu 1400 and an IPv6 address: the MTU
    goes first, so the address stays."""
    with tuntap.open_tun("storder") as dev:
        link.set_mtu(dev.name, 1000)
        configure(dev.name, [ipaddress.ip_interface("fd85::1/64")], mtu=1400)
        assert ipaddress.ip_interface("fd85::1/64") in link.addresses(dev.name)
        link.set_mtu(dev.name, 1000)  # the address is gone now: the kernel's doing
        with pytest.raises(BadMtu, match="with storder's MTU of 1000 the kernel would drop "
                                         "fd85::2/64"):
            configure(dev.name, [ipaddress.ip_interface("fd85::2/64")])


def test_deltun_multi_queue_while_in_use(inside: Namespace) -> None:
    assert simpletun("mktun", "stmqh", "--multi-queue").returncode == 0
    with tuntap.attach("stmqh"):
        done = simpletun("deltun", "stmqh")
        assert done.stdout.strip() == (
            f"stmqh: no longer persistent; it goes away when pid {os.getpid()} ({_comm()}) "
            "closes it")
    assert not link.exists("stmqh")
