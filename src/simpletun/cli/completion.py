"""``simpletun completion SHELL``: the shell completion script, click's own mechanism
(the script calls simpletun back with ``_SIMPLETUN_COMPLETE`` set to ask what fits)."""

from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem, get_completion_class

SHELLS = ("bash", "zsh", "fish")
#: the variable the completion scripts set when they call simpletun back
COMPLETE_VAR = "_SIMPLETUN_COMPLETE"


def interfaces(ctx: click.Context, param: click.Parameter,
               incomplete: str) -> list[CompletionItem]:
    """Completion of an interface name: this network namespace's interfaces."""
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def script(root: click.Command, shell: str, prog_name: str = "simpletun") -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`)."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - the choice allows only known shells
        raise click.BadParameter(f"no completion for {shell}", param_hint="SHELL")
    return cls(root, {}, prog_name, COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def command(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash 4.4+, zsh, fish).

    \b
    bash:  simpletun completion bash > /etc/bash_completion.d/simpletun
           (or: eval "$(simpletun completion bash)" in ~/.bashrc)
    zsh:   simpletun completion zsh > "${fpath[1]}/_simpletun"
           (or: eval "$(simpletun completion zsh)" in ~/.zshrc)
    fish:  simpletun completion fish > ~/.config/fish/completions/simpletun.fish
    """
    click.echo(script(ctx.find_root().command, shell), nl=False)
