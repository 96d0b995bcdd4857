"""`image-bot status`: what each policy last did, read from the state dir (never the network)."""

from __future__ import annotations

from pathlib import Path

import click

from image_bot.cli import errors, options, render
from image_bot.config import loading
from image_bot.engine import history
from image_bot.state import State


@click.command()
@options.config
@options.as_json
def status(config_path: Path, as_json: bool) -> int:
    """Every policy: its tag in Git, the latest eligible tag, open PR, last error, last run.

    Read from the state dir, which `run` (with or without --once) keeps up to date; safe to
    run while the daemon works.
    """
    config = loading.load_bot_config(config_path)
    with State.in_dir(config.state_dir) as state:
        rows = history.statuses(state)
    render.statuses(rows, state_dir=config.state_dir, as_json=as_json)
    return errors.EXIT_OK
