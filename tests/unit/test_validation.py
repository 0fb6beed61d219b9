"""Names, addresses and command-line input are checked before anything is touched."""

import subprocess
import sys

import pytest

from simpletun.device import link, tuntap
from simpletun.errors import BadAddress, BadMac, BadName, NoSuchUser


@pytest.mark.parametrize("name", ["tun0", "tap%d", "", "a" * 15, "my-tun_1.2"])
def test_good_names(name: str) -> None:
    assert tuntap.check_name(name) == name


@pytest.mark.parametrize("name,why", [
    ("a" * 16, "at most 15 fit"),
    ("tun/0", "'/'"),
    ("tun 0", "white space"),
    ("tun:0", "':'"),
    (".", "reserved"),
    ("tun%s", "one '%d'"),
    ("t%d%d", "one '%d'"),
])
def test_bad_names(name: str, why: str) -> None:
    with pytest.raises(BadName, match=why):
        tuntap.check_name(name)


def test_pattern_refused_where_a_real_name_is_needed() -> None:
    """It said "the only pattern allowed is one '%d', as in tun%d" of tun%d itself."""
    with pytest.raises(BadName) as exc:
        tuntap.check_name("tun%d", pattern_ok=False)
    assert str(exc.value) == ("'tun%d' is a name pattern, not a device name: give the name of "
                              "one device, e.g. tun0")
    with pytest.raises(BadName, match="the only pattern allowed"):
        tuntap.check_name("tun%s", pattern_ok=False)


@pytest.mark.parametrize("text,raw", [
    ("02:53:54:00:00:01", "025354000001"),
    ("2-53-54-A-b-1", "0253540a0b01"),
    (bytes.fromhex("fe0000000001"), "fe0000000001"),
])
def test_good_macs(text: str | bytes, raw: str) -> None:
    assert link.parse_mac(text).hex() == raw


@pytest.mark.parametrize("text,why", [
    ("02:53:54:00:00", "bad MAC address '02:53:54:00:00': give six hex bytes"),
    ("02:53:54:00:00:0g", "give six hex bytes"),
    ("0253.5400.0001", "give six hex bytes"),
    ("02:53:54:00:00: 1", "give six hex bytes"),
    (b"\x02\x53", "it must be 6 bytes, not 2"),
    ("03:00:00:00:00:01", "03:00:00:00:00:01 is a multicast address: a device needs a unicast"),
    ("ff:ff:ff:ff:ff:ff", "is a multicast address"),
    ("00:00:00:00:00:00", "is not a usable address"),
])
def test_bad_macs(text: str | bytes, why: str) -> None:
    with pytest.raises(BadMac, match=why):
        link.parse_mac(text)


def test_addresses() -> None:
    assert str(link.parse_interface("10.0.0.1/24")) == "10.0.0.1/24"
    assert str(link.parse_interface("fd00::1/64")) == "fd00::1/64"
    with pytest.raises(BadAddress, match=r"e\.g\. 10\.0\.0\.1/24"):
        link.parse_interface("10.0.0.300/24")
    assert str(link.parse_network("10.1.0.0/16")) == "10.1.0.0/16"
    with pytest.raises(BadAddress, match="host bits set"):
        link.parse_network("10.1.0.1/16")


def test_users_and_groups() -> None:
    assert tuntap.resolve_user("root") == 0
    assert tuntap.resolve_user("1234") == 1234
    assert tuntap.resolve_group(0) == 0
    with pytest.raises(NoSuchUser, match="no user named 'no-such-user-x'"):
        tuntap.resolve_user("no-such-user-x")
    with pytest.raises(NoSuchUser, match="no group named"):
        tuntap.resolve_group("no-such-group-x")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simpletun", *args], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("args,message", [
    (["mktun", "tun0", "--address", "10.0.0.300/24"], "simpletun: bad address '10.0.0.300/24'"),
    (["mktun", "x" * 20], "simpletun: bad interface name"),
    (["mktun", "tun0", "--user", "no-such-user-x"], "simpletun: no user named"),
    (["respond", "tun0", "--mac", "01:00:00:00:00:01"], "multicast"),
    (["dump", "bad/name"], "simpletun: bad interface name"),
])
def test_cli_errors_are_one_line(args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    if done.returncode == 1:
        assert len(done.stderr.strip().splitlines()) == 1


def test_help_lists_commands() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("mktun", "deltun", "dump", "respond", "selftest"):
        assert command in done.stdout


def test_public_api() -> None:
    import simpletun

    assert simpletun.__file__  # a regular package, so a wheel ships it
    for name in ("Device", "open_tun", "open_tap", "open_device", "attach", "delete", "link",
                 "SimpletunError", "DeviceBusy", "PermissionDenied", "TunUnavailable"):
        assert hasattr(simpletun, name), name
