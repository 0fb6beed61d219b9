"""``simpletun show``: every running tunnel's peers and counters."""

from __future__ import annotations

import click

commands: list[click.Command] = []
