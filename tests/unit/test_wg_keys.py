"""WireGuard keys (simpletun.wireguard.keys) and `simpletun genkey/pubkey/genpsk`, checked
against the real `wg` binary."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.errors import BadKey, SimpletunError
from simpletun.wireguard import keys

KEY_LINE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n")

# RFC 7748 section 6.1: Alice's X25519 private and public keys
RFC_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC_PUB = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def wg(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["wg", *args], input=stdin, capture_output=True, text=True,
                          timeout=10)


def simpletun(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simpletun", *args], input=stdin,
                          capture_output=True, text=True, timeout=30)


# --- the library ---------------------------------------------------------------------------

def test_rfc7748_vector() -> None:
    assert keys.public_from_private(RFC_PRIV) == RFC_PUB


def test_private_keys_are_clamped_and_fresh() -> None:
    seen = set()
    for _ in range(50):
        k = keys.generate_private()
        assert len(k) == 32
        assert k[0] & 7 == 0 and k[31] & 128 == 0 and k[31] & 64 == 64
        seen.add(k)
    assert len(seen) == 50
    assert keys.clamp(b"\xff" * 32) == b"\xf8" + b"\xff" * 30 + b"\x7f"
    assert keys.clamp(bytes(32)) == bytes(31) + b"\x40"


def test_public_keys_match_wg_pubkey() -> None:
    privs = [keys.generate_private() for _ in range(4)]
    privs += [os.urandom(32), b"\xff" * 32, RFC_PRIV]  # unclamped: both sides clamp
    for priv in privs:
        done = wg("pubkey", stdin=keys.to_base64(priv) + "\n")
        assert done.returncode == 0, done.stderr
        assert keys.from_base64(done.stdout.strip()) == keys.public_from_private(priv)


def test_wg_genkey_and_genpsk_output_parses() -> None:
    for _ in range(3):
        priv_text = wg("genkey").stdout
        assert KEY_LINE.fullmatch(priv_text)
        priv = keys.from_base64(priv_text.strip())
        assert keys.to_base64(priv) == priv_text.strip()
        assert keys.clamp(priv) == priv
        pub_text = wg("pubkey", stdin=priv_text).stdout.strip()
        assert keys.to_base64(keys.public_from_private(priv)) == pub_text
        assert len(keys.from_base64(wg("genpsk").stdout.strip())) == 32


def test_preshared_keys_are_random() -> None:
    psks = {keys.generate_preshared() for _ in range(20)}
    assert len(psks) == 20 and all(len(p) == 32 for p in psks)


GOOD = keys.to_base64(bytes(range(32)))
BAD_BASE64 = [
    "",
    GOOD[:-1],                       # 43 characters: no padding
    GOOD + "=",                      # 45
    " " + GOOD[:-1],                 # leading space
    GOOD[:-1] + "\n",                # the newline is not part of the key
    GOOD[:20] + "!" + GOOD[21:],     # not base64
    GOOD[:20] + "-" + GOOD[21:],     # url-safe alphabet
    GOOD[:42] + "==",                # 31 bytes
    GOOD[:42] + "B=",                # non-canonical: unused low bits set
    GOOD[:42] + "A",                 # 43 characters
    GOOD[:43] + "A",                 # no padding, 44 characters
    "=" * 44,
    GOOD[:20] + "é" + GOOD[21:],
    base64.b64encode(bytes(33)).decode()[:44],
]


@pytest.mark.parametrize("text", BAD_BASE64)
def test_bad_base64_raises_bad_key(text: str) -> None:
    with pytest.raises(BadKey, match="not a WireGuard key: expected 44 characters of base64"):
        keys.from_base64(text)
    assert issubclass(BadKey, SimpletunError)


def test_wg_refuses_the_non_canonical_keys_we_refuse() -> None:
    # the two subtle ones: padding of 31 bytes, and unused bits set in the last character
    for text in (GOOD[:42] + "==", GOOD[:42] + "B="):
        assert wg("pubkey", stdin=text + "\n").returncode == 1


def test_hex() -> None:
    key = bytes(range(32))
    assert keys.to_hex(key) == key.hex()
    assert keys.from_hex(key.hex()) == key
    assert keys.from_hex(key.hex().upper()) == key
    for bad in ("", key.hex()[:-1], key.hex() + "0", "0x" + key.hex()[2:],
                key.hex()[:-1] + "g", key.hex()[:-2] + " 0", "é" * 64):
        with pytest.raises(BadKey, match="expected 64 hexadecimal characters"):
            keys.from_hex(bad)


def test_is_zero() -> None:
    assert keys.is_zero(bytes(32))
    assert not keys.is_zero(bytes(31) + b"\x01")
    assert not keys.is_zero(b"\x01" + bytes(31))
    assert not keys.is_zero(bytes(31))


def test_wrong_length_keys_are_refused() -> None:
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(BadKey, match="expected 32 bytes"):
            keys.to_base64(bad)
        with pytest.raises(BadKey):
            keys.public_from_private(bad)


@given(st.binary(min_size=32, max_size=32))
def test_round_trips(key: bytes) -> None:
    text = keys.to_base64(key)
    assert len(text) == 44 and KEY_LINE.fullmatch(text + "\n")
    assert keys.from_base64(text) == key
    assert keys.from_hex(keys.to_hex(key)) == key
    assert keys.from_hex(keys.to_hex(key).upper()) == key


@given(st.text(max_size=50) | st.text(alphabet="ABCab+/=09", min_size=44, max_size=44))
def test_any_text_is_a_key_or_bad_key(text: str) -> None:
    try:
        key = keys.from_base64(text)
    except BadKey:
        return
    assert len(key) == 32 and keys.to_base64(key) == text


# --- the command line ----------------------------------------------------------------------

def test_simpletun_pubkey_matches_wg_pubkey() -> None:
    priv = wg("genkey").stdout
    done = simpletun("pubkey", stdin=priv)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == wg("pubkey", stdin=priv).stdout  # byte for byte, newline included


def test_wg_pubkey_takes_our_genkey() -> None:
    done = simpletun("genkey")
    assert done.returncode == 0 and KEY_LINE.fullmatch(done.stdout)
    theirs = wg("pubkey", stdin=done.stdout)
    assert theirs.returncode == 0
    assert theirs.stdout == simpletun("pubkey", stdin=done.stdout).stdout
    assert keys.clamp(keys.from_base64(done.stdout.strip())) == keys.from_base64(
        done.stdout.strip())


def test_genpsk_is_one_base64_line() -> None:
    done = simpletun("genpsk")
    assert done.returncode == 0 and done.stderr == ""
    assert len(done.stdout) == 45 and KEY_LINE.fullmatch(done.stdout)


@pytest.mark.parametrize("stdin", ["", "bad\n", GOOD[:42] + "B=\n", GOOD + "x\n", "é" * 44])
def test_pubkey_bad_stdin_is_one_line(stdin: str) -> None:
    done = simpletun("pubkey", stdin=stdin)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("simpletun: pubkey: stdin is not a private key")


def test_pubkey_takes_surrounding_whitespace() -> None:
    priv = keys.generate_private()
    done = simpletun("pubkey", stdin=keys.to_base64(priv) + "\n\n  \0")
    assert done.returncode == 0
    assert done.stdout == keys.to_base64(keys.public_from_private(priv)) + "\n"


@pytest.mark.parametrize("command", ["genkey", "genpsk"])
@pytest.mark.parametrize("mode,warns", [(0o644, True), (0o604, True), (0o640, False),
                                        (0o600, False)])
def test_world_accessible_warning_as_wg(tmp_path: Path, command: str, mode: int,
                                        warns: bool) -> None:
    stderrs = []
    for program in (["wg"], [sys.executable, "-m", "simpletun"]):
        out = tmp_path / "key"
        out.unlink(missing_ok=True)
        out.touch()
        out.chmod(mode)
        with out.open("w") as f:
            done = subprocess.run([*program, command], stdout=f, stderr=subprocess.PIPE,
                                  text=True, timeout=30)
        assert done.returncode == 0
        assert KEY_LINE.fullmatch(out.read_text())
        stderrs.append(done.stderr)
    assert stderrs[0] == stderrs[1]
    assert stderrs[1] == ("Warning: writing to world accessible file.\n"
                          "Consider setting the umask to 077 and trying again.\n" if warns else "")


def test_no_warning_on_a_pipe() -> None:
    assert simpletun("genkey").stderr == ""
