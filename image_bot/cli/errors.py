"""The one place where errors become exit codes; commands raise, they never call sys.exit.

Exit codes: 0 everything ran (updated or already current); 1 at least one policy or
repository failed (the reason is printed); 2 the command line or bot config is invalid;
3 another image-bot process holds the state dir. Must stay import-light (no stage).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from image_bot import errors, refs

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3

# First match wins: the specific classes come before ImageBotError, their base.
EXIT_CODES: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int], ...] = (
    ((errors.ConfigError, errors.UsageError, refs.InvalidReference), EXIT_USAGE),
    (errors.StateDirLocked, EXIT_LOCKED),
    (errors.ImageBotError, EXIT_FAILED),
)


def exit_code(exc: Exception) -> int | None:
    """The exit code for an error a command let escape, or None when it is a bug."""
    for kinds, code in EXIT_CODES:
        if isinstance(exc, kinds):
            return code
    return None


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Print ``error: …`` on stderr and exit with its code; anything else is a bug and raises."""
    try:
        yield
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(code)
