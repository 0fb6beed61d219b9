"""tunnel.workers.CounterBoard: a worker's counters reach the parent across the fork, a
slot being written is never read half-way, and many drop reasons still fit."""

from __future__ import annotations

import os
from collections import Counter

from simpletun.device.side import Counters
from simpletun.tunnel.workers import CounterBoard


def test_workers_counters_reach_the_parent_summed() -> None:
    board = CounterBoard(3)
    assert board.total() == Counters()
    pid = os.fork()
    if pid == 0:  # a worker: write twice, the second wins
        write = board.writer(1)
        write(Counters(1, 1, 1, 1))
        write(Counters(10, 20, 1000, 2000, Counter({"oversized": 2})))
        os._exit(0)
    os.waitpid(pid, 0)
    board.writer(2)(Counters(1, 2, 3, 4, Counter({"oversized": 1, "bad-frame": 5})))
    assert board.total() == Counters(11, 22, 1003, 2004,
                                     Counter({"oversized": 3, "bad-frame": 5}))


def test_a_slot_being_written_is_not_read() -> None:
    board = CounterBoard(1)
    board.writer(0)(Counters(5, 5, 5, 5))
    board._SEQ.pack_into(board._map, 0, 3, 0)  # odd: a writer is inside the slot
    assert board.total() == Counters()


def test_many_drop_reasons_keep_the_largest() -> None:
    board = CounterBoard(1)
    drops = Counter({f"reason-{i:03}-" + "x" * 120: i + 1 for i in range(200)})
    board.writer(0)(Counters(1, 2, 3, 4, drops))
    total = board.total()
    assert (total.to_net, total.to_dev, total.bytes_to_net, total.bytes_to_dev) == (1, 2, 3, 4)
    assert total.drops == Counter(dict(drops.most_common(10)))
