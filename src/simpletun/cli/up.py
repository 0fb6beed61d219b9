"""``simpletun up`` and ``simpletun down``: a tunnel from a config file (wg-quick's format)."""

from __future__ import annotations

import click

commands: list[click.Command] = []
