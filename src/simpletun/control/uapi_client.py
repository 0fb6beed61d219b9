"""Asking a running WireGuard interface through its UAPI socket, as ``wg`` does, for what
``wg`` does not show: simpletun's drop counters (the ``stats=1`` extension)."""

from __future__ import annotations

from ..errors import ControlSocketError
from .status import exchange, parse_stats, socket_path
from .uapi_socket import DEFAULT_DIRECTORY


def request(interface: str, text: str, *, directory: str = DEFAULT_DIRECTORY,
            timeout: float = 5.0) -> list[tuple[str, str]]:
    """Send ``text`` (a whole request, ending with its blank line) and return the answer's
    ``key=value`` pairs before ``errno``; ControlSocketError if nobody answers or the
    answer is an error."""
    path = socket_path(interface, directory)
    try:
        data = exchange(path, text, timeout=timeout)
    except ControlSocketError as exc:
        raise ControlSocketError(f"no WireGuard interface {interface}: {exc}: is simpletun-wg "
                                 "running for it?") from None
    pairs = [tuple(line.split("=", 1)) for line in data.splitlines()
             if "=" in line]
    out = [(k, v) for k, v in pairs]
    status = dict(out).get("errno", "")
    if status != "0":
        raise ControlSocketError(
            f"{interface} refused the request (errno={status or 'none'}): "
            "is it simpletun's engine (wireguard-go does not have this request)?")
    return [(k, v) for k, v in out if k != "errno"]


def stats(interface: str, *, directory: str = DEFAULT_DIRECTORY) -> dict[str, int]:
    """The engine's counters: datagrams and packets dropped, by reason, and the other
    counters of ``stats=1`` (``cookies-sent``: replies sent under load)."""
    text = "".join(f"{k}={v}\n" for k, v in request(interface, "stats=1\n\n",
                                                     directory=directory))
    parsed = parse_stats(text)
    return {**parsed.drops, **parsed.counters}
