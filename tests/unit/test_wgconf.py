"""Configuration files in the wg-quick format (issue 16, part 1): a real wg-quick file and
simpletun's own keys parse; every mistake is one line naming the file, the line and the
key; what :func:`render` writes parses back to the same (hypothesis); and no text makes the
parser fail any other way."""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.config import wgconf
from simpletun.errors import ConfigError
from simpletun.wireguard import keys

PRIV = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PUB2 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
PSK = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="

WG_QUICK = f"""\
# a wg-quick file as people write them
[Interface]
Address = 10.200.100.8/24, fd00::8/64
Address = 10.201.0.8/16
DNS = 10.200.100.1, 1.1.1.1, example.com
PrivateKey = {PRIV}
ListenPort = 51820
FwMark = 0x1234
MTU = 1380
Table = off
PreUp = echo pre-up # comments stay in a hook
PostUp = iptables -A FORWARD -i %i -j ACCEPT; echo 'a=b'
PostDown = iptables -D FORWARD -i %i -j ACCEPT
SaveConfig = true

[Peer]
PublicKey = {PUB}
PresharedKey = {PSK}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = demo.wireguard.com:51820
PersistentKeepalive = 25

[peer]
publickey={PUB2}
allowed ips = 10.0.0.5/32  # spaces inside a value do not matter, as in wg
Endpoint = [2001:db8::1]:51820
PersistentKeepalive = off
"""


def test_a_wg_quick_file_parses_as_wg_quick_reads_it() -> None:
    c = wgconf.parse(WG_QUICK, "wg0.conf")
    it = c.interface
    assert it.private_key == keys.from_base64(PRIV)
    assert [str(a) for a in it.addresses] == ["10.200.100.8/24", "fd00::8/64",
                                              "10.201.0.8/16"]
    assert it.dns == ["10.200.100.1", "1.1.1.1"] and it.dns_search == ["example.com"]
    assert (it.listen_port, it.fwmark, it.mtu, it.table) == (51820, 0x1234, 1380, "off")
    assert it.pre_up == ["echo pre-up # comments stay in a hook"]
    assert it.post_up == ["iptables -A FORWARD -i %i -j ACCEPT; echo 'a=b'"]
    assert it.post_down == ["iptables -D FORWARD -i %i -j ACCEPT"] and it.pre_down == []
    assert it.save_config is True
    assert (it.transport, it.tap, it.workers, it.wire) == ("udp", False, None, "wireguard")
    first, second = c.peers
    assert first.public_key == keys.from_base64(PUB)
    assert first.preshared_key == keys.from_base64(PSK)
    assert [str(n) for n in first.allowed_ips] == ["0.0.0.0/0", "::/0"]
    assert first.endpoint == ("demo.wireguard.com", 51820)
    assert first.persistent_keepalive == 25 and first.line == 16
    assert second.public_key == keys.from_base64(PUB2)
    assert [str(n) for n in second.allowed_ips] == ["10.0.0.5/32"]
    assert second.endpoint == ("2001:db8::1", 51820)
    assert second.persistent_keepalive is None


def test_simpletuns_own_keys() -> None:
    c = wgconf.parse("[Interface]\nTransport = TCP\nTap = yes\n"
                     "Workers = 2\nWire = native\n", "st0.conf")
    it = c.interface
    assert (it.transport, it.tap, it.workers, it.wire) == ("tcp", True, 2, "native")
    assert c.peers == []
    # the plaintext wires: no keys, one peer at most (a client's server)
    c = wgconf.parse("[Interface]\nWire = classic\n[Peer]\nEndpoint = 192.0.2.1:55555\n"
                     "AllowedIPs = 10.0.0.0/24\n", "st0.conf")
    assert c.peers[0].endpoint == ("192.0.2.1", 55555) and c.peers[0].public_key == b""
    for text, says in (
            (f"[Interface]\nWire = native\nPrivateKey = {PRIV}\n", "3: PrivateKey: the "
             "plaintext native wire has no keys: drop it, or use Wire = wireguard"),
            (f"[Interface]\nWire = classic\n[Peer]\nPublicKey = {PUB}\n", "3: PublicKey: the "
             "plaintext classic wire has no keys"),
            (f"[Peer]\nPresharedKey = {PUB}\n[Interface]\nWire = native\n", "1: PresharedKey"),
            ("[Interface]\nWire = native\n[Peer]\nEndpoint = a:1\n[Peer]\nEndpoint = b:1\n",
             "5: [Peer]: the plaintext native wire has one peer"),
            ("[Interface]\n[Peer]\nEndpoint = a:1\n", "2: [Peer]: no PublicKey")):
        with pytest.raises(ConfigError) as caught:
            wgconf.parse(text, "st0.conf")
        assert str(caught.value).startswith(f"st0.conf:{says}"), caught.value


@pytest.mark.parametrize(("text", "line", "says"), [
    ("PrivateKey = x\n", "1: PrivateKey", "outside a section"),
    ("[Interface]\n[Wat]\n", "2: [Wat]", "not a section"),
    ("[Interface]\nPrivateKey\n", "2: 'PrivateKey'", "not KEY = VALUE"),
    ("[Interface]\nPrivateKey = nope\n", "2: PrivateKey", "not a key"),
    ("[Interface]\nListenPort = 70000\n", "2: ListenPort", "0 to 65535"),
    ("[Interface]\nMTU = 20\n", "2: MTU", "68 to 65535"),
    ("[Interface]\nFwMark = banana\n", "2: FwMark", "(or off)"),
    ("[Interface]\nAddress = 10.0.0.1/24, 10.0.0.300/24\n", "2: Address", "'10.0.0.300/24'"),
    ("[Interface]\nSaveConfig = maybe\n", "2: SaveConfig", "not true or false"),
    ("[Interface]\nTransport = sctp\n", "2: Transport", "udp, tcp, icmp"),
    ("[Interface]\nWorkers = 0\n", "2: Workers", "1 to 64"),
    ("[Interface]\nWire = ssh\n", "2: Wire", "wireguard, native, classic"),
    ("[Interface]\nTable =\n", "2: Table", "empty"),
    ("[Interface]\nPublicKey = " + PUB + "\n", "2: PublicKey", "(a [Peer] key)"),
    ("[Interface]\nColour = blue\n", "2: Colour", "not a key of [Interface]"),
    ("[Peer]\nListenPort = 1\n", "2: ListenPort", "(an [Interface] key)"),
    ("[Peer]\nAllowedIPs = 10.0.0.0/33\n", "2: AllowedIPs", "not a network"),
    ("[Peer]\nEndpoint = 192.0.2.1\n", "2: Endpoint", "not HOST:PORT"),
    ("[Peer]\nEndpoint = 2001:db8::1:51820\n", "2: Endpoint", "not HOST:PORT"),
    ("[Peer]\nEndpoint = 192.0.2.1:0\n", "2: Endpoint", "1 to 65535"),
    ("[Peer]\nPersistentKeepalive = -1\n", "2: PersistentKeepalive", "0 to 65535"),
    ("\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n", "3: [Peer]", "no PublicKey"),
    (f"[Peer]\nPublicKey = {PUB}\n[Peer]\nPublicKey = {PUB}\n", "3: [Peer]", "same PublicKey"),
])
def test_every_mistake_names_the_file_the_line_and_the_key(text: str, line: str,
                                                           says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        wgconf.parse(text, "/etc/simpletun/wg0.conf")
    message = str(caught.value)
    assert message.startswith(f"/etc/simpletun/wg0.conf:{line}: "), message
    assert says in message and "\n" not in message


def test_load_reads_the_file_and_says_when_it_cannot(tmp_path: Path) -> None:
    f = tmp_path / "wg0.conf"
    f.write_text(WG_QUICK)
    assert wgconf.load(str(f)).peers[1].endpoint == ("2001:db8::1", 51820)
    with pytest.raises(ConfigError, match=r"nope\.conf: cannot read it: No such file"):
        wgconf.load(str(tmp_path / "nope.conf"))
    f.write_bytes(b"\xff\xfe[Interface]\n")
    with pytest.raises(ConfigError, match="not a text file"):
        wgconf.load(str(f))


_KEYS = st.binary(min_size=32, max_size=32)
_V4 = st.builds(lambda a, p: ipaddress.ip_interface((a, p)),
                st.integers(0, 2**32 - 1), st.integers(0, 32))
_V6 = st.builds(lambda a, p: ipaddress.ip_interface((a, p)),
                st.integers(0, 2**128 - 1), st.integers(0, 128))
_NAME = st.text(string.ascii_lowercase + string.digits + "-.", min_size=1, max_size=20).filter(
    lambda s: not s.replace(".", "").isdigit())
_HOOK = st.text(string.ascii_letters + string.digits + " %;'=/#-", min_size=1,
                max_size=30).map(str.strip).filter(bool)


@st.composite
def configs(draw: st.DrawFn) -> wgconf.Config:
    it = wgconf.Interface(
        private_key=draw(st.none() | _KEYS),
        listen_port=draw(st.none() | st.integers(0, 65535)),
        fwmark=draw(st.none() | st.integers(1, 2**32 - 1)),
        addresses=draw(st.lists(_V4 | _V6, max_size=3)),
        dns=[str(ipaddress.ip_address(a)) for a in draw(st.lists(st.integers(0, 2**32 - 1),
                                                                  max_size=2))],
        dns_search=draw(st.lists(_NAME, max_size=2)),
        mtu=draw(st.none() | st.integers(68, 65535)),
        table=draw(st.none() | st.sampled_from(["off", "auto", "1234", "vpn"])),
        pre_up=draw(st.lists(_HOOK, max_size=2)), post_down=draw(st.lists(_HOOK, max_size=2)),
        save_config=draw(st.booleans()),
        transport=draw(st.sampled_from(wgconf.TRANSPORTS)), tap=draw(st.booleans()),
        workers=draw(st.none() | st.integers(1, 64)),
        wire=draw(st.sampled_from(wgconf.WIRES)),
        user=draw(st.none() | st.sampled_from(["nobody", "simpletun", "65534"])),
        group=draw(st.none() | st.sampled_from(["nogroup", "vpn-users"])),
        metrics=draw(st.none() | st.tuples(st.sampled_from(["127.0.0.1", "::1", "0.0.0.0"]),
                                           st.integers(1, 65535))))
    if it.wire != "wireguard":  # the plaintext wires: no keys, one peer at most
        it.private_key = None
        return wgconf.Config("gen.conf", it, [wgconf.Peer(
            b"", allowed_ips=[a.network for a in draw(st.lists(_V4 | _V6, max_size=3))],
            endpoint=draw(st.none() | st.tuples(st.sampled_from(["192.0.2.1", "vpn.example"]),
                                                st.integers(1, 65535))))
            for _ in range(draw(st.integers(0, 1)))])
    publics = draw(st.lists(_KEYS, max_size=3, unique=True))
    peers = [wgconf.Peer(
        public_key=p, preshared_key=draw(st.none() | _KEYS),
        allowed_ips=[a.network for a in draw(st.lists(_V4 | _V6, max_size=3))],
        endpoint=draw(st.none() | st.tuples(
            st.sampled_from(["192.0.2.1", "2001:db8::1", "vpn.example.com"]),
            st.integers(1, 65535))),
        persistent_keepalive=draw(st.none() | st.integers(1, 65535))) for p in publics]
    return wgconf.Config("gen.conf", it, peers)


@given(configs())
def test_what_render_writes_parses_back_the_same(config: wgconf.Config) -> None:
    again = wgconf.parse(wgconf.render(config), "gen.conf")
    for p in again.peers:
        p.line = 0
    assert again == config


@given(st.text(max_size=300))
def test_no_text_fails_but_with_a_config_error(text: str) -> None:
    try:
        wgconf.parse(text, "fuzz.conf")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.conf:") and "\n" not in str(exc)


@given(st.lists(st.sampled_from(["[Interface]", "[Peer]", f"PublicKey = {PUB}",
                                 f"PrivateKey = {PRIV}", "AllowedIPs = 10.0.0.0/8",
                                 "Address = 10.0.0.1/24", "ListenPort = 1", "# x", "",
                                 "Endpoint = [::1]:5", "MTU=1400", "Workers = 3"]),
                max_size=12))
def test_no_arrangement_of_valid_lines_fails_but_with_a_config_error(lines: list[str]) -> None:
    try:
        wgconf.parse("\n".join(lines), "mix.conf")
    except ConfigError as exc:
        assert str(exc).startswith("mix.conf:")


def test_simpletun_keys_for_running_it() -> None:
    c = wgconf.parse(f"[Interface]\nPrivateKey = {PRIV}\nUser = nobody\nGroup = nogroup\n"
                     "Metrics = [::1]:9586\n", "s.conf")
    assert (c.interface.user, c.interface.group, c.interface.metrics) == \
        ("nobody", "nogroup", ("::1", 9586))
    with pytest.raises(ConfigError, match=r"^s.conf:2: Metrics: '9586' is not HOST:PORT"):
        wgconf.parse("[Interface]\nMetrics = 9586\n", "s.conf")
    with pytest.raises(ConfigError, match=r"^s.conf:2: User: 'a;b' is not a user name"):
        wgconf.parse("[Interface]\nUser = a;b\n", "s.conf")
