"""A click group that imports a command's module only when that command runs.

Must stay import-light (click only): `image-bot --help` lists every command from the summaries
given here, without importing any of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

import click


@dataclass(frozen=True, slots=True)
class Lazy:
    """Where a command lives and the first paragraph of its help (shown by the group's --help)."""

    target: str  # "package.module:attribute"
    summary: str


class LazyGroup(click.Group):
    """click's documented lazy-loading group, listing commands without importing them.

    click reads ``Group.commands`` directly in places (the "Did you mean" suggestion for a
    mistyped command), so the laziness lives in that mapping: it knows every name, and
    imports a command the first time it is looked up.
    """

    def __init__(self, *args: object, lazy_subcommands: Mapping[str, Lazy],
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_subcommands = dict(lazy_subcommands)
        self.commands = _Commands(self.lazy_subcommands, loaded=self.commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)  # names only: nothing is imported

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name)  # imports the command's module

    def summary(self, ctx: click.Context, cmd_name: str, limit: int) -> str:
        """What click would show for the command, from its summary when it is lazy."""
        lazy = self.lazy_subcommands.get(cmd_name)
        if lazy is not None:
            # click's own shortening, applied to a stand-in that costs no import
            return click.Command(cmd_name, help=lazy.summary).get_short_help_str(limit)
        command = self.get_command(ctx, cmd_name)
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


class _Commands(MutableMapping[str, click.Command]):
    """A group's commands by name; a lazy one is imported on first lookup, then kept."""

    def __init__(self, lazy: Mapping[str, Lazy],
                 loaded: MutableMapping[str, click.Command]) -> None:
        self._lazy = lazy
        self._loaded = dict(loaded)

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            self._loaded[name] = _imported(self._lazy[name].target)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("commands cannot be removed from a lazy group")

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter({**self._lazy, **self._loaded})

    def __len__(self) -> int:
        return len({**self._lazy, **self._loaded})


def _imported(target: str) -> click.Command:
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command
