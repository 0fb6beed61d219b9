"""The tunnel's lines as an operator sees them: under journald (stderr is the journal
stream: syslog priorities, no timestamps), quiet, and as JSON lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed, Watched, simpletun_cmd

UNENCRYPTED = ("warning: this tunnel is not encrypted: anyone on the path can read and inject "
               "packets; use it only on trusted networks")
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def wait_in_file(path: str, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with open(path) as f:
            content = f.read()
        if text in content or time.monotonic() > deadline:
            assert text in content, content
            return content
        time.sleep(0.05)


def test_under_journald_lines_carry_their_priority_and_no_time(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    path = os.path.join(lab.directory, "journal")
    with open(path, "w") as journal:
        st = os.fstat(journal.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        server = bed.server.popen(simpletun_cmd(*bed.server_command()), env=env,
                                  stdout=subprocess.DEVNULL, stderr=journal)
    try:
        wait_in_file(path, "listening on")
        bed.start_client()
        wait_in_file(path, "connected")
        assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    finally:
        if bed.client_proc:
            bed.client_proc.stop()
        wait_in_file(path, "disconnected")
        server.terminate()
        server.wait(10)
    lines = wait_in_file(path, "shutting down").splitlines()
    assert lines, "the server said nothing"
    assert all(re.match(r"<[3-7]>", x) for x in lines), lines
    assert not any(re.search(r"\d\d:\d\d:\d\d", x) for x in lines), lines  # no timestamps
    assert f"<4>{UNENCRYPTED}" in lines
    assert any(re.fullmatch(r"<6>tun0 \(tun, mtu \d+.*\): listening on TCP port \d+", x)
               for x in lines), lines
    assert any(re.fullmatch(r"<6>client 192\.0\.2\.2:\d+ connected \(.*\)( on queue \d of \d)?", x)
               for x in lines), lines
    assert any(re.match(r"<6>(queue \d: )?shutting down: ", x) for x in lines), lines


def test_quiet_keeps_warnings_and_json_lines_are_objects(lab: Lab) -> None:
    bed = Testbed(lab, ipv6_overlay=False)
    server = Watched(bed.server.popen(simpletun_cmd("-q", *bed.server_command()),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True), "server")
    # quiet, it does not say when it listens: the client starts once the port is open (it
    # has no --reconnect; a connection to see would be a client the server talks about)
    deadline = time.monotonic() + 10
    while ":55555 " not in bed.server.run(["ss", "-ltnH"]).stdout:
        assert time.monotonic() < deadline, "the quiet server never listened"
        time.sleep(0.05)
    client = Watched(bed.client.popen(simpletun_cmd("--log-json", *bed.client_command()),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True), "client")
    try:
        client.wait_for('connected to ')
        bed.wait_ready()
        assert bed.client.ping(bed.server_overlay, count=2, interval=0.05).ok
    finally:
        client.stop()
        server.stop()
    # quiet: the warning alone (no "listening on", no client lines, no summary)
    assert len(server.lines) == 1 and server.lines[0].endswith(UNENCRYPTED), server.lines
    assert re.fullmatch(ISO + " " + re.escape(UNENCRYPTED), server.lines[0])
    records = [json.loads(x) for x in client.lines]  # every line one object
    assert all(set(r) == {"time", "level", "message"} and re.fullmatch(ISO, r["time"])
               for r in records), records
    assert {"level": "warning", "message": UNENCRYPTED} in [
        {"level": r["level"], "message": r["message"]} for r in records]
    assert any(r["level"] == "info" and "connected to 192.0.2.1:" in r["message"]
               for r in records), records
    assert any(re.match(r"(queue \d: )?shutting down: ", r["message"]) for r in records)
