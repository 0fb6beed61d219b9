"""WireGuard's primitives against published vectors, and the handshake against an
independent construction written here straight from the whitepaper (section 5.4): our own
initiation must be consumed by the core, the core's initiation by our own responder, with
the transport keys agreeing both ways."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import ipaddress
import random
import struct
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from simpletun.wireguard import cookie, crypto, keys, messages, noise
from simpletun.wireguard.core import WireGuard

from .wgsim import ipv4

# --- independent primitives (no simpletun code) ---------------------------------------------

_MASK = 0xFFFFFFFF


def _rotl(v: int, c: int) -> int:
    return ((v << c) & _MASK) | (v >> (32 - c))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & _MASK
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _MASK
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & _MASK
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _MASK
    s[b] = _rotl(s[b] ^ s[c], 7)


def ref_hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 as draft-irtf-cfrg-xchacha section 2.2 writes it: 20 rounds, no final
    addition, words 0-3 and 12-15 out."""
    s = [*struct.unpack("<4I", b"expand 32-byte k"), *struct.unpack("<8I", key),
         *struct.unpack("<4I", nonce16)]
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *s[0:4], *s[12:16])


def ref_xseal(key: bytes, nonce24: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return ChaCha20Poly1305(ref_hchacha20(key, nonce24[:16])).encrypt(
        bytes(4) + nonce24[16:], plaintext, aad)


def H(*parts: bytes) -> bytes:
    return hashlib.blake2s(b"".join(parts)).digest()


def MAC(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def HMAC(key: bytes, data: bytes) -> bytes:
    """HMAC written out (RFC 2104) over BLAKE2s, block size 64."""
    k = key.ljust(64, b"\0") if len(key) <= 64 else H(key).ljust(64, b"\0")
    inner = H(bytes(b ^ 0x36 for b in k), data)
    return H(bytes(b ^ 0x5C for b in k), inner)


def KDF(n: int, key: bytes, data: bytes) -> list[bytes]:
    t0 = HMAC(key, data)
    out: list[bytes] = []
    t = b""
    for i in range(1, n + 1):
        t = HMAC(t0, t + bytes([i]))
        out.append(t)
    return out


def DH(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public))


def PUB(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def AEAD(key: bytes, counter: int, plaintext: bytes, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(bytes(4) + struct.pack("<Q", counter), plaintext, aad)


def UNAEAD(key: bytes, counter: int, ciphertext: bytes, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).decrypt(bytes(4) + struct.pack("<Q", counter), ciphertext, aad)


CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"


def tai64n_ref(unix_s: int, nanos: int) -> bytes:
    return struct.pack(">QI", 0x400000000000000A + unix_s, nanos)


# --- vectors --------------------------------------------------------------------------------

def test_hchacha20_draft_vector_2_2_1() -> None:
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    want = bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    assert crypto.hchacha20(key, nonce) == want
    assert ref_hchacha20(key, nonce) == want


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16))
@settings(max_examples=50, deadline=None)
def test_hchacha20_matches_the_reference_rounds(key: bytes, nonce: bytes) -> None:
    assert crypto.hchacha20(key, nonce) == ref_hchacha20(key, nonce)


XPT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
       b"future, sunscreen would be it.")
XAAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
XKEY = bytes(range(0x80, 0xA0))
XNONCE = bytes(range(0x40, 0x58))
XCT = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a8"
    "2f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369"
    "488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e")
XTAG = bytes.fromhex("c0875924c1c7987947deafd8780acf49")


def test_xchacha20_poly1305_draft_vector_a_3_1() -> None:
    sealed = crypto.xseal(XKEY, XNONCE, XPT, XAAD)
    assert sealed == XCT + XTAG
    assert ref_xseal(XKEY, XNONCE, XPT, XAAD) == sealed
    assert crypto.xopen(XKEY, XNONCE, sealed, XAAD) == XPT


def test_xchacha20_poly1305_rejects_tampering() -> None:
    sealed = bytearray(XCT + XTAG)
    sealed[5] ^= 1
    assert crypto.xopen(XKEY, XNONCE, bytes(sealed), XAAD) is None
    assert crypto.xopen(XKEY, XNONCE, XCT + XTAG, XAAD + b"!") is None
    assert crypto.xopen(XKEY, bytes(24), XCT + XTAG, XAAD) is None


def test_blake2s_rfc7693_vector_and_mac() -> None:
    assert crypto.hash_(b"abc") == bytes.fromhex(
        "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    assert crypto.hash_(b"a", b"b", b"c") == crypto.hash_(b"abc")
    assert crypto.mac(b"k" * 32, b"data") == MAC(b"k" * 32, b"data")
    assert len(crypto.mac(b"k" * 32, b"data")) == 16


@given(st.binary(min_size=0, max_size=80), st.binary(max_size=200))
@settings(max_examples=50, deadline=None)
def test_hmac_and_kdfs_match_rfc2104_and_hkdf(key: bytes, data: bytes) -> None:
    assert crypto.hmac(key, data) == HMAC(key, data)
    assert crypto.hmac(key, data) == std_hmac.new(key, data, hashlib.blake2s).digest()
    k1, k2, k3 = KDF(3, key, data)
    assert crypto.kdf1(key, data) == k1
    assert crypto.kdf2(key, data) == (k1, k2)
    assert crypto.kdf3(key, data) == (k1, k2, k3)
    assert len({k1, k2, k3}) == 3


def test_x25519_rfc7748() -> None:
    # section 5.2, first vector
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert crypto.dh(scalar, u) == bytes.fromhex(
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    # section 6.1: Alice and Bob
    a = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    a_pub = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    b_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert keys.public_from_private(a) == a_pub
    assert keys.public_from_private(b) == b_pub
    assert crypto.dh(a, b_pub) == shared == crypto.dh(b, a_pub)


def test_x25519_low_order_point_gives_none() -> None:
    assert crypto.dh(keys.generate_private(), bytes(32)) is None
    one = (1).to_bytes(32, "little")
    assert crypto.dh(keys.generate_private(), one) is None


def test_aead_nonce_layout() -> None:
    assert crypto.nonce(0x0102030405060708) == bytes(4) + bytes.fromhex("0807060504030201")
    k = bytes(range(32))
    assert crypto.seal(k, 7, b"hi", b"ad") == AEAD(k, 7, b"hi", b"ad")
    assert crypto.open_(k, 7, AEAD(k, 7, b"hi", b"ad"), b"ad") == b"hi"
    assert crypto.open_(k, 8, AEAD(k, 7, b"hi", b"ad"), b"ad") is None


def test_constants_and_initial_hashes() -> None:
    assert crypto.CONSTRUCTION == CONSTRUCTION
    assert crypto.IDENTIFIER == IDENTIFIER
    assert H(CONSTRUCTION) == noise.INITIAL_CHAIN
    assert H(H(CONSTRUCTION), IDENTIFIER) == noise.INITIAL_HASH


# --- TAI64N ---------------------------------------------------------------------------------

def test_tai64n_layout() -> None:
    stamp = noise.tai64n(1_700_000_000 * 10**9 + 123_456_789)
    assert len(stamp) == 12
    secs, nanos = struct.unpack(">QI", stamp)
    assert secs == 2**62 + 10 + 1_700_000_000  # wireguard-go's base, 0x400000000000000a
    assert nanos == 123_456_789 & ~0xFFFFFF  # whitened as wireguard-go does
    assert nanos <= 123_456_789 < nanos + 0x1000000
    assert stamp == tai64n_ref(1_700_000_000, 123_456_789 & ~0xFFFFFF)


@given(st.integers(0, 2**40 * 10**9), st.integers(0, 2**40 * 10**9))
@settings(max_examples=100, deadline=None)
def test_tai64n_orders_as_bytes(a: int, b: int) -> None:
    """Replay protection compares timestamps as bytes: that must follow time, except
    within one whitening step."""
    ta, tb = noise.tai64n(a), noise.tai64n(b)
    if a // 10**9 != b // 10**9 or abs(a - b) >= 0x1000000:
        assert (ta < tb) == (a < b)
    else:
        assert (ta <= tb) == (a <= b) or ta == tb


# --- the handshake, from the whitepaper ----------------------------------------------------

@dataclass
class RefInitiator:
    """The initiator's side of section 5.4.2-5.4.5, written out."""

    s_priv: bytes
    r_pub: bytes
    psk: bytes
    e_priv: bytes
    sender: int
    timestamp: bytes
    c: bytes = b""
    h: bytes = b""

    def initiation(self) -> bytes:
        c = H(CONSTRUCTION)
        h = H(c, IDENTIFIER)
        h = H(h, self.r_pub)
        e_pub = PUB(self.e_priv)
        c = KDF(1, c, e_pub)[0]
        h = H(h, e_pub)
        c, k = KDF(2, c, DH(self.e_priv, self.r_pub))
        static = AEAD(k, 0, PUB(self.s_priv), h)
        h = H(h, static)
        c, k = KDF(2, c, DH(self.s_priv, self.r_pub))
        stamp = AEAD(k, 0, self.timestamp, h)
        h = H(h, stamp)
        self.c, self.h = c, h
        body = struct.pack("<BxxxI", 1, self.sender) + e_pub + static + stamp
        mac1 = MAC(H(b"mac1----", self.r_pub), body)
        return body + mac1 + bytes(16)

    def consume_response(self, msg: bytes) -> tuple[bytes, bytes, int]:
        """(send key, receive key, the responder's index)."""
        assert len(msg) == 92
        t, sender, receiver = struct.unpack_from("<III", msg)
        assert (t, receiver) == (2, self.sender)
        s_pub = PUB(self.s_priv)
        assert msg[60:76] == MAC(H(b"mac1----", s_pub), msg[:60])
        e_r = msg[12:44]
        c = KDF(1, self.c, e_r)[0]
        h = H(self.h, e_r)
        c = KDF(1, c, DH(self.e_priv, e_r))[0]
        c = KDF(1, c, DH(self.s_priv, e_r))[0]
        c, tau, k = KDF(3, c, self.psk)
        h = H(h, tau)
        assert UNAEAD(k, 0, msg[44:60], h) == b""
        t_send, t_recv = KDF(2, c, b"")
        return t_send, t_recv, sender


@dataclass
class RefResponder:
    s_priv: bytes
    psk: bytes
    e_priv: bytes
    sender: int

    def consume(self, msg: bytes) -> tuple[bytes, bytes, bytes, bytes, int]:
        """(initiator's static, timestamp, chain, hash, initiator's index)."""
        assert len(msg) == 148
        t, sender = struct.unpack_from("<II", msg)
        assert t == 1
        s_pub = PUB(self.s_priv)
        assert msg[116:132] == MAC(H(b"mac1----", s_pub), msg[:116])
        e_i = msg[8:40]
        c = H(CONSTRUCTION)
        h = H(H(c, IDENTIFIER), s_pub)
        c = KDF(1, c, e_i)[0]
        h = H(h, e_i)
        c, k = KDF(2, c, DH(self.s_priv, e_i))
        static = UNAEAD(k, 0, msg[40:88], h)
        h = H(h, msg[40:88])
        c, k = KDF(2, c, DH(self.s_priv, static))
        stamp = UNAEAD(k, 0, msg[88:116], h)
        h = H(h, msg[88:116])
        return static, stamp, c, h, sender

    def response(self, msg: bytes) -> tuple[bytes, bytes, bytes]:
        """(response, send key, receive key) for the initiation ``msg``."""
        static, _stamp, c, h, sender = self.consume(msg)
        e_i = msg[8:40]
        e_pub = PUB(self.e_priv)
        c = KDF(1, c, e_pub)[0]
        h = H(h, e_pub)
        c = KDF(1, c, DH(self.e_priv, e_i))[0]
        c = KDF(1, c, DH(self.e_priv, static))[0]
        c, tau, k = KDF(3, c, self.psk)
        h = H(h, tau)
        empty = AEAD(k, 0, b"", h)
        body = struct.pack("<BxxxII", 2, self.sender, sender) + e_pub + empty
        out = body + MAC(H(b"mac1----", static), body) + bytes(16)
        t_recv, t_send = KDF(2, c, b"")  # the initiator's send is our receive
        return out, t_send, t_recv


def transport(key: bytes, receiver: int, counter: int, packet: bytes) -> bytes:
    pad = (-len(packet)) % 16
    return (struct.pack("<IIQ", 4, receiver, counter)
            + AEAD(key, counter, packet + bytes(pad), b""))


def untransport(key: bytes, msg: bytes) -> tuple[int, int, bytes]:
    t, receiver, counter = struct.unpack_from("<IIQ", msg)
    assert t == 4
    return receiver, counter, UNAEAD(key, counter, msg[16:], b"")


def _core(private: bytes, now: float) -> WireGuard:
    core = WireGuard(wall_offset=1.7e9, rng=random.Random(1))
    core.set_private_key(private)
    return core


def _open(core: WireGuard, msg: bytes, source: tuple[str, int], now: float) -> bytes:
    into = bytearray(max(len(msg), 32))
    n = core.open(memoryview(msg), source, now, memoryview(into))
    return bytes(into[:n])


@pytest.mark.parametrize("psk", [bytes(32), bytes(range(32))])
def test_reference_initiator_against_the_core(psk: bytes) -> None:
    i_priv, r_priv = keys.generate_private(), keys.generate_private()
    core = _core(r_priv, 100.0)
    peer = core.add_peer(PUB(i_priv))
    core.set_preshared(peer, psk)
    core.add_allowed(peer, ipaddress.ip_network("10.0.0.1/32"))
    ref = RefInitiator(i_priv, PUB(r_priv), psk, keys.generate_private(), 0x11223344,
                       tai64n_ref(1_700_000_000, 0))
    assert _open(core, ref.initiation(), ("192.0.2.1", 51820), 100.0) == b""
    assert not core.drops, core.drops
    [(response, to)] = core.outbox
    core.outbox.clear()
    assert to == ("192.0.2.1", 51820)
    t_send, t_recv, r_index = ref.consume_response(bytes(response))
    assert peer.handshake.last_timestamp == ref.timestamp
    # the responder waits for our first message; then both directions work
    assert peer.keypairs.next is not None and peer.keypairs.current is None
    packet = ipv4("10.0.0.1", "10.0.0.2", b"hello from the whitepaper")
    assert _open(core, transport(t_send, r_index, 0, packet), ("192.0.2.1", 51820),
                 100.1) == packet
    assert peer.keypairs.current is not None
    back = ipv4("10.0.0.2", "10.0.0.1", b"and back")
    slot = bytearray(16 + len(back) + 32)
    slot[16:16 + len(back)] = back
    n = core.seal(peer, memoryview(slot), len(back), 100.2)
    receiver, counter, plain = untransport(t_recv, bytes(slot[:n]))
    assert (receiver, counter) == (ref.sender, 0)
    assert plain[:len(back)] == back and len(plain) % 16 == 0


def test_reference_initiation_matches_the_core_byte_for_byte(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the ephemeral key and the timestamp fixed, the core's initiation is the
    whitepaper's, byte for byte (mac1 included)."""
    i_priv, r_priv, e_priv = (keys.generate_private() for _ in range(3))
    stamp = noise.tai64n(1_700_000_123 * 10**9)
    local = noise.Local.of(i_priv)
    hs = noise.Handshake(PUB(r_priv))
    hs.precompute(local)
    monkeypatch.setattr(noise, "generate_private", lambda: e_priv)
    msg = noise.create_initiation(local, hs, 7, stamp)
    assert msg is not None
    cookie.Stamper(PUB(r_priv)).stamp(msg, 0.0)
    ref = RefInitiator(i_priv, PUB(r_priv), bytes(32), e_priv, 7, stamp)
    assert bytes(msg) == ref.initiation()


@pytest.mark.parametrize("psk", [bytes(32), bytes(range(32))])
def test_core_initiator_against_the_reference_responder(psk: bytes) -> None:
    i_priv, r_priv = keys.generate_private(), keys.generate_private()
    now = 200.0
    core = _core(i_priv, now)
    peer = core.add_peer(PUB(r_priv))
    core.set_preshared(peer, psk)
    core.add_allowed(peer, ipaddress.ip_network("10.0.0.2/32"))
    peer.endpoint = ("192.0.2.2", 51820)
    core.initiate(peer, now)
    [(init, to)] = core.outbox
    core.outbox.clear()
    assert to == ("192.0.2.2", 51820)
    ref = RefResponder(r_priv, psk, keys.generate_private(), 0x55667788)
    static, stamp, _c, _h, i_index = ref.consume(bytes(init))
    assert static == PUB(i_priv)
    assert stamp == noise.tai64n(int((now + 1.7e9) * 1e9))
    assert i_index == peer.handshake.local_index
    response, t_send, t_recv = ref.response(bytes(init))
    assert _open(core, response, ("192.0.2.2", 51820), now + 0.1) == b""
    assert not core.drops, core.drops
    # the initiator confirms at once with a keepalive on the new session
    [(keepalive, _to)] = core.outbox
    core.outbox.clear()
    assert len(keepalive) == 32
    assert untransport(t_recv, bytes(keepalive)) == (ref.sender, 0, b"")
    packet = ipv4("10.0.0.2", "10.0.0.1", b"from the reference responder")
    assert _open(core, transport(t_send, i_index, 0, packet), ("192.0.2.2", 51820),
                 now + 0.2) == packet


def test_cookie_reply_against_the_reference() -> None:
    """A cookie reply is XAEAD(HASH("cookie--" || responder public), nonce, cookie, mac1):
    the core's reply opens with our XChaCha; ours is taken by the Stamper."""
    r_pub = PUB(keys.generate_private())
    checker = cookie.Checker(r_pub)
    msg = bytearray(148)
    msg[0] = 1
    stamper = cookie.Stamper(r_pub)
    stamper.stamp(msg, 0.0)
    assert checker.mac1_ok(msg)
    reply = checker.reply(msg, 9, b"192.0.2.1\xca\x6c", 0.0)
    parsed = messages.parse_cookie_reply(reply)
    assert parsed.receiver == 9
    key = H(b"cookie--", r_pub)
    the_cookie = ChaCha20Poly1305(ref_hchacha20(key, parsed.nonce[:16])).decrypt(
        bytes(4) + parsed.nonce[16:], parsed.cookie, bytes(msg[116:132]))
    assert len(the_cookie) == 16
    # our own reply with a cookie of our choosing
    mine = bytes(range(16))
    nonce = bytes(range(24))
    ours = messages.CookieReply(9, nonce, ref_xseal(key, nonce, mine, bytes(msg[116:132])))
    assert stamper.take(ours, 1.0)
    stamper.stamp(msg, 2.0)
    assert bytes(msg[132:148]) == MAC(mine, bytes(msg[:132]))
