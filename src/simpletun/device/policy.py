"""A full tunnel by policy routing, as wg-quick makes one for ``AllowedIPs = 0.0.0.0/0``.

The tunnel's own packets carry a firewall mark (SO_MARK on its socket). Everything else
looks up a table of its own, which holds the default route through the tunnel:

    ip rule add not fwmark TABLE table TABLE
    ip rule add table main suppress_prefixlength 0     # main's routes, but not its default
    ip route add 0.0.0.0/0 dev IFACE table TABLE

so the endpoint stays reachable through the underlay whatever it is, and roaming works
(no host route to keep up to date). The table (= the mark) is the first from 51820 with no
routes in it. :func:`firewall` is wg-quick's nftables table: packets for the tunnel's
addresses arriving on another device are dropped, and the mark follows UDP connections so
replies leave marked too.

Rules and tables are netlink (pyroute2, ``netns=`` as in :mod:`simpletun.device.link`);
:func:`firewall` is pure text for ``nft -f -``.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from . import link
from .link import IPInterface, IPNetwork

FIRST_TABLE = 51820  # wg-quick's
RT_TABLE_MAIN = 254
FIB_RULE_INVERT = 2
MAIN_PRIORITY = 32766  # the main table's rule, by default the first after local's
AF = {4: 2, 6: 10}


@dataclass(frozen=True)
class Rule:
    """One ``ip rule``: ``not fwmark MARK table T`` (``fwmark`` set, inverted) or ``table
    main suppress_prefixlength 0`` (``suppress`` set)."""

    version: int
    table: int
    fwmark: int | None = None
    suppress: int | None = None
    priority: int | None = None

    def __str__(self) -> str:
        at = f" priority {self.priority}" if self.priority is not None else ""
        if self.fwmark is not None:
            return f"ip -{self.version} rule not fwmark {self.fwmark} table {self.table}{at}"
        name = "main" if self.table == RT_TABLE_MAIN else str(self.table)
        return (f"ip -{self.version} rule table {name} suppress_prefixlength "
                f"{self.suppress}{at}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"family": AF[self.version], "table": self.table}
        if self.fwmark is not None:
            attrs.update(fwmark=self.fwmark, flags=FIB_RULE_INVERT)
        if self.suppress is not None:
            attrs["suppress_prefixlen"] = self.suppress
        if self.priority is not None:
            attrs["priority"] = self.priority
        return attrs


def rules(version: int, table: int, above: int = MAIN_PRIORITY) -> list[Rule]:
    """The two rules of a full tunnel over ``table`` (= the mark) for IP ``version``, just
    before the rule at priority ``above`` (:func:`first_priority`), the suppressing one
    first: what ``ip rule add`` does for wg-quick (each new rule goes before the first)."""
    return [Rule(version, table, fwmark=table, priority=above - 1),
            Rule(version, RT_TABLE_MAIN, suppress=0, priority=above - 2)]


def first_priority(version: int, *, netns: str | None = None) -> int:
    """The lowest priority above 0 (local) among this namespace's rules: where ``ip rule
    add`` without a priority puts a new one, just before it."""
    with link._ipr(netns) as ipr:
        found = [int(msg.get_attr("FRA_PRIORITY") or 0)
                 for msg in ipr.get_rules(family=AF[version])]
    return min((p for p in found if p > 0), default=MAIN_PRIORITY)


def free_table(*, netns: str | None = None, start: int = FIRST_TABLE) -> int:
    """The first table from ``start`` with no routes in it (IPv4 or IPv6)."""
    with link._ipr(netns) as ipr:
        used = {int(msg.get_attr("RTA_TABLE") or msg["table"])
                for family in (2, 10) for msg in ipr.get_routes(family=family, table=0)}
    table = start
    while table in used:
        table += 1
    return table


def add_rule(rule: Rule, *, netns: str | None = None) -> None:
    with link._ipr(netns) as ipr:
        link._netlink(f"adding '{rule}'", lambda: ipr.rule("add", **rule._attrs()))


def remove_rule(rule: Rule, *, netns: str | None = None) -> None:
    """Remove one rule like ``rule`` (gone already: nothing to do)."""
    from pyroute2.netlink.exceptions import NetlinkError

    with link._ipr(netns) as ipr:
        try:
            ipr.rule("del", **rule._attrs())
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise link._fail(exc, f"removing '{rule}'") from None


def add_table_route(net: IPNetwork, name: str, table: int, *,
                    netns: str | None = None) -> None:
    """``ip route add NET dev NAME table TABLE``."""
    with link._ipr(netns) as ipr:
        index = link._index(ipr, name, netns)
        link._netlink(f"adding route {net} via {name} to table {table}",
                      lambda: ipr.route("add", dst=str(net), oif=index, table=table,
                                        family=AF[net.version]),
                      {errno.EEXIST: "that route exists already"})


def rules_present(version: int, *, netns: str | None = None) -> list[Rule]:
    """This namespace's rules that look like a full tunnel's (for tests and messages)."""
    out: list[Rule] = []
    with link._ipr(netns) as ipr:
        for msg in ipr.get_rules(family=AF[version]):
            table = int(msg.get_attr("FRA_TABLE") or msg["table"])
            mark = msg.get_attr("FRA_FWMARK")
            suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
            priority = int(msg.get_attr("FRA_PRIORITY") or 0)
            if mark is not None and msg["flags"] & FIB_RULE_INVERT:
                out.append(Rule(version, table, fwmark=int(mark), priority=priority))
            elif suppress is not None and suppress != 0xFFFFFFFF:
                out.append(Rule(version, table, suppress=int(suppress), priority=priority))
    return out


def firewall(name: str, table: int, addresses: Iterable[IPInterface],
             versions: Iterable[int]) -> tuple[str, list[str]]:
    """wg-quick's nftables rules for a full tunnel on ``name`` with mark ``table``: the
    ``nft -f -`` text that adds them and the names of the tables it adds (``ip
    simpletun-NAME``, ``ip6 simpletun-NAME``), which ``nft delete table`` removes."""
    text: list[str] = []
    tables: list[str] = []
    addrs = list(addresses)
    for version in sorted(set(versions)):
        pf = "ip" if version == 4 else "ip6"
        nft = f"{pf} simpletun-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"  # an nft identifier
        tables.append(nft)
        text += [f"add table {nft}",
                 f"add chain {nft} preraw {{ type filter hook prerouting priority -300; }}",
                 f"add chain {nft} premangle {{ type filter hook prerouting priority -150; }}",
                 f"add chain {nft} postmangle {{ type filter hook postrouting priority -150; }}"]
        for a in addrs:
            if a.version == version:
                text.append(f'add rule {nft} preraw iifname != "{name}" {pf} daddr {a.ip} '
                            "fib saddr type != local drop")
        text += [f"add rule {nft} postmangle meta l4proto udp mark {table} ct mark set mark",
                 f"add rule {nft} premangle meta l4proto udp meta mark set ct mark"]
    return "\n".join(text) + "\n", tables


__all__ = ["Rule", "add_rule", "add_table_route", "firewall", "first_priority", "free_table",
           "remove_rule", "rules", "rules_present"]
