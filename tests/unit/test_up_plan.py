"""The pure parts of ``simpletun up``: a file as the UAPI's set=1 request (setconf: what
``wg setconf`` sends, read back by our own UAPI parser), the reload request (``wg
syncconf``'s: sessions of unchanged peers untouched), where each allowed IP is routed,
finding the file, what ``up`` refuses before changing anything, the state file, the full
tunnel's rules and nft text, the hooks and sd_notify."""

from __future__ import annotations

import ipaddress
import os
import socket
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.config import setconf, wgconf
from simpletun.control import status, uapi
from simpletun.device import policy
from simpletun.errors import ConfigError, HookFailed
from simpletun.service import hooks, notify, state
from simpletun.service import plan as service
from simpletun.wireguard import keys

PRIV = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PUB2 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
PSK = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="


def fake_resolve(host: str, port: int) -> tuple[str, int]:
    return {"vpn.example.com": "192.0.2.10"}.get(host, host), port


FILE = f"""[Interface]
PrivateKey = {PRIV}
ListenPort = 51820
Address = 10.0.0.1/24

[Peer]
PublicKey = {PUB}
PresharedKey = {PSK}
AllowedIPs = 10.0.0.2/32, fd00::2/128
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {PUB2}
AllowedIPs = 10.0.0.3/32
"""


def test_a_file_as_wg_setconf_sends_it_byte_for_byte() -> None:
    request = setconf.device_set(wgconf.parse(FILE, "wg0.conf"), fake_resolve)
    text = setconf.format_set(request)
    assert text == (
        "set=1\n"
        f"private_key={keys.clamp(keys.from_base64(PRIV)).hex()}\n"
        "replace_peers=true\n"
        f"public_key={keys.from_base64(PUB).hex()}\n"
        f"preshared_key={keys.from_base64(PSK).hex()}\n"
        "endpoint=192.0.2.10:51820\n"
        "persistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.2/32\n"
        "allowed_ip=fd00::2/128\n"
        f"public_key={keys.from_base64(PUB2).hex()}\n"
        f"preshared_key={'00' * 32}\n"
        "persistent_keepalive_interval=0\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.3/32\n"
        "\n")
    # the listen port is the caller's socket; a full tunnel's mark overrides the file's
    assert request.listen_port is None
    assert setconf.device_set(wgconf.parse(FILE, "x"), fake_resolve, fwmark=51820).fwmark \
        == 51820


_KEY = st.binary(min_size=32, max_size=32)
_NET = st.one_of(
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.integers(0, 2**128 - 1), st.integers(0, 128)))
_PEER = st.builds(
    uapi.PeerSet, public_key=_KEY, remove=st.booleans(), update_only=st.booleans(),
    preshared_key=st.none() | _KEY,
    endpoint=st.none() | st.tuples(st.sampled_from(["192.0.2.1", "2001:db8::1"]),
                                   st.integers(0, 65535)),
    persistent_keepalive=st.none() | st.integers(0, 65535),
    replace_allowed_ips=st.booleans(), allowed_ips=st.lists(_NET, max_size=3))


@given(st.builds(uapi.DeviceSet, private_key=st.none() | _KEY.map(keys.clamp),
                 listen_port=st.none() | st.integers(0, 65535),
                 fwmark=st.none() | st.integers(0, 2**32 - 1), replace_peers=st.booleans(),
                 peers=st.lists(_PEER, max_size=3)))
def test_what_format_set_writes_our_uapi_parser_reads_back(request: uapi.DeviceSet) -> None:
    for p in request.peers:
        if p.remove:  # a removed peer's other fields are not sent
            p.update_only, p.preshared_key, p.endpoint = False, None, None
            p.persistent_keepalive, p.replace_allowed_ips, p.allowed_ips = None, False, []
    text = setconf.format_set(request)
    assert text.startswith("set=1\n") and text.endswith("\n\n")
    assert uapi.parse_set(text[len("set=1\n"):]) == request


def _peers(text: str) -> wgconf.Config:
    return wgconf.parse("[Interface]\n" + f"PrivateKey = {PRIV}\n" + text, "wg0.conf")


def test_a_reload_touches_only_the_peers_that_changed() -> None:
    one = f"[Peer]\nPublicKey = {PUB}\nAllowedIPs = 10.0.0.2/32\nEndpoint = 192.0.2.1:1\n"
    two = f"[Peer]\nPublicKey = {PUB2}\nAllowedIPs = 10.0.0.3/32\n"
    old = _peers(one)
    # the same file, a comment added (the line numbers move): nothing to do
    assert setconf.sync(old, _peers("# moved\n" + one), fake_resolve).peers == []
    # a peer added: that one, whole; the other not mentioned (its session goes on)
    added = setconf.sync(old, _peers(one + two), fake_resolve)
    assert [p.public_key for p in added.peers] == [keys.from_base64(PUB2)]
    assert added.replace_peers is False and added.private_key is None
    # removed
    gone = setconf.sync(_peers(one + two), old, fake_resolve)
    assert [(p.public_key, p.remove) for p in gone.peers] == [(keys.from_base64(PUB2), True)]
    # allowed IPs changed, endpoint not: the peer's roamed endpoint is left alone
    moved = setconf.sync(old, _peers(one.replace("10.0.0.2/32", "10.0.0.2/32, 10.9.0.0/16")),
                         fake_resolve)
    (p,) = moved.peers
    assert p.endpoint is None and p.replace_allowed_ips
    assert [str(n) for n in p.allowed_ips] == ["10.0.0.2/32", "10.9.0.0/16"]
    # the endpoint changed in the file: sent
    (p,) = setconf.sync(old, _peers(one.replace("192.0.2.1:1", "vpn.example.com:2")),
                        fake_resolve).peers
    assert p.endpoint == ("192.0.2.10", 2)
    # what a reload cannot apply
    assert setconf.changed_interface(old, _peers("Address = 10.1.0.1/24\nMTU = 1300\n" + one)
                                     ) == ["Address", "MTU"]


def _routes(allowed: str, extra: str = "") -> service.Routes:
    return service.plan_routes(wgconf.parse(
        f"[Interface]\nPrivateKey = {PRIV}\n{extra}[Peer]\nPublicKey = {PUB}\n"
        f"AllowedIPs = {allowed}\n", "wg0.conf"))


def test_where_each_allowed_ip_is_routed() -> None:
    r = _routes("10.0.0.0/24, 10.0.0.2/32, fd00::/64, 0.0.0.0/0, ::/0")
    # most specific first, as wg-quick adds them; the defaults by policy routing (UDP)
    assert [str(n) for n in r.main] == ["fd00::/64", "10.0.0.2/32", "10.0.0.0/24"]
    assert [str(n) for n in r.full] == ["0.0.0.0/0", "::/0"] and r.halves == []
    # over TCP or ICMP: the halves, the endpoint kept by a host route
    r = _routes("0.0.0.0/0", "Transport = tcp\n")
    assert r.full == [] and [str(n) for n in r.halves] == ["0.0.0.0/1", "128.0.0.0/1"]
    assert _routes("10.0.0.0/24, 0.0.0.0/0", "Table = off\n") == service.Routes()
    r = _routes("10.0.0.0/24, 0.0.0.0/0", "Table = 1234\n")
    assert r.table == 1234 and [str(n) for n in r.in_table] == ["10.0.0.0/24", "0.0.0.0/0"]
    assert r.main == r.full == []
    assert _routes("10.0.0.0/24", "Table = main\n").table == 254
    with pytest.raises(ConfigError, match=r"wg0.conf: Table: 'nosuch' is not a number"):
        _routes("10.0.0.0/24", "Table = nosuch\n")


def test_finding_the_file() -> None:
    assert service.locate("wg0") == ("wg0", "/etc/simpletun/wg0.conf")
    assert service.locate("wg0", "/tmp/c") == ("wg0", "/tmp/c/wg0.conf")
    assert service.locate("./vpn/office.conf") == ("office", "./vpn/office.conf")
    assert service.locate("office.conf") == ("office", "office.conf")
    for bad in ("much-too-long-a-name", "/etc/x/a b.conf", "/etc/x/.conf"):
        with pytest.raises(ConfigError, match="must be 1 to 15 letters"):
            service.locate(bad)


@pytest.mark.parametrize("text, message", [
    ("", r"no PrivateKey: add one"),
    ("Wire = native\nTransport = udp\n", r"^wg0.conf:3: Transport: the plaintext native wire "
     "runs over TCP only"),
    ("Wire = classic\nUser = nobody\n", r"^wg0.conf:3: User: not for the plaintext classic"),
    ("Wire = classic\nTable = 7\n", r"^wg0.conf:3: Table: not for the plaintext classic"),
    (f"PrivateKey = {PRIV}\nTransport = tcp\nWorkers = 2\n", r"^wg0.conf:4: Workers: more "
     "than one runs over UDP only"),
    (f"PrivateKey = {PRIV}\nTap = true\nWorkers = 2\n", r":4: Workers: more than one is for "
     "tun"),
    (f"PrivateKey = {PRIV}\nTransport = icmp\nListenPort = 5\n", r":4: ListenPort: ICMP has "
     "no ports"),
    (f"PrivateKey = {PRIV}\nTransport = tcp\n[Peer]\nPublicKey = {PUB}\nEndpoint = a:1\n"
     f"[Peer]\nPublicKey = {PUB2}\nEndpoint = b:1\n", r"wg0.conf:7: Endpoint: over tcp a "
     "tunnel is a server"),
])
def test_what_up_refuses_before_changing_anything(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        service.check(wgconf.parse("[Interface]\n" + text, "wg0.conf"))


def test_the_plaintext_wires_default_to_tcp_and_route_themselves() -> None:
    c = wgconf.parse("[Interface]\nWire = native\nAddress = 10.0.0.2/24\n[Peer]\n"
                     "Endpoint = 192.0.2.1:55555\nAllowedIPs = 0.0.0.0/0\n", "wg0.conf")
    service.check(c)  # Transport not given: TCP, theirs
    assert service.plan_routes(c) == service.Routes()


def test_the_state_file_round_trips_and_knows_live_processes(tmp_path: str) -> None:
    d = str(tmp_path)
    assert state.load("wg0", d) is None and state.names(d) == []
    st = state.State("wg0", "/etc/simpletun/wg0.conf", state.Process.me(),
                     pre_down=["echo %i"], directory=d)
    st.save()
    st.record({"kind": "device", "name": "wg0"})
    again = state.load("wg0", d)
    assert again == st and state.names(d) == ["wg0"]
    assert oct(os.stat(st.path).st_mode & 0o777) == "0o600"
    assert again is not None and again.supervisor.alive()
    # a pid that is not there, and the same pid started at another time, are not alive
    assert not state.Process(2**22 + 1, 1).alive()
    assert not state.Process(os.getpid(), st.supervisor.start + 1).alive()
    # what is undone leaves the record; a change found not made is forgotten
    st.record({"kind": "dns", "record": "wg0"})
    st.forget()
    st.undone({"kind": "device", "name": "wg0"})
    assert state.load("wg0", d) == st and st.changes == []
    # the first save is exclusive: a second up of the name is refused
    with pytest.raises(FileExistsError):
        state.State("wg0", "x", state.Process.me(), directory=d).create()
    st.remove()
    assert state.load("wg0", d) is None
    state.State("wg0", "x", state.Process.me(), directory=d).create()
    with open(state.path("bad", d), "w") as f:
        f.write("{")
    with pytest.raises(Exception, match=r"bad.json: cannot read it"):
        state.load("bad", d)


def test_the_full_tunnel_rules_and_firewall_text() -> None:
    # just before main's rule, the suppressing one first (ip rule add puts each new rule
    # before the first: wg-quick's two end up so)
    assert [str(r) for r in policy.rules(4, 51820, 32766)] == [
        "ip -4 rule not fwmark 51820 table 51820 priority 32765",
        "ip -4 rule table main suppress_prefixlength 0 priority 32764"]
    assert [r.priority for r in policy.rules(6, 7, 32000)] == [31999, 31998]
    text, tables = policy.firewall("wg0", 51820, [ipaddress.ip_interface("10.0.0.2/24"),
                                                  ipaddress.ip_interface("fd00::2/64")], [4, 6])
    assert tables == ["ip simpletun-wg0", "ip6 simpletun-wg0"]
    assert ('add rule ip simpletun-wg0 preraw iifname != "wg0" ip daddr 10.0.0.2 fib saddr '
            "type != local drop\n") in text
    assert "add rule ip6 simpletun-wg0 preraw iifname != \"wg0\" ip6 daddr fd00::2 " in text
    assert "ip daddr fd00::2" not in text
    assert text.count("ct mark set mark") == 2


def test_hooks_run_in_order_with_the_name_and_stop_on_failure(tmp_path: str) -> None:
    out = os.path.join(str(tmp_path), "out")
    said: list[str] = []
    hooks.run("PostUp", [f"echo a %i >> {out}", f"echo b %i%i >> {out}"], "wg0", said.append)
    with open(out) as f:
        assert f.read() == "a wg0\nb wg0wg0\n"
    assert said == [f"[#] echo a wg0 >> {out}", f"[#] echo b wg0wg0 >> {out}"]
    with pytest.raises(HookFailed, match=r"^PreUp hook failed \(exit status 3\): exit 3$"):
        hooks.run("PreUp", ["exit 3", f"echo never >> {out}"], "wg0", said.append)
    hooks.run("PreDown", ["exit 3", f"echo still >> {out}"], "wg0", said.append, strict=False)
    assert "warning: PreDown hook failed (exit status 3): exit 3" in said
    with open(out) as f:
        assert f.read().endswith("still\n")


@given(st.lists(st.text(string.ascii_letters + "=1_", min_size=1, max_size=20), min_size=1,
                max_size=3))
def test_sd_notify_sends_one_datagram(lines: list[str]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        name = f"\0simpletun-notify-test-{os.getpid()}"
        s.bind(name)
        old = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = "@" + name[1:]
        try:
            assert notify.notify(*lines)
            assert s.recv(4096).decode() == "\n".join(lines)
        finally:
            if old is None:
                del os.environ["NOTIFY_SOCKET"]
            else:
                os.environ["NOTIFY_SOCKET"] = old
    saved = os.environ.pop("NOTIFY_SOCKET", None)
    try:
        assert notify.notify("READY=1") is False  # outside systemd: nothing, no error
    finally:
        if saved is not None:
            os.environ["NOTIFY_SOCKET"] = saved


def test_save_config_reads_the_peers_back_from_get() -> None:
    text = "".join(f"{k}={v}\n" for k, v in [
        ("private_key", "aa" * 32), ("listen_port", "51820"),
        ("public_key", keys.from_base64(PUB).hex()), ("preshared_key", "00" * 32),
        ("protocol_version", "1"), ("endpoint", "[2001:db8::1]:51820"),
        ("last_handshake_time_sec", "0"), ("persistent_keepalive_interval", "25"),
        ("allowed_ip", "10.0.0.2/32"), ("allowed_ip", "fd00::2/128"),
        ("public_key", keys.from_base64(PUB2).hex()),
        ("preshared_key", keys.from_base64(PSK).hex()),
        ("persistent_keepalive_interval", "0"), ("errno", "0")]) + "\n"
    one, two = service.peers_from_status(status.parse_get(text))
    assert one == wgconf.Peer(keys.from_base64(PUB), None,
                              [ipaddress.ip_network("10.0.0.2/32"),
                               ipaddress.ip_network("fd00::2/128")], ("2001:db8::1", 51820), 25)
    assert two == wgconf.Peer(keys.from_base64(PUB2), keys.from_base64(PSK))


def test_a_key_file_others_can_read_is_said(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "wg0.conf")
    with open(path, "w") as f:
        f.write(FILE)
    os.chmod(path, 0o644)
    assert service.exposed(path) == (f"warning: {path} can be read by others (mode 644) and "
                                     f"holds a private key: chmod 600 {path}")
    os.chmod(path, 0o600)
    assert service.exposed(path) is None
    assert service.exposed(path + ".gone") is None
