"""`image-bot run` (one cycle with --once, else the daemon) and `image-bot webhook`.

Reads flags and environment once and hands them to image_bot.cli.running; prints through
image_bot.cli.render and returns an exit code (never calls sys.exit).
"""

from __future__ import annotations

from pathlib import Path

import click

from image_bot.cli import errors, options, render, running
from image_bot.config import loading
from image_bot.engine import observing, selecting


@click.command()
@options.config
@options.as_json
@click.option("--once", is_flag=True, help="Run one cycle and exit (for cron jobs and CI).")
@click.option("--interval", default=None, callback=options.seconds, metavar="DURATION",
              help="Daemon: poll every policy this often (30s, 5m, 1h; a bare number is "
                   "seconds; at least 1s) instead of its spec.interval.")
@options.listen
@options.shard
@options.log_format
@options.strict
@click.option("--policy", "policies", multiple=True, metavar="NAME",
              help="With --once: run only this policy (repeatable); an unknown name exits 2 "
                   "and lists the known ones.")
def run(config_path: Path, as_json: bool, once: bool, interval: float | None, listen: str | None,
        shard: str | None, log_format: observing.LogFormat, strict: bool,
        policies: tuple[str, ...]) -> int:
    """Update image references, commit and push.

    \b
    With --once: one cycle over every policy, then exit 0 when every policy ran (updated or
    already current) and 1 when any failed.
    With --once --policy NAME: only that policy, now (a suspended one is reported, not run):
      image-bot run --once --config bot.yaml --policy web --policy api
    Without --once: the daemon. Each policy is polled on its spec.interval (with jitter),
    registry webhooks trigger scans within about a second, and HTTP is served on --listen:
    /webhook/<receiver>, /healthz, /readyz, /metrics and a status page at /.
    SIGTERM finishes running scans (up to daemon.grace seconds) and exits.

    One process per state dir: a second run on the same state dir exits 3.
    """
    if interval is not None and interval < 1.0:
        raise click.BadParameter("must be at least 1s", param_hint="--interval")
    if policies and not once:
        raise click.UsageError("--policy needs --once (the daemon runs every policy)")
    config = loading.load_bot_config(config_path)
    selection = selecting.Selection(shard=parse_shard(shard),
                                    policies=frozenset(policies) if policies else None)
    if not once:
        running.run_daemon(config, polling=True, interval=interval, listen=listen,
                           shard=selection.shard, log_format=log_format)
        return errors.EXIT_OK
    report = running.run_cycle(config, dry_run=False, selection=selection,
                               show_progress=not as_json,
                               purpose=" ".join(["run --once", *(f"--policy {p}"
                                                                 for p in policies)]))
    render.report(report, as_json=as_json, strict=strict)
    return render.exit_code(report, strict=strict)


@click.command()
@options.config
@options.listen
@options.shard
@options.log_format
def webhook(config_path: Path, listen: str | None, shard: str | None,
            log_format: observing.LogFormat) -> int:
    """Serve the webhook receiver alone: scan only when a registry says an image changed.

    Same HTTP endpoints as `run` (no interval polling). Receivers are configured in the bot
    config under `receivers:` (name, kind, secret_env); see docs/webhooks.md.
    """
    config = loading.load_bot_config(config_path)
    running.run_daemon(config, polling=False, interval=None, listen=listen,
                       shard=parse_shard(shard), log_format=log_format)
    return errors.EXIT_OK


def parse_shard(text: str | None) -> selecting.Shard | None:
    """``--shard I/N``, else the Kubernetes Indexed Job's environment, else every policy."""
    try:
        return selecting.parse_shard(text) if text else selecting.shard_from_env()
    except selecting.InvalidShard as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None
