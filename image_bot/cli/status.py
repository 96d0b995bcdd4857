"""`image-bot status`: each image as a pipeline of stages and agents, read from the state dir.

The same document as the daemon's ``/api/status`` and status page (``engine.overview``);
it reads the state dir only, unless ``--peers`` also asks the daemons in ``daemon.peers``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from image_bot.cli import errors, options, render
from image_bot.config import loading
from image_bot.engine import history, overview


@click.command()
@options.config
@options.as_json
@click.option("--peers", "ask_peers", is_flag=True,
              help="Also merge in the parts of the daemons listed in daemon.peers (shards).")
def status(config_path: Path, as_json: bool, ask_peers: bool) -> int:
    """Each image as a pipeline: its stages (tag in Git, PR, state) and the agents running them.

    Per stage (a policy, upstream first in its select.promote chain): the tag in Git, the open
    PR, its state and promotion; per agent deploying it: the tag it runs, sync and health.
    States: current, pending, promoting, waiting, declined, degraded, suspended, failed,
    unmatched. `--json` prints the document `/api/status` serves
    (schema/status.schema.json). Read from the state dir, which `run` (with or without
    --once) keeps up to date; safe to run while the daemon works.
    """
    config = loading.load_bot_config(config_path)
    with history.open_state(config) as state:
        document = overview.read(state, config, now=time.time())
    if ask_peers:
        document = asyncio.run(overview.with_peers(document, config.daemon.peers,
                                                   timeout=config.daemon.peer_timeout))
    render.status_document(document, state_dir=config.state_dir, as_json=as_json)
    return errors.EXIT_OK
