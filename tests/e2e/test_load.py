"""``simpletun load`` at a reduced count: every peer's handshake completes and its echo
reply comes back right, the report has its figures, and everything is torn down, also
when the run is interrupted. (The full run, 1,000 peers, is the README's command.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from simpletun.lab import load
from simpletun.lab.wghost import SOCKET_DIR, socket_path

PEERS = 100


def namespaces(prefix: str) -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
    except FileNotFoundError:
        return []


def test_every_peer_gets_through_and_the_report_says_so() -> None:
    prefix = f"sttest-{os.getpid()}-"
    before = set(namespaces(prefix))
    report = load.run(peers=PEERS, setconf_peers=PEERS + 50, rate=0, timeout=20,
                      prefix="sttest")
    assert report.through == PEERS, report.lines()
    assert report.handshakes == PEERS
    assert report.failures == {} and report.wrong_replies == {}
    assert report.ok
    # the server saw them too: one session per driven peer, none for the configured rest
    assert report.server_handshakes == PEERS
    # 100 is under the load threshold: no cookies, one initiation each
    assert report.cookie_replies == 0 and report.initiations_sent == PEERS
    assert report.setconf_peers == PEERS + 50
    assert report.setconf_seconds > 0 and report.through_seconds > 0
    assert report.handshakes_per_second > 0
    assert 0 < report.rss_before_kb <= report.rss_configured_kb
    assert report.rss_sessions_kb > 0 and report.rss_per_peer_bytes != 0
    assert report.lookup_ns_1 > 0 and report.lookup_ns_n > 0
    fields = report.as_dict()
    for key in ("setconf_seconds", "handshakes_per_second", "through_seconds", "failures",
                "rss_before_kb", "rss_configured_kb", "rss_sessions_kb",
                "rss_per_peer_bytes", "lookup_ns_1", "lookup_ns_n", "ok"):
        assert key in fields
    assert any(line.startswith("through (echo reply checked): 100/100")
               for line in report.lines())
    # torn down: the namespaces, the UAPI socket (and with it the process)
    assert set(namespaces(prefix)) == before
    assert report.interface and not os.path.exists(socket_path(report.interface))


def test_the_command_prints_json_and_exits_zero() -> None:
    done = subprocess.run([sys.executable, "-m", "simpletun", "load", "--peers", "20",
                           "--rate", "0", "--json", "-q"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["through"] == 20 and report["ok"] is True
    assert report["failures"] == {}


def test_interrupted_run_leaves_nothing_behind() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simpletun", "load", "--peers", "200",
                             "--rate", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "running" in line:
                break
        time.sleep(0.5)
        prefix = f"stload-{proc.pid}-"
        assert namespaces(prefix)  # the run is under way in its namespaces
        sockets = [n for n in os.listdir(SOCKET_DIR) if n.startswith(f"wg{proc.pid % 10000}x")]
        assert sockets
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert namespaces(prefix) == []
    for name in sockets:
        assert not os.path.exists(os.path.join(SOCKET_DIR, name))
