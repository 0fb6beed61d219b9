"""WireGuard keys: 32-byte X25519 private/public keys and preshared keys, in the text forms
the wg tools use (base64, as `wg genkey` prints) and the UAPI uses (hex)."""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import BadKey

KEY_LEN = 32
BASE64_LEN = 44  # 32 bytes -> 43 base64 characters + one '='
HEX_LEN = 64

_ZERO = bytes(KEY_LEN)
_BASE64_MESSAGE = ("not a WireGuard key: expected 44 characters of base64 "
                   "(as `wg genkey` prints)")
_HEX_MESSAGE = "not a WireGuard key: expected 64 hexadecimal characters"


def clamp(key: bytes) -> bytes:
    """The X25519 clamping `wg genkey` applies to a private key."""
    _check_len(key)
    k = bytearray(key)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def generate_private() -> bytes:
    """A new private key, clamped as `wg genkey` does."""
    return clamp(os.urandom(KEY_LEN))


def public_from_private(priv: bytes) -> bytes:
    """The X25519 public key of a private key (clamped or not: X25519 clamps anyway)."""
    _check_len(priv)
    return X25519PrivateKey.from_private_bytes(bytes(priv)).public_key().public_bytes_raw()


def generate_preshared() -> bytes:
    """A new preshared key: 32 random bytes, as `wg genpsk` makes."""
    return os.urandom(KEY_LEN)


def to_base64(key: bytes) -> str:
    """The 44-character base64 form `wg` prints."""
    _check_len(key)
    return base64.b64encode(key).decode("ascii")


def from_base64(text: str) -> bytes:
    """Parse the base64 form; anything but 44 canonical characters decoding to 32 bytes
    raises :class:`~simpletun.errors.BadKey`."""
    if len(text) != BASE64_LEN or not text.isascii() or text[-1] != "=" or text[-2] == "=":
        raise BadKey(_BASE64_MESSAGE)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadKey(_BASE64_MESSAGE) from None
    # the last character carries 2 unused bits; wg refuses them set (non-canonical)
    if len(key) != KEY_LEN or base64.b64encode(key).decode("ascii") != text:
        raise BadKey(_BASE64_MESSAGE)
    return key


def to_hex(key: bytes) -> str:
    """The 64-character lower-case hex form of the UAPI."""
    _check_len(key)
    return key.hex()


def from_hex(text: str) -> bytes:
    """Parse the hex form (lower or upper case); anything else raises
    :class:`~simpletun.errors.BadKey`."""
    if len(text) != HEX_LEN or not text.isascii() or not all(c in _HEX_DIGITS for c in text):
        raise BadKey(_HEX_MESSAGE)
    return bytes.fromhex(text)


def is_zero(key: bytes) -> bool:
    """Whether a key is all zeros (an unset key in the UAPI), in constant time."""
    return hmac.compare_digest(bytes(key), _ZERO)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _check_len(key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise BadKey(f"not a WireGuard key: expected {KEY_LEN} bytes, got {len(key)}")
