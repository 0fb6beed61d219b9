"""Netlink configuration (pyroute2) against the kernel."""

from __future__ import annotations

import ipaddress

import pytest

from simpletun.device import link, tuntap
from simpletun.errors import BadAddress, NoSuchDevice
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
