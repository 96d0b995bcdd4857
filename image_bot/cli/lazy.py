"""A click group that imports a command's module only when that command runs.

Must stay import-light (click only): `image-bot --help` lists every command from the summaries
given here, without importing any of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

import click


@dataclass(frozen=True, slots=True)
class Lazy:
    """Where a command lives and the first paragraph of its help (shown by the group's --help)."""

    target: str  # "package.module:attribute"
    summary: str


class LazyGroup(click.Group):
    """click's documented lazy-loading group, listing commands without importing them."""

    def __init__(self, *args: object, lazy_subcommands: Mapping[str, Lazy],
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_subcommands = dict(lazy_subcommands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = self.lazy_subcommands.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = lazy.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{lazy.target} is not a click command")
        return command

    def summary(self, ctx: click.Context, cmd_name: str, limit: int) -> str:
        """What click would show for the command, from its summary when it is lazy."""
        lazy = self.lazy_subcommands.get(cmd_name)
        if lazy is not None:
            # click's own shortening, applied to a stand-in that costs no import
            return click.Command(cmd_name, help=lazy.summary).get_short_help_str(limit)
        command = super().get_command(ctx, cmd_name)
        return command.get_short_help_str(limit) if command is not None else ""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, with short help that needs no import."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, self.summary(ctx, name, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
