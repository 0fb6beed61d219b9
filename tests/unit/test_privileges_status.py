"""The pure parts of service.privileges: /proc/PID/status parsed, capability masks, the
one-line description."""

from __future__ import annotations

import pytest

from simpletun.service.privileges import (
    CAP_NET_ADMIN,
    CAP_NET_BIND_SERVICE,
    CAP_NET_RAW,
    Status,
    cap_names,
    describe,
    mask,
    parse_status,
)

# as a process dropped to nobody keeping CAP_NET_RAW shows it (tabs as the kernel writes)
DROPPED = (
    "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4242\n"
    "Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nFDSize:\t64\n"
    "Groups:\t65534 \nNStgid:\t4242\nCapInh:\t0000000000000000\nCapPrm:\t0000000000002000\n"
    "CapEff:\t0000000000002000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n"
    "NoNewPrivs:\t0\n"
)
ROOT = ("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t \nCapInh:\t0000000000000000\n"
        "CapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n"
        "CapAmb:\t0000000000000000\n")


def test_a_dropped_process() -> None:
    st = parse_status(DROPPED)
    assert st == Status(uids=(65534,) * 4, gids=(65534,) * 4, groups=(65534,), cap_inh=0,
                        cap_prm=0x2000, cap_eff=0x2000, cap_bnd=0x1ffffffffff, cap_amb=0)
    assert describe(st) == "uid 65534 gid 65534, capabilities: cap_net_raw"


def test_root_with_every_capability_is_not_a_list_of_forty() -> None:
    st = parse_status(ROOT)
    assert st.groups == ()
    assert describe(st) == "uid 0 gid 0, capabilities: all"


def test_an_old_kernel_without_ambient_capabilities() -> None:
    text = "\n".join(x for x in DROPPED.splitlines() if not x.startswith("CapAmb"))
    assert parse_status(text).cap_amb == 0


@pytest.mark.parametrize("missing", ["Uid", "Gid", "CapEff"])
def test_a_status_without_the_essentials_is_refused(missing: str) -> None:
    text = "\n".join(x for x in DROPPED.splitlines() if not x.startswith(missing + ":"))
    with pytest.raises(ValueError, match=missing):
        parse_status(text)


def test_masks_and_names() -> None:
    assert (CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_NET_RAW) == (10, 12, 13)
    assert mask(()) == 0
    assert mask({CAP_NET_RAW}) == 1 << 13
    assert mask([CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_RAW]) == 0x3000
    assert mask([40]) == 1 << 40
    assert cap_names(0x3400) == ["cap_net_bind_service", "cap_net_admin", "cap_net_raw"]
    assert cap_names(1 << 21) == ["cap_21"]
    for bad in (-1, 64):
        with pytest.raises(ValueError, match=f"no capability number {bad}"):
            mask([bad])
