"""`image-bot promote`: write a chosen tag for one policy through Git (commit or PR), now.

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
from image_bot.engine.overrides import Override


@click.command()
@click.argument("policy")
@click.argument("tag")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why: written into the commit (Image-Bot-Reason) and the event log.")
@options.actor
@options.dry_run
@options.config
@options.as_json
def promote(policy: str, tag: str, reason: str, actor: str | None, dry_run: bool,
            config_path: Path, as_json: bool) -> int:
    """Write TAG for POLICY now, through Git, skipping the policy's own checks.

    \b
    The tag is written like any update of that policy: a commit pushed to the branch, or
    a pull request in pull-request mode (on its own branch, image-bot/promote-POLICY). TAG
    must exist in the registry; the policy's range, filters, min-age and promotion soak are
    not applied, and the commit says so. It works on a suspended policy (freeze, then
    promote). The commit carries the trailers
      Image-Bot-Operator: promote POLICY TAG
      Image-Bot-Actor: WHO
      Image-Bot-Reason: WHY
    and the event log records it (`image-bot status`, the status page).

    \b
    Examples:
      image-bot promote web 1.4.2 --reason "hotfix for INC-231" --config bot.yaml
      image-bot promote web 1.4.2 --reason "try it" --dry-run --config bot.yaml

    Exit 0 when written (or already there), 1 when it failed, 2 for an unknown policy or
    tag, 3 when another image-bot process holds the state dir.
    """
    override = Override.of("promote", policy, tag, actor=actor or "", reason=reason)
    config = loading.load_bot_config(config_path)

    async def work(engine: Engine) -> operating.Operation:
        return await operating.promote(engine, override, dry_run=dry_run)

    done = running.run_engine(config, work, lock="promote")
    render.operation(done, as_json=as_json)
    return render.exit_code(done.report, strict=False)
