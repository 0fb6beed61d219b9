"""The library as a Python user meets it: signatures an IDE can read, docstrings on the
packet path, messages in Python terms (not command-line flags), a version."""

from __future__ import annotations

import ast
import inspect
import re
from importlib import metadata
from pathlib import Path

import pytest

import simpletun
from simpletun.device import link, tuntap

SRC = Path(simpletun.__file__).parent
LIBRARY = [SRC / "errors.py", SRC / "device" / "tuntap.py", SRC / "device" / "link.py"]
#: A command-line flag: --tap, -a (not "multi-queue", "-1", "68..65535").
FLAG = re.compile(r"(?<![\w.-])--?[A-Za-z]")


@pytest.mark.parametrize("opener", [tuntap.open_tun, tuntap.open_tap, tuntap.attach])
def test_openers_spell_out_their_keywords(opener: object) -> None:
    """``**options: object`` hid open_device's keywords from IDEs and type checkers."""
    params = inspect.signature(opener).parameters  # type: ignore[arg-type]
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params.values())
    wanted = set(inspect.signature(tuntap.open_device).parameters) - {"tap"}
    if opener is tuntap.attach:
        wanted = wanted - {"create", "exclusive"} | {"tap"}
    assert wanted <= set(params)
    assert "netns" in params


@pytest.mark.parametrize("method", ["read", "read_into", "read_parts", "write", "write_parts"])
def test_packet_path_is_documented(method: str) -> None:
    doc = getattr(tuntap.Device, method).__doc__
    assert doc and len(doc.split()) >= 5


def test_write_docstring_names_its_errors() -> None:
    doc = tuntap.Device.write.__doc__ or ""
    assert "PacketRejected" in doc and "DeviceDown" in doc


def _messages(path: Path) -> list[tuple[int, str]]:
    """Every string in the module that is not a docstring (f-strings: their literal parts),
    with its line."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_library_messages_speak_python_not_flags(path: Path) -> None:
    """"drop --tap/-a" means nothing to a library user; the CLI adds its own flag hints."""
    flags = [(line, text) for line, text in _messages(path)
             if FLAG.search(text) and "docker run" not in text]  # docker's flags: no Python
    assert not flags


def test_flag_pattern() -> None:
    assert FLAG.search("open it as tun (drop --tap/-a)")
    assert FLAG.search("(simpletun mktun NAME --user YOU)")
    assert not FLAG.search("a multi-queue tap device: use 68..65521, not -1")


def test_version() -> None:
    assert simpletun.__version__ == metadata.version("simpletun")
    assert "__version__" in simpletun.__all__


def test_new_errors_are_exported() -> None:
    for name in ("DeviceDown", "NotTunTap", "NotTap", "BadMac", "BadMtu"):
        assert getattr(simpletun, name) is getattr(simpletun.errors, name)
    assert link.set_mac.__doc__
