from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from simpletun.tunnel.stream import Wire
from simpletun.tunnel.workers import Assignment, decode_assignment, encode_assignment

wires = st.builds(Wire, native=st.booleans(), vnet=st.booleans(), keepalive=st.booleans())


@given(wires, st.text(max_size=60), st.binary(max_size=70000))
def test_assignment_round_trip(wire: Wire, peer: str, leftover: bytes) -> None:
    a = Assignment(reset=False, wire=wire, peer=peer, leftover=leftover)
    assert decode_assignment(encode_assignment(a)) == a


def test_reset_and_bytes() -> None:
    reset = Assignment(reset=True, peer="192.0.2.9:4")
    assert decode_assignment(encode_assignment(reset)) == reset
    a = Assignment(reset=False, wire=Wire(native=True, vnet=True), peer="[fd00::2]:5", leftover=b"x")
    assert encode_assignment(a) == b"\x01\x03\x00\x0b[fd00::2]:5x"
