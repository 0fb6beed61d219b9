"""The command line's help: the man page made from the command tree (every command and
option named; man renders it without a warning), shell completion through a real bash and
through click's protocol, -V/--version, and the root's logging options."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version

import click
import pytest

from simpletun.cli import cli, manpage

BIN = os.path.dirname(sys.executable)  # the virtualenv's bin: simpletun is there
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def simpletun(*args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simpletun", *args], capture_output=True,
                          text=True, timeout=30, env=env or ENV)


@pytest.fixture(scope="module")
def page() -> str:
    done = simpletun("man")
    assert done.returncode == 0, done.stderr
    return done.stdout


def every_command() -> list[tuple[str, click.Command]]:
    ctx = click.Context(cli, info_name="simpletun")
    return [("simpletun", cli)] + [(path, c) for path, c, _ in manpage.commands(cli, ctx)]


def unescape(roff: str) -> str:
    return roff.replace("\\-", "-").replace("\\:", "").replace("\\e", "\\")


def test_the_page_names_every_command_and_every_option(page: str) -> None:
    text = unescape(page)
    commands = every_command()
    assert len(commands) > 15
    for path, command in commands:
        if path != "simpletun":
            assert f'.SS "{path} ' in text, path
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts + param.secondary_opts:
                    assert re.search(rf"\.B .*{re.escape(opt)}\b", text), (path, opt)
                if param.help:
                    # the help's first words, as click wraps nothing here
                    words = " ".join(param.help.split()[:4])
                    assert words in " ".join(text.split()), (path, opt, words)
    for name in ("-q, --quiet", "-v, --verbose", "--log-json", "-V, --version",
                 "--metrics ADDR:PORT"):
        assert f".B {name}" in text, name
    assert text.startswith('.TH SIMPLETUN 1 "')
    assert f'"simpletun {version("simpletun")}"' in text.splitlines()[0]


def test_man_renders_it_without_a_warning(page: str, tmp_path: os.PathLike[str]) -> None:
    assert shutil.which("man"), "man is installed here (man-db)"
    path = os.path.join(tmp_path, "simpletun.1")
    with open(path, "w") as f:
        f.write(page)
    done = subprocess.run(["man", "--warnings", "-l", path], capture_output=True, text=True,
                          timeout=60, env={**ENV, "MANWIDTH": "80", "MANPAGER": "cat",
                                           "PAGER": "cat"})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    shown = done.stdout
    assert "simpletun mktun [OPTIONS] NAME" in shown
    assert "--log-json" in shown and "SEE ALSO" in shown


def test_man_writes_a_file(tmp_path: os.PathLike[str], page: str) -> None:
    path = os.path.join(tmp_path, "simpletun.1")
    done = simpletun("man", "-o", path)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    with open(path) as f:
        assert f.read() == page
    bad = simpletun("man", "-o", os.path.join(tmp_path, "no", "such", "dir.1"))
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_roff_escapes() -> None:
    assert manpage.escape("--x a\\b") == "\\-\\-x a\\eb"
    assert manpage.escape(".hidden\n'quoted") == "\\&.hidden\n\\&'quoted"
    assert manpage.escape("a,b /x/y") == "a,\\:b /\\:x/\\:y"
    assert list(manpage.paragraphs("One\ntwo.\n\n\b\nkept  as\nis\n\fhidden")) == [
        (False, "One two."), (True, "kept  as\nis")]


def bash_complete(*words: str) -> list[str]:
    """What bash offers after ``words`` (the last one being completed), through the script
    'simpletun completion bash' prints, sourced into a real bash."""
    script = simpletun("completion", "bash")
    assert script.returncode == 0, script.stderr
    words_array = " ".join(f"'{w}'" for w in words)
    program = (f"{script.stdout}\nCOMP_WORDS=({words_array}); COMP_CWORD={len(words) - 1}; "
               "_simpletun_completion simpletun; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program],
                          capture_output=True, text=True, timeout=30, env=ENV)
    assert done.returncode == 0, done.stderr
    return [x for x in done.stdout.splitlines() if x]


def test_bash_completes_commands_and_options() -> None:
    assert bash_complete("simpletun", "sh") == ["show"]
    assert "mktun" in bash_complete("simpletun", "")
    assert bash_complete("simpletun", "--log") == ["--log-json"]
    assert bash_complete("simpletun", "mktun", "x", "--mul") == ["--multi-queue"]
    assert bash_complete("simpletun", "completion", "f") == ["fish"]
    # -i offers this namespace's interfaces
    assert bash_complete("simpletun", "-i", "l") == ["lo"]
    assert "lo" in bash_complete("simpletun", "-v", "-i", "")


def test_clicks_completion_protocol() -> None:
    env = {**ENV, "_SIMPLETUN_COMPLETE": "bash_complete", "COMP_WORDS": "simpletun sh",
           "COMP_CWORD": "1"}
    done = simpletun(env=env)
    assert (done.returncode, done.stdout.split()) == (0, ["plain,show"]), done.stderr


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"),
                                          ("zsh", "#compdef simpletun"),
                                          ("fish", "complete --no-files --command simpletun")])
def test_completion_scripts(shell: str, marker: str) -> None:
    done = simpletun("completion", shell)
    assert done.returncode == 0 and marker in done.stdout, done.stdout + done.stderr
    assert "_SIMPLETUN_COMPLETE" in done.stdout


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = simpletun("completion", "tcsh")
    assert done.returncode == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in done.stderr


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str) -> None:
    done = simpletun(flag)
    assert (done.returncode, done.stdout) == (0, f"simpletun {version('simpletun')}\n")


def test_quiet_and_verbose_do_not_go_together() -> None:
    done = simpletun("-q", "-v", "genkey")
    assert done.returncode == 2
    assert "-q (quiet) and -v (verbose) do not go together: choose one" in done.stderr
    assert done.stdout == ""


def test_the_root_options_go_before_any_command() -> None:
    """-v/-q/--log-json are the root's: accepted before every command; a failing command's
    one line becomes a JSON object with --log-json, and stays as it was without."""
    assert simpletun("-vv", "genkey").returncode == 0
    assert simpletun("-q", "genkey").returncode == 0
    plain = simpletun("-v", "deltun", "stnosuch0")
    assert plain.returncode == 1
    assert re.fullmatch(r"simpletun: [^\n]*stnosuch0[^\n]*\n", plain.stderr), plain.stderr
    as_json = simpletun("--log-json", "deltun", "stnosuch0")
    assert as_json.returncode == 1
    record = json.loads(as_json.stderr)
    assert record["level"] == "error"
    assert record["message"] == plain.stderr.strip()


def test_metrics_is_a_tunnel_flag() -> None:
    done = simpletun("--metrics", "127.0.0.1:9586", "genkey")
    assert done.returncode == 2
    assert "the tunnel flags (-i, -s, -c, --metrics) do not go with a command" in done.stderr
