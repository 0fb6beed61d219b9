"""service.privileges.drop for real: a forked child drops root, and its /proc status (read
by the parent while the child waits) says exactly who it became and what it kept; what it
can still do is tried too (a raw ICMP socket needs CAP_NET_RAW)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection

import pytest

from simpletun.errors import NoSuchUser, PermissionDenied, SimpletunError
from simpletun.service import privileges
from simpletun.service.privileges import CAP_NET_ADMIN, CAP_NET_RAW, Status

from .users import NOBODY, STRANGER

NOGROUP = 65534


def raw_icmp() -> str:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return "raw:refused"
    return "raw:opened"


def regain_root() -> str:
    try:
        os.setuid(0)
    except PermissionError:
        return "root:refused"
    return "root:regained"


def dropped_child(user: str, group: str | None = None, keep: Collection[int] = (),
                  then: Callable[[], str] | None = None) -> tuple[str, Status]:
    """Fork; the child drops (and runs ``then``), reports, and waits until the parent has
    read its /proc status. Returns (the child's report, its status)."""
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(report_r)
            os.close(go_w)
            try:
                privileges.drop(user, group, keep=keep)
                words = ["dropped"]
                if then is not None:
                    words.append(then())
                report = " ".join(words)
            except SimpletunError as exc:
                report = f"{type(exc).__name__}: {exc}"
            os.write(report_w, report.encode())
            os.close(report_w)
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(report_w)
    os.close(go_r)
    try:
        chunks = []
        while chunk := os.read(report_r, 4096):
            chunks.append(chunk)
        status = privileges.read_status(pid)
    finally:
        os.close(report_r)
        os.write(go_w, b"x")
        os.close(go_w)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode(), status


def test_drop_to_nobody_keeping_net_raw() -> None:
    report, st = dropped_child("nobody", keep={CAP_NET_RAW},
                               then=lambda: f"{raw_icmp()} {regain_root()}")
    assert report == "dropped raw:opened root:refused"
    assert st.uids == (NOBODY,) * 4
    assert st.gids == (NOGROUP,) * 4
    assert st.groups == (NOGROUP,)
    assert st.cap_eff == st.cap_prm == 1 << 13
    assert st.cap_inh == 0
    assert st.cap_amb == 0
    assert privileges.describe(st) == f"uid {NOBODY} gid {NOGROUP}, capabilities: cap_net_raw"


def test_drop_keeping_nothing_leaves_no_capability() -> None:
    report, st = dropped_child("nobody", then=lambda: f"{raw_icmp()} {regain_root()}")
    assert report == "dropped raw:refused root:refused"
    assert st.uids == (NOBODY,) * 4
    assert (st.cap_eff, st.cap_prm, st.cap_inh, st.cap_amb) == (0, 0, 0, 0)
    assert privileges.describe(st).endswith("capabilities: none")


def test_a_uid_and_group_without_names() -> None:
    report, st = dropped_child(str(STRANGER), str(STRANGER), keep=[CAP_NET_ADMIN, CAP_NET_RAW])
    assert report == "dropped"
    assert st.uids == (STRANGER,) * 4 and st.gids == (STRANGER,) * 4
    assert st.groups == (STRANGER,)
    assert st.cap_eff == st.cap_prm == (1 << 12) | (1 << 13)


def test_once_dropped_there_is_no_way_back() -> None:
    def again() -> str:
        outcomes = []
        for attempt in (lambda: privileges.drop("root"),
                        lambda: privileges.set_capabilities({CAP_NET_RAW})):
            try:
                attempt()
                outcomes.append("done")
            except PermissionDenied as exc:
                outcomes.append(str(exc))
        return " | ".join(outcomes)

    report, st = dropped_child("nobody", then=again)
    assert report == (
        "dropped cannot switch to user root and group root: only root can; run it as root, "
        "or without a user to run as | cannot keep capabilities cap_net_raw (Operation not "
        "permitted): the process does not have them; run it as root")
    assert st.uids == (NOBODY,) * 4 and st.cap_eff == 0


@pytest.mark.parametrize("user,group,message", [
    ("no-such-user-x", None, "no user 'no-such-user-x' on this host: give an existing user "
                             "name or a uid (e.g. nobody)"),
    ("nobody", "no-such-group-x", "no group 'no-such-group-x' on this host: give an existing "
                                  "group name or a gid (e.g. nogroup)"),
    (str(STRANGER), None, f"uid {STRANGER} has no entry on this host, so no group of its own: "
                          "give the group too"),
])
def test_a_name_that_does_not_resolve_is_one_line_and_changes_nothing(
        user: str, group: str | None, message: str) -> None:
    before = privileges.read_status()
    with pytest.raises(NoSuchUser) as caught:
        privileges.drop(user, group, keep={CAP_NET_RAW})
    assert str(caught.value) == message
    assert privileges.read_status() == before  # still root, every capability


def test_keeping_what_the_process_lacks_is_refused_before_anything_changes() -> None:
    def lacking() -> str:
        try:
            privileges.drop("nobody", keep={CAP_NET_ADMIN})
        except PermissionDenied as exc:
            return str(exc)
        return "dropped anyway"

    # a first drop keeps CAP_NET_RAW only; the second asks for CAP_NET_ADMIN
    report, st = dropped_child("nobody", keep={CAP_NET_RAW}, then=lacking)
    assert report == ("dropped cannot keep cap_net_admin: this process does not have it; "
                      "run it as root")
    assert st.cap_eff == 1 << 13
