from collections import Counter

from simpletun.device.side import Counters


def test_summary_says_packet_for_one() -> None:
    assert Counters(to_net=1, to_dev=0).summary() == "1 packet sent, 0 received"
    assert Counters(to_net=2, to_dev=1).summary() == "2 packets sent, 1 received"


def test_add_makes_a_total() -> None:
    total = Counters()
    total.add(Counters(1, 2, 30, 40, Counter({"no-peer": 1})))
    total.add(Counters(3, 4, 50, 60, Counter({"no-peer": 2, "rejected": 1})))
    assert (total.to_net, total.to_dev, total.bytes_to_net, total.bytes_to_dev) == (4, 6, 80, 100)
    assert total.summary() == "4 packets sent, 6 received, dropped 3 no-peer, 1 rejected"
