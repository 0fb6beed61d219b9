"""WireGuard's primitives (whitepaper section 5.4), from ``hashlib`` and ``cryptography``:
HASH (BLAKE2s-256), MAC (keyed BLAKE2s-128), HMAC-BLAKE2s, HKDF (KDF1/2/3), X25519,
ChaCha20-Poly1305 with WireGuard's nonce, and XChaCha20-Poly1305 for cookie replies (HChaCha20
derived from one ChaCha20 keystream block: no primitive of our own)."""

from __future__ import annotations

import hashlib
import hmac as _hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .keys import KEY_LEN

__all__ = ["InvalidTag"]

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
TAG_LEN = 16
ZERO_KEY = bytes(KEY_LEN)  # an unset pre-shared key
_NONCE_PAD = b"\0\0\0\0"


def hash_(*parts: bytes) -> bytes:
    """HASH: BLAKE2s-256 of the concatenation of ``parts``."""
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """MAC: keyed BLAKE2s with a 16-byte digest."""
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    return _hmac.new(key, data, hashlib.blake2s).digest()


def kdf1(key: bytes, data: bytes) -> bytes:
    t0 = hmac(key, data)
    return hmac(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    return t1, hmac(t0, t1 + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    t2 = hmac(t0, t1 + b"\x02")
    return t1, t2, hmac(t0, t2 + b"\x03")


def dh(private: bytes, peer_public: bytes) -> bytes | None:
    """X25519; None for a public key that gives the all-zero secret (a low-order point)."""
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        return None


def nonce(counter: int) -> bytes:
    """WireGuard's AEAD nonce: 4 zero bytes and the 64-bit little-endian counter."""
    return _NONCE_PAD + counter.to_bytes(8, "little")


def seal(key: bytes, counter: int, plaintext: bytes, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(nonce(counter), plaintext, aad)


def open_(key: bytes, counter: int, ciphertext: bytes | memoryview, aad: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not verify."""
    try:
        return ChaCha20Poly1305(key).decrypt(nonce(counter), bytes(ciphertext), aad)
    except InvalidTag:
        return None


_SIGMA = struct.unpack("<4I", b"expand 32-byte k")


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (RFC draft-irtf-cfrg-xchacha section 2.2). A ChaCha20 keystream block is
    the state after 20 rounds plus the initial state; with the 16-byte nonce as counter and
    nonce words, subtracting the known words (constants, counter+nonce) leaves HChaCha20's
    output words."""
    block = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(bytes(64))
    words = struct.unpack("<16I", block)
    n = struct.unpack("<4I", nonce16)
    out = [(words[i] - _SIGMA[i]) & 0xFFFFFFFF for i in range(4)]
    out += [(words[12 + i] - n[i]) & 0xFFFFFFFF for i in range(4)]
    return struct.pack("<8I", *out)


def xseal(key: bytes, nonce24: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305: HChaCha20 subkey, then ChaCha20-Poly1305 on the last 8 nonce
    bytes."""
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(_NONCE_PAD + nonce24[16:], plaintext, aad)


def xopen(key: bytes, nonce24: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    sub = hchacha20(key, nonce24[:16])
    try:
        return ChaCha20Poly1305(sub).decrypt(_NONCE_PAD + nonce24[16:], ciphertext, aad)
    except InvalidTag:
        return None


def equal(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> bool:
    """Constant-time comparison of secrets and MACs."""
    return _hmac.compare_digest(a, b)
