"""A peer's staged packets: bounded as wireguard-go bounds them, the oldest dropped."""

from __future__ import annotations

from simpletun.wireguard.peer import STAGED_LIMIT, Peer, Staged


def test_staged_keeps_the_newest_up_to_the_limit() -> None:
    staged = Staged()
    for i in range(STAGED_LIMIT + 5):
        staged.append(bytes([i % 256]))
    assert len(staged) == STAGED_LIMIT
    assert staged[0] == bytes([5]) and staged[-1] == bytes([(STAGED_LIMIT + 4) % 256])
    staged.clear()
    assert not staged


def test_a_new_peer_stages_nothing() -> None:
    peer = Peer(bytes(32))
    assert isinstance(peer.staged, Staged) and not peer.staged
