"""``simpletun mktun`` / ``deltun`` as a user of tunctl or ``ip tuntap`` would use them."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from simpletun.device import link, tuntap
from simpletun.lab.netns import Namespace

from ..conftest import simpletun


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
        "simpletun: stv0 is a veth device, not tun/tap: remove it with ip link del")
    assert simpletun("mktun", "stheld").returncode == 0
    with tuntap.attach("stheld"):
        busy = simpletun("deltun", "stheld")
        assert busy.returncode == 1
        assert busy.stderr.strip() == ("simpletun: stheld is in use by another process "
                                       "(EBUSY): stop that process, then run deltun again")
    assert simpletun("deltun", "stheld").stdout.strip() == "stheld: deleted"


def test_deltun_multi_queue_while_in_use(inside: Namespace) -> None:
    assert simpletun("mktun", "stmqh", "--multi-queue").returncode == 0
    with tuntap.attach("stmqh"):
        done = simpletun("deltun", "stmqh")
        assert done.stdout.strip() == (
            "stmqh: no longer persistent; it goes away when its last user closes it")
    assert not link.exists("stmqh")
