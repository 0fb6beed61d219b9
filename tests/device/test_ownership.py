"""Owner and group: who may attach to a persistent device without CAP_NET_ADMIN.

The child processes really are unprivileged (setpriv, no capabilities); see users.py.
"""

from __future__ import annotations

import sys

from simpletun.device import link
from simpletun.lab.netns import Namespace

from ..conftest import simpletun
from .users import NOBODY, STRANGER, attach_code, run_as

NOGROUP = 65534


def test_owner_attaches_and_stranger_is_refused(inside: Namespace) -> None:
    made = simpletun("mktun", "stown", "--user", "nobody")
    assert made.returncode == 0, made.stderr
    assert link.tun_info("stown").owner == NOBODY  # type: ignore[union-attr]
    try:
        owner = run_as(NOBODY, NOGROUP, attach_code("stown"))
        assert owner.returncode == 0, owner.stdout + owner.stderr
        assert owner.stdout.startswith(f"attached stown as uid {NOBODY} caps 0000000000000000")

        stranger = run_as(STRANGER, STRANGER, attach_code("stown"))
        assert stranger.returncode == 3, stranger.stdout + stranger.stderr
        assert stranger.stdout.strip() == (
            "PermissionDenied: not allowed to attach to stown (EPERM): run as root, or as the "
            "user or group that owns it (root gives it an owner or group when making it "
            "persistent)"
        )
        # and the command line says the same in one line, without a traceback
        cli = run_as(STRANGER, STRANGER,
                     "import sys; sys.argv = ['simpletun', 'dump', 'stown', '-c', '1']\n"
                     "from simpletun.cli import main; main()")
        assert cli.returncode == 1
        assert cli.stderr.strip() == (
            "simpletun: not allowed to attach to stown (EPERM): run as root, or as the user or "
            "group that owns it (root gives it an owner or group when making it persistent)"
        )
    finally:
        assert simpletun("deltun", "stown").returncode == 0


def test_group_member_attaches(inside: Namespace) -> None:
    made = simpletun("mktun", "stgrp", "--tap", "--group", str(NOGROUP))
    assert made.returncode == 0, made.stderr
    try:
        member = run_as(STRANGER, NOGROUP, attach_code("stgrp", tap=True))
        assert member.returncode == 0, member.stdout + member.stderr
        outsider = run_as(STRANGER, STRANGER, attach_code("stgrp", tap=True))
        assert outsider.returncode == 3
        assert "not allowed to attach to stgrp (EPERM)" in outsider.stdout
    finally:
        simpletun("deltun", "stgrp")


def test_unprivileged_user_cannot_create(inside: Namespace) -> None:
    child = run_as(NOBODY, NOGROUP, attach_code("stnew", create=True))
    assert child.returncode == 3
    assert child.stdout.strip() == (
        "PermissionDenied: creating stnew needs CAP_NET_ADMIN: run as root, or have root make "
        "a persistent device owned by nobody and attach to that"
    )
    assert not link.exists("stnew")


def test_clone_device_closed_to_user(inside: Namespace) -> None:
    """Without a world-usable /dev/net/tun (as on this machine) the message says so."""
    child = run_as(NOBODY, NOGROUP, attach_code("stx", create=True), world_usable_tun=False)
    assert child.returncode == 3, child.stdout + child.stderr
    assert child.stdout.startswith(
        "TunUnavailable: cannot open /dev/net/tun (permission denied): run as root")
    assert sys.executable  # the child ran the same interpreter
