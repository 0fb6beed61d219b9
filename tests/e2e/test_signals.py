"""Every way out of the (encrypted) ICMP server (SIGHUP from a closed terminal, SIGINT,
SIGTERM, SIGQUIT, an error) puts back the kernel's echo settings it changed, and the
stopped server prints its summary."""

from __future__ import annotations

import signal
import subprocess

import pytest

from simpletun.lab.netns import Lab, Namespace
from simpletun.lab.testbed import Watched, key_pair, simpletun_cmd, unique_iface
from simpletun.transport.icmp import ECHO_SYSCTL


def _echo(ns: Namespace) -> tuple[str, str]:
    return (ns.run(["cat", ECHO_SYSCTL[4]]).stdout.strip(),
            ns.run(["cat", ECHO_SYSCTL[6]]).stdout.strip())


def _start(lab: Lab, ns: Namespace, iface: str, *args: str) -> Watched:
    """An ICMP server with a key of its own and a client's key as its peer."""
    key, _public = key_pair(lab.directory, "server")
    _client_key, client_public = key_pair(lab.directory, "client")
    proc = ns.popen(simpletun_cmd("-i", iface, "-s", "-t", "icmp", "-k", key,
                                  "-P", client_public, *args),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return Watched(proc, "server")


@pytest.mark.parametrize("signo", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM,
                                   signal.SIGQUIT], ids=lambda s: signal.Signals(s).name)
def test_icmp_server_puts_echo_settings_back_on_every_signal(lab: Lab, signo: int) -> None:
    ns = lab.host("srv")
    ns.sysctl("net.ipv6.icmp.echo_ignore_all", "0")
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", "0")
    server = _start(lab, ns, unique_iface(), "--address", "10.9.0.1/24")
    server.wait_for("listening on ICMP echo requests")
    assert _echo(ns) == ("1", "1")
    server.proc.send_signal(signo)
    assert server.proc.wait(10) == 0, server.text
    server.stop()
    assert _echo(ns) == ("0", "0"), server.text
    assert "shutting down: " in server.lines[-1], server.text


def test_icmp_server_puts_echo_settings_back_on_an_error(lab: Lab) -> None:
    ns = lab.host("srv")
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", "0")
    server = _start(lab, ns, "lo")  # lo is no tun device: fails after the echo replies went off
    assert server.proc.wait(20) == 1, server.text
    server.stop()
    assert server.lines[-1].startswith("simpletun: "), server.text
    assert _echo(ns) == ("0", "0"), server.text
