"""``simpletun man``: the simpletun(1) manual page, in roff, made from the command tree
itself (every command, every option with its help), so it never drifts from ``--help``.

:func:`render` is pure: the root command in, the page out.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Iterator

import click

SEE_ALSO = ("wg(8)", "wg-quick(8)", "ip(8)", "ip-tuntap(8)", "systemd.service(5)")


def escape(text: str) -> str:
    """Text safe in a roff line: backslashes doubled as ``\\e``, hyphens as ``\\-`` (so
    options copy and paste as ASCII hyphen-minus), and a line never starting with a control
    character (``.`` or ``'``)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # a comma or slash inside a long word (a list of defaults, a path) may end a line:
    # roff's \: marks where, or a narrow terminal gets a line it cannot break
    text = re.sub(r"([,/])(?=\S)", r"\1\\:", text)
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line
                     for line in text.split("\n"))


def paragraphs(help_text: str) -> Iterator[tuple[bool, str]]:
    """A click help text's paragraphs: (kept as written, text). A paragraph that starts
    with click's ``\\b`` marker keeps its lines; the others are one flowing line. The help
    stops at ``\\f``, as click's own."""
    text = inspect.cleandoc(help_text).split("\f", 1)[0]
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if lines and lines[0].strip() == "\b":
            kept = [line for line in lines[1:]]
            if kept:
                yield True, "\n".join(kept)
        elif block.strip():
            yield False, " ".join(line.strip() for line in lines)


def _text(help_text: str | None) -> list[str]:
    out: list[str] = []
    for kept, text in paragraphs(help_text or ""):
        if out:
            out.append(".PP")
        if kept:
            out += [".nf", escape(text), ".fi"]
        else:
            out.append(escape(text))
    return out


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or isinstance(param, click.Argument):  # in the usage line
            continue
        names, help_text = record
        out += [".TP", f".B {escape(names)}"]
        out += _text(help_text) or [""]
    return out


def _usage(command: click.Command, ctx: click.Context) -> str:
    pieces = command.collect_usage_pieces(ctx)
    return " ".join(pieces)


def commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command,
                                                                    click.Context]]:
    """Every command under ``group`` (depth first, nested groups' too), with its full
    name and a context for it, hidden ones left out."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        yield sub.command_path, command, sub
        if isinstance(command, click.Group):
            yield from commands(command, sub)


def render(root: click.Group, *, name: str = "simpletun", version: str = "",
           date: str = "") -> str:
    """The whole page, roff for man(7)."""
    ctx = click.Context(root, info_name=name)
    first = next(paragraphs(root.help or ""), (False, name))[1]
    summary = " ".join(first.split()).rstrip(".")
    lines = [
        f'.TH {name.upper()} 1 "{date}" "{escape(f"{name} {version}".strip())}" '
        '"User Commands"',
        # left-aligned, no hyphenation: option names and lists of defaults stay whole
        ".ad l",
        ".nh",
        ".SH NAME",
        f"{name} \\- {escape(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        f".B {name}",
        escape(_usage(root, ctx)),
        ".br",
        f".B {name}",
        "[\\-q | \\-v] [\\-\\-log\\-json]",
        ".I COMMAND",
        "[ARGS]...",
        ".SH DESCRIPTION",
        *_text(root.help),
        ".SH OPTIONS",
        *_options(root, ctx),
        ".SH COMMANDS",
    ]
    for path, command, sub in commands(root, ctx):
        usage = _usage(command, sub)
        lines += [f'.SS "{escape(path)}{" " + escape(usage) if usage else ""}"']
        lines += _text(command.help) or [escape(command.short_help or "")]
        options = _options(command, sub)
        if options:
            lines += [".PP", "Options:", ".RS", *options, ".RE"]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B JOURNAL_STREAM",
        "Set by systemd: when stderr is the journal, lines carry their syslog priority "
        "(<3>..<7>) and no timestamp.",
        ".SH EXIT STATUS",
        "0 on success; 1 when a command fails (one line on stderr says why); 2 for a usage "
        "error; 130 when interrupted.",
        ".SH SEE ALSO",
        ",\n".join(".BR {} ({}".format(*ref.split("(")) for ref in SEE_ALSO),
    ]
    return "\n".join(lines) + "\n"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("simpletun")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return ""


def page_date() -> str:
    """The page's date: $SOURCE_DATE_EPOCH's (reproducible builds), else today."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    stamp = float(epoch) if epoch.isdigit() else time.time()
    return time.strftime("%Y-%m-%d", time.gmtime(stamp))


@click.command("man")
@click.option("-o", "--output", metavar="FILE",
              help="Write the page to FILE (e.g. /usr/local/share/man/man1/simpletun.1) "
                   "instead of stdout.")
@click.pass_context
def command(ctx: click.Context, output: str | None) -> None:
    """Print the simpletun(1) manual page (roff), made from this command line's own help.

    \b
    Read it:     simpletun man | man -l -
    Install it:  simpletun man -o /usr/local/share/man/man1/simpletun.1
    """
    root = ctx.find_root().command
    assert isinstance(root, click.Group)
    page = render(root, version=_version(), date=page_date())
    if output is None:
        click.echo(page, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        raise click.FileError(output, exc.strerror or str(exc)) from None
