"""`image-bot declines list|clear`: the versions policies will not propose again (state DB).

Reads and clears the state dir's declined versions through image_bot.engine.operating (a
clear is recorded with who and why); safe beside a running daemon (no clone, no lock).
"""

from __future__ import annotations

from pathlib import Path

import click

from image_bot.cli import errors, options, render, running
from image_bot.config import loading
from image_bot.engine import operating
from image_bot.engine.context import Engine


@click.group()
def declines() -> None:
    """List or clear declined versions: tags a policy will not propose again.

    \b
    A version is declined when its pull request is closed without merging, when the
    deploy loop or `image-bot rollback` rolls it back, or when a human writes an older tag
    back. Clearing one lets the policy propose it again on its next run.

    \b
    Examples:
      image-bot declines list --config bot.yaml
      image-bot declines list web --json --config bot.yaml
      image-bot declines clear web 1.5.0 --reason "fixed upstream" --config bot.yaml
      image-bot declines clear web --reason "start over" --config bot.yaml
    """


@declines.command("list")
@click.argument("policy", required=False)
@options.config
@options.as_json
def list_declines(policy: str | None, config_path: Path, as_json: bool) -> int:
    """Every declined version (of POLICY): tag, image, why and when."""
    config = loading.load_bot_config(config_path)

    async def work(engine: Engine) -> list[operating.DeclinedVersion]:
        return operating.declines(engine, policy)

    render.declines(running.run_engine(config, work, lock=None), as_json=as_json)
    return errors.EXIT_OK


@declines.command("clear")
@click.argument("policy")
@click.argument("tag", required=False)
@click.option("--reason", default="", metavar="TEXT",
              help="Why: recorded in the event log with --actor.")
@options.actor
@options.config
@options.as_json
def clear(policy: str, tag: str | None, reason: str, actor: str | None, config_path: Path,
          as_json: bool) -> int:
    """Clear POLICY's declined TAG (without TAG: all of them); it may be proposed again.

    \b
    Examples:
      image-bot declines clear web 1.5.0 --reason "fixed upstream" --config bot.yaml
      image-bot declines clear web --reason "start over" --config bot.yaml

    Exit 2 when TAG is not declined for POLICY (the declined ones are listed). Safe while
    the daemon runs on the same state dir.
    """
    config = loading.load_bot_config(config_path)

    async def work(engine: Engine) -> list[operating.DeclinedVersion]:
        return operating.clear_declines(engine, policy, tag, actor=actor or "?",
                                        reason=reason)

    render.cleared(running.run_engine(config, work, lock=None), policy=policy,
                   as_json=as_json)
    return errors.EXIT_OK
