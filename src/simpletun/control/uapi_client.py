"""Asking a running WireGuard interface through its UAPI socket, as ``wg`` does, for what
``wg`` does not show: simpletun's drop counters (the ``stats=1`` extension)."""

from __future__ import annotations

from ..errors import ControlSocketError
from .status import answer_pairs, exchange, parse_stats, socket_path
from .uapi_socket import DEFAULT_DIRECTORY


def _ask(interface: str, text: str, directory: str, timeout: float) -> str:
    """Send ``text`` (a whole request, ending with its blank line) and return the answer;
    ControlSocketError if nobody answers or the answer is an error."""
    try:
        data = exchange(socket_path(interface, directory), text, timeout=timeout)
    except ControlSocketError as exc:
        raise ControlSocketError(f"no WireGuard interface {interface}: {exc}: is simpletun-wg "
                                 "running for it?") from None
    status = answer_pairs(data)[1]
    if status != 0:
        raise ControlSocketError(
            f"{interface} refused the request (errno={'none' if status is None else status}): "
            "is it simpletun's engine (wireguard-go does not have this request)?")
    return data


def request(interface: str, text: str, *, directory: str = DEFAULT_DIRECTORY,
            timeout: float = 5.0) -> list[tuple[str, str]]:
    """Send ``text`` and return the answer's ``key=value`` pairs before ``errno``;
    ControlSocketError if nobody answers or the answer is an error."""
    return answer_pairs(_ask(interface, text, directory, timeout))[0]


def stats(interface: str, *, directory: str = DEFAULT_DIRECTORY) -> dict[str, int]:
    """The engine's counters: datagrams and packets dropped, by reason, and the other
    counters of ``stats=1`` (``cookies-sent``: replies sent under load)."""
    parsed = parse_stats(_ask(interface, "stats=1\n\n", directory, 5.0))
    return {**parsed.drops, **parsed.counters}
