"""`image-bot plan`: what `run` would change, as a diff; commits, pushes and records nothing."""

from __future__ import annotations

from pathlib import Path

import click

from image_bot.cli import options, render, running
from image_bot.config import loading
from image_bot.engine import selecting


@click.command()
@options.config
@options.as_json
@options.strict
@click.option("--policy", "policies", multiple=True, metavar="NAME",
              help="Plan only this policy (repeatable); an unknown name exits 2 and lists "
                   "the known ones.")
def plan(config_path: Path, as_json: bool, strict: bool, policies: tuple[str, ...]) -> int:
    """Show what `run` would change, as a diff, without committing anything."""
    config = loading.load_bot_config(config_path)
    selection = selecting.Selection(policies=frozenset(policies)) if policies \
        else selecting.EVERYTHING
    report = running.run_cycle(config, dry_run=True, selection=selection,
                               show_progress=not as_json, purpose="plan")
    render.report(report, as_json=as_json, strict=strict)
    return render.exit_code(report, strict=strict)
