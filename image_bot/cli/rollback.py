"""`image-bot rollback`: write an earlier tag back through Git and decline the current one.

Reads the flags and hands them to image_bot.engine.operating through image_bot.cli.running;
prints through image_bot.cli.render and returns an exit code (never calls sys.exit).
"""

from __future__ import annotations

from pathlib import Path

import click

from image_bot.cli import options, render, running
from image_bot.config import loading
from image_bot.engine import operating
from image_bot.engine.context import Engine


@click.command()
@click.argument("policy")
@click.option("--to", "to", metavar="TAG", default=None,
              help="The tag to write [default: the tag before the policy's last update by "
                   "image-bot, from its commits].")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why: written into the commit (Image-Bot-Reason), the decline and the "
                   "event log.")
@options.actor
@options.dry_run
@options.config
@options.as_json
def rollback(policy: str, to: str | None, reason: str, actor: str | None, dry_run: bool,
             config_path: Path, as_json: bool) -> int:
    """Write the previous tag of POLICY back through Git and decline the one it replaces.

    \b
    Published like any update of that policy: a commit, or a pull request in
    pull-request mode (on its own branch, image-bot/rollback-POLICY). The replaced tag is
    declined: `run` will not propose it again, only newer tags (`image-bot declines clear`
    takes that back). Without --to, the tag comes from the bot's own commits (the tag
    before its last update of the policy); when none is known, name it with --to.
    The commit carries the trailers
      Image-Bot-Operator: rollback POLICY TAG
      Image-Bot-Actor: WHO
      Image-Bot-Reason: WHY

    \b
    Examples:
      image-bot rollback web --reason "500s after 1.5.0" --config bot.yaml
      image-bot rollback web --to 1.4.2 --reason "known good" --config bot.yaml
      image-bot rollback web --reason "check first" --dry-run --config bot.yaml

    Exit 0 when written, 1 when it failed, 2 for an unknown policy or tag or no known
    previous tag, 3 when another image-bot process holds the state dir.
    """
    config = loading.load_bot_config(config_path)

    async def work(engine: Engine) -> operating.Operation:
        return await operating.rollback(engine, policy, to=to, actor=actor or "",
                                        reason=reason, dry_run=dry_run)

    done = running.run_engine(config, work, lock="rollback")
    render.operation(done, as_json=as_json)
    return render.exit_code(done.report, strict=False)
