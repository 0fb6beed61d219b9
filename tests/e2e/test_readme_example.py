"""The README's library example, run as written: it must answer a ping.

The example used to echo the first packet it read back into the device, which is the
host's own IPv6 router solicitation, so a ping never got an answer.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from simpletun.device import link
from simpletun.lab.netns import Lab

README = Path(__file__).resolve().parents[2] / "README.md"


def library_example() -> str:
    """The first python code block of the README's "## Library" section."""
    text = README.read_text()
    section = text[text.index("\n## Library\n"):]
    section = section[:section.index("\n## ", 1)]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the Library section has no python example"
    return found.group(1)


def test_example_is_found() -> None:
    code = library_example()
    assert "open_tun" in code and "dev.write" in code


def test_readme_library_example_answers_ping(lab: Lab) -> None:
    host = lab.host("readme")
    proc = host.popen([sys.executable, "-c", library_example()], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not (link.exists("tun0", netns=host.name)
                   and link.state("tun0", netns=host.name).up
                   and link.addresses("tun0", netns=host.name)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the example did not set tun0 up"
            time.sleep(0.05)
        result = host.ping("10.0.0.2", count=3, interval=0.2, deadline=5)
        assert result.ok, result.output
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.communicate(timeout=5)
