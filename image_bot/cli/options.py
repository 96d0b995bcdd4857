"""Options several commands share (same flag, same help, same environment variable).

Must stay import-light: click only, so a command module pays for its own imports alone.
"""

from __future__ import annotations

from pathlib import Path

import click

config = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="IMAGE_BOT_CONFIG", required=True, show_envvar=True,
    help="Bot config file (YAML): repositories, registries, git author, state_dir.")
as_json = click.option("--json", "as_json", is_flag=True,
                       help="Print one JSON document instead of a table.")
listen = click.option(
    "--listen", envvar="IMAGE_BOT_LISTEN", show_envvar=True, default=None,
    help="HOST:PORT for webhooks, /metrics, /healthz and the status page "
         "[default: daemon.listen in the config, 0.0.0.0:8080].")
shard = click.option(
    "--shard", metavar="I/N", default=None,
    help="Take only the policies whose stable hash falls in shard I of N (0-based). "
         "Default: JOB_COMPLETION_INDEX/JOB_COMPLETIONS when set (Kubernetes Indexed Job).")
log_format = click.option(
    "--log-format", type=click.Choice(["auto", "json", "human"]), default="auto",
    show_default=True, help="Logs on stderr: JSON lines, or human lines (auto: human on a "
                            "terminal).")

strict = click.option("--strict", is_flag=True,
                      help="Also fail (exit 1) when a policy finds no reference to its image "
                           "under its paths (status unmatched: a typo in paths?).")


def seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A duration flag (``90s``, ``5m``, ``1m30s``, ``1h``; a bare number is seconds) →
    seconds: the one grammar of ``image_bot.config.durations`` (a click callback)."""
    if value is None:
        return None
    from image_bot.config import durations  # pydantic: paid only when a command runs

    text = value.strip()
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else durations.parse(text)
    except durations.InvalidDuration as exc:
        raise click.BadParameter(str(exc)) from None


def _default_actor() -> str | None:
    """Who runs the command: ``$USER`` (or ``$LOGNAME``), else git's ``user.name``."""
    import os
    import subprocess

    for variable in ("USER", "LOGNAME"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        done = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


actor = click.option(
    "--actor", default=_default_actor, show_default="$USER, else git config user.name",
    help="Who asks: recorded in the event log (and the commit trailers, where it commits).")
dry_run = click.option("--dry-run", is_flag=True,
                       help="Show the diff without committing, pushing or recording anything.")
