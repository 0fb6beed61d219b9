"""Dropping root after set-up: to a user and group, keeping only the capabilities still
needed (none for a tun device whose fd is open; CAP_NET_RAW for the ICMP transport's raw
socket when it must be reopened).

:func:`drop` resolves the names first, then: setgroups to the group alone, PR_SET_KEEPCAPS,
setresgid, setresuid, and the capability sets set to exactly ``keep`` (effective and
permitted; nothing inheritable, no ambient). No dependency: ctypes on libc's ``prctl`` and
``capset``. :func:`parse_status` (pure) reads what /proc/PID/status says about a process's
identity and capabilities, for tests and for the one-line :func:`describe`.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import pwd
from collections.abc import Collection
from dataclasses import dataclass

from ..errors import NoSuchUser, PermissionDenied

CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

#: the names capsh(1) and /proc use, for the capabilities simpletun deals in
NAMES = {CAP_NET_BIND_SERVICE: "cap_net_bind_service", CAP_NET_ADMIN: "cap_net_admin",
         CAP_NET_RAW: "cap_net_raw"}

PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LAST_CAP = 63  # two 32-bit words of version 3


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))


_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Identity:
    """Who to become: resolved ids and the names they came from."""

    uid: int
    gid: int
    user: str
    group: str


def _user(user: str) -> pwd.struct_passwd | int:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    if user.isdigit():
        uid = int(user)
        try:
            return pwd.getpwuid(uid)
        except KeyError:
            return uid  # a bare uid without a name is fine, as for setpriv --reuid
    raise NoSuchUser(f"no user {user!r} on this host: give an existing user name or a uid "
                     "(e.g. nobody)")


def _group(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        pass
    if group.isdigit():
        return int(group)
    raise NoSuchUser(f"no group {group!r} on this host: give an existing group name or a gid "
                     "(e.g. nogroup)")


def resolve(user: str, group: str | None = None) -> Identity:
    """The ids of ``user`` (a name or uid) and ``group`` (a name or gid; default the user's
    own group); :class:`~simpletun.errors.NoSuchUser` names what does not resolve."""
    if not user:
        raise NoSuchUser("no user given: give a user name or uid to run as")
    found = _user(user)
    if isinstance(found, int):
        uid, name, primary = found, str(found), None
    else:
        uid, name, primary = found.pw_uid, found.pw_name, found.pw_gid
    if group is not None:
        gid = _group(group)
    elif primary is not None:
        gid = primary
    else:
        raise NoSuchUser(f"uid {uid} has no entry on this host, so no group of its own: give "
                         "the group too")
    try:
        group_name = grp.getgrgid(gid).gr_name
    except KeyError:
        group_name = str(gid)
    return Identity(uid, gid, name, group_name)


def mask(caps: Collection[int]) -> int:
    """The bit mask of capability numbers (ValueError for one out of range)."""
    bits = 0
    for cap in caps:
        if not 0 <= cap <= _LAST_CAP:
            raise ValueError(f"no capability number {cap}")
        bits |= 1 << cap
    return bits


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                   ctypes.c_ulong(0)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def set_capabilities(keep: Collection[int]) -> None:
    """Set this process's effective and permitted capabilities to exactly ``keep``, the
    inheritable to none, and clear the ambient set. Only lowers what is there: asking for a
    capability not in the permitted set is :class:`~simpletun.errors.PermissionDenied`."""
    bits = mask(keep)
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)(_Data(bits & 0xFFFFFFFF, bits & 0xFFFFFFFF, 0),
                       _Data(bits >> 32, bits >> 32, 0))
    if _libc.capset(ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        names = ", ".join(NAMES.get(c, f"cap_{c}") for c in sorted(keep)) or "none"
        raise PermissionDenied(f"cannot keep capabilities {names} ({os.strerror(code)}): "
                               "the process does not have them; run it as root")
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a kernel without ambient capabilities
            raise


def drop(user: str, group: str | None = None, *, keep: Collection[int] = ()) -> None:
    """Become ``user`` (and ``group``, default the user's own; no supplementary groups but
    it) keeping only the capabilities in ``keep`` (e.g. ``{CAP_NET_RAW}``; none by
    default). Names are resolved before anything changes. Needs root (CAP_SETUID and
    CAP_SETGID, and ``keep`` among the permitted)."""
    who = resolve(user, group)
    bits = mask(keep)
    current = read_status()
    if bits & ~current.cap_prm:
        missing = ", ".join(NAMES.get(c, f"cap_{c}") for c in sorted(keep)
                            if not current.cap_prm >> c & 1)
        raise PermissionDenied(f"cannot keep {missing}: this process does not have it; run it "
                               "as root")
    try:
        os.setgroups([who.gid])
        _prctl(PR_SET_KEEPCAPS, 1)
        os.setresgid(who.gid, who.gid, who.gid)
        os.setresuid(who.uid, who.uid, who.uid)
        _prctl(PR_SET_KEEPCAPS, 0)
    except PermissionError:
        raise PermissionDenied(f"cannot switch to user {who.user} and group {who.group}: "
                               "only root can; run it as root, or without a user to run "
                               "as") from None
    set_capabilities(keep)


@dataclass(frozen=True)
class Status:
    """A process's identity and capabilities, as /proc/PID/status gives them."""

    #: real, effective, saved, filesystem
    uids: tuple[int, ...]
    gids: tuple[int, ...]
    groups: tuple[int, ...]
    cap_inh: int
    cap_prm: int
    cap_eff: int
    cap_bnd: int
    cap_amb: int


def parse_status(text: str) -> Status:
    """The Uid/Gid/Groups/Cap* lines of /proc/PID/status (ValueError if Uid, Gid or CapEff
    is missing; a kernel without ambient capabilities has no CapAmb: 0). Pure."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    for needed in ("Uid", "Gid", "CapEff"):
        if needed not in fields:
            raise ValueError(f"no {needed} line in the status text")

    def ids(key: str) -> tuple[int, ...]:
        return tuple(int(x) for x in fields.get(key, "").split())

    def caps(key: str) -> int:
        return int(fields.get(key, "0"), 16)

    return Status(ids("Uid"), ids("Gid"), ids("Groups"), caps("CapInh"), caps("CapPrm"),
                  caps("CapEff"), caps("CapBnd"), caps("CapAmb"))


def read_status(pid: int | str = "self") -> Status:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        return parse_status(f.read())


def cap_names(bits: int) -> list[str]:
    """The names of the capabilities in ``bits`` (cap_N for those without one here)."""
    return [NAMES.get(c, f"cap_{c}") for c in range(_LAST_CAP + 1) if bits >> c & 1]


def describe(status: Status) -> str:
    """One line: ``uid 65534 gid 65534, capabilities: cap_net_raw`` (effective)."""
    uid = status.uids[1] if len(status.uids) > 1 else -1
    gid = status.gids[1] if len(status.gids) > 1 else -1
    if status.cap_eff and status.cap_eff == status.cap_bnd and len(cap_names(status.cap_eff)) > 3:
        held = "all"  # root's full set: no list of forty names
    else:
        held = ", ".join(cap_names(status.cap_eff)) or "none"
    return f"uid {uid} gid {gid}, capabilities: {held}"
