"""Netlink configuration (pyroute2) against the kernel."""

from __future__ import annotations

import ipaddress

import pytest

from simpletun.device import link, tuntap
from simpletun.errors import BadAddress, BadMac, BadMtu, NoSuchDevice, NotTap
from simpletun.lab.netns import Lab, Namespace


def test_addresses_mtu_state_routes(inside: Namespace) -> None:
    with tuntap.open_tun("stlink"):
        link.add_address("stlink", "10.90.0.1/24")
        link.add_address("stlink", "fd90::1/64", nodad=True)
        got = set(link.addresses("stlink"))
        assert {ipaddress.ip_interface("10.90.0.1/24"),
                ipaddress.ip_interface("fd90::1/64")} <= got
        link.set_mtu("stlink", 1400)
        link.set_up("stlink")
        st = link.state("stlink")
        assert (st.up, st.mtu, st.kind) == (True, 1400, "tun")
        assert st.tun is not None and not st.tun.tap
        assert "rx_packets" in st.counters and "tx_bytes" in st.counters

        link.add_route("10.91.0.0/16", "stlink")
        link.add_route("fd91::/48", "stlink")
        routes = {str(r) for r in link.routes("stlink")}
        assert {"10.90.0.0/24", "10.91.0.0/16", "fd91::/48"} <= routes
        with pytest.raises(BadAddress, match="that route exists already"):
            link.add_route("10.91.0.0/16", "stlink")
        link.del_route("10.91.0.0/16", "stlink")
        assert "10.91.0.0/16" not in {str(r) for r in link.routes("stlink")}

        with pytest.raises(BadAddress, match="stlink already has that address"):
            link.add_address("stlink", "10.90.0.1/24")
        link.del_address("stlink", "10.90.0.1/24")
        with pytest.raises(BadAddress, match="does not have that address"):
            link.del_address("stlink", "10.90.0.1/24")

        link.set_down("stlink")
        assert not link.state("stlink").up


def test_errors_name_the_problem(inside: Namespace) -> None:
    with pytest.raises(NoSuchDevice, match="no interface named stmissing"):
        link.set_up("stmissing")
    with pytest.raises(BadAddress, match="MTU 20 is out of range"):
        link.set_mtu("lo", 20)
    with pytest.raises(NoSuchDevice, match="no network namespace named 'st-no-such-ns'"):
        link.addresses("lo", netns="st-no-such-ns")
    assert link.tun_info("lo") is None
    assert link.link_kind("lo") is None


def test_targets_another_namespace_from_outside(lab: Lab) -> None:
    """Configure a device inside a namespace without entering it."""
    ns = lab.host("target")
    created = ns.run(["ip", "tuntap", "add", "sttarget", "mode", "tun"])
    assert created.returncode == 0, created.stderr
    link.add_address("sttarget", "10.89.0.1/24", netns=ns.name)
    link.set_mtu("sttarget", 1300, netns=ns.name)
    link.set_up("sttarget", netns=ns.name)
    link.add_route("10.88.0.0/24", "sttarget", netns=ns.name)
    st = link.state("sttarget", netns=ns.name)
    assert (st.up, st.mtu) == (True, 1300)
    assert st.tun is not None and st.tun.persist
    assert ipaddress.ip_interface("10.89.0.1/24") in link.addresses("sttarget", netns=ns.name)
    assert ipaddress.ip_network("10.88.0.0/24") in link.routes("sttarget", netns=ns.name)
    assert not link.exists("sttarget")  # and nothing of it out here


def test_mtu_range_is_the_devices_own(inside: Namespace) -> None:
    """tap takes at most 65521 (the kernel's limit), tun 65535; the error names the range
    of this device and is one line."""
    with tuntap.open_tun("strtun"), tuntap.open_tap("strtap"):
        assert link.state("strtun").mtu_range == (68, 65535)
        assert link.state("strtap").mtu_range == (68, 65521)
        link.set_mtu("strtun", 65535)
        link.set_mtu("strtap", 65521)
        with pytest.raises(BadMtu) as exc:
            link.set_mtu("strtap", 65535)
        assert str(exc.value) == "MTU 65535 is out of range for strtap (tap): use 68..65521"
        with pytest.raises(BadMtu, match=r"out of range for strtun \(tun\): use 68\.\.65535"):
            link.set_mtu("strtun", 67)
        assert isinstance(exc.value, BadAddress)  # what set_mtu raised before


def test_what_kind_of_device(inside: Namespace) -> None:
    with tuntap.open_tun("stk1"), tuntap.open_tap("stk2", multi_queue=True):
        assert link.kind_of("stk1") == "tun"
        assert link.kind_of("stk2") == "multi-queue tap"
        assert link.kind_of("lo") == "loopback"
        assert link.kind_of("stnothere") is None


def test_set_mac_on_tap(inside: Namespace) -> None:
    with tuntap.open_tap("stmac"), tuntap.open_tun("stnomac"):
        assert link.set_mac("stmac", "02:53:54:0A:0b:0c") == "02:53:54:0a:0b:0c"
        assert link.state("stmac").mac == "02:53:54:0a:0b:0c"
        link.set_mac("stmac", bytes.fromhex("025354000099"))
        assert link.state("stmac").mac == "02:53:54:00:00:99"
        with pytest.raises(NotTap) as exc:
            link.set_mac("stnomac", "02:53:54:00:00:01")
        assert str(exc.value) == ("stnomac is a tun device and has no MAC address (layer 3): "
                                  "only a tap device has one")
        with pytest.raises(NotTap, match="lo is a loopback device and has no MAC address"):
            link.set_mac("lo", "02:53:54:00:00:01")
        with pytest.raises(BadMac, match="01:00:5e:00:00:01 is a multicast address"):
            link.set_mac("stmac", "01:00:5e:00:00:01")
        with pytest.raises(BadMac, match="ff:ff:ff:ff:ff:ff is a multicast address"):
            link.set_mac("stmac", "ff:ff:ff:ff:ff:ff")
        for bad in ("02:53:54:00:00", "02:53:54:00:00:zz", "0253.5400.0001", "02:53:54:00:00:001"):
            with pytest.raises(BadMac, match=f"bad MAC address '{bad}': give six hex bytes"):
                link.set_mac("stmac", bad)
        with pytest.raises(BadMac, match="not a usable address"):
            link.set_mac("stmac", "00:00:00:00:00:00")
        with pytest.raises(NoSuchDevice):
            link.set_mac("stnothere", "02:53:54:00:00:01")
        assert link.state("stmac").mac == "02:53:54:00:00:99"  # untouched by the failures
