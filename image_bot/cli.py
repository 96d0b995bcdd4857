"""Command line: reads flags and environment once, runs the engine, maps errors to exit codes.

Exit codes: 0 everything ran (updated or already current); 1 at least one policy or
repository failed (the reason is printed); 2 the command line or bot config is invalid.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from image_bot import __version__
from image_bot.config import loading, models
from image_bot.engine import cycle
from image_bot.engine.report import CycleReport
from image_bot.errors import ConfigError, ImageBotError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_STATUS_STYLE = {"updated": "green", "planned": "cyan", "current": "dim", "failed": "red"}

_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="IMAGE_BOT_CONFIG", required=True, show_envvar=True,
    help="Bot config file (YAML): repositories, registries, git author, state_dir.")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print one JSON document instead of a table.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="image-bot")
def main() -> None:
    """image-bot: keep image tags in a GitOps repository up to date.

    \b
    Typical use:
      image-bot validate --config bot.yaml        check the config and the policies
      image-bot plan --config bot.yaml            show what would change (a diff)
      image-bot run --once --config bot.yaml      update the YAML, commit and push

    Policies (kind: ImagePolicy) live in the config repository; see README.md.
    """


@main.command()
@_config_option
@_json_option
@click.option("--once", is_flag=True, help="Run one cycle and exit (for cron jobs and CI).")
@click.option("--interval", type=click.FloatRange(min=1.0), default=300.0, show_default=True,
              help="Seconds between cycles when not --once.")
def run(config_path: Path, as_json: bool, once: bool, interval: float) -> None:
    """Update image references, commit and push.

    Exits 0 when every policy ran (updated or already current) and 1 when any failed.
    """
    config = _load_config(config_path)
    while True:
        report = asyncio.run(cycle.run_once(config))
        _print_report(report, as_json=as_json)
        if once:
            sys.exit(EXIT_OK if report.ok else EXIT_FAILED)
        time.sleep(interval)


@main.command()
@_config_option
@_json_option
def plan(config_path: Path, as_json: bool) -> None:
    """Show what `run` would change, as a diff, without committing anything."""
    config = _load_config(config_path)
    report = asyncio.run(cycle.run_once(config, dry_run=True))
    _print_report(report, as_json=as_json)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


@main.command()
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="IMAGE_BOT_CONFIG", show_envvar=True, help="Bot config file to check too.")
@_json_option
def validate(path: Path | None, config_path: Path | None, as_json: bool) -> None:
    """Check policy files under PATH (a file or directory) and the bot config.

    Prints one line per problem, naming the file, the policy and the key.
    """
    if path is None and config_path is None:
        raise click.UsageError("give a PATH with policies, or --config, or both")
    problems: list[str] = []
    count = 0
    if config_path is not None:
        try:
            loading.load_bot_config(config_path)
        except ConfigError as exc:
            problems.append(str(exc))
    if path is not None:
        try:
            policy_set = loading.load_policies(path)
        except ConfigError as exc:
            policy_set = loading.PolicySet((), (exc,))
        problems += [str(error) for error in policy_set.errors]
        for loaded in policy_set.policies:
            try:
                cycle.build_policy(loaded, loaded.policy.spec.publish.branch or "")
                count += 1
            except ConfigError as exc:
                problems.append(str(exc))
    if as_json:
        click.echo(json.dumps({"ok": not problems, "policies": count, "problems": problems}))
    else:
        for problem in problems:
            click.echo(problem, err=True)
        click.echo(f"{count} valid polic{'y' if count == 1 else 'ies'}, "
                   f"{len(problems)} problem(s)")
    sys.exit(EXIT_FAILED if problems else EXIT_OK)


def _load_config(path: Path) -> models.BotConfig:
    try:
        return loading.load_bot_config(path)
    except ImageBotError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _print_report(report: CycleReport, *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    for repo in report.repositories:
        if report.dry_run and repo.diff:
            console.print(repo.diff, markup=False, end="")
        table = Table(title=f"{repo.repository} ({repo.branch})", title_justify="left")
        for column in ("policy", "status", "details"):
            table.add_column(column)
        for outcome in repo.outcomes:
            style = _STATUS_STYLE[outcome.status]
            table.add_row(outcome.policy, f"[{style}]{outcome.status}[/]", outcome.message)
        if repo.outcomes:
            console.print(table)
        for commit in repo.commits:
            console.print(f"committed {commit[:12]} and pushed to {repo.branch}")
        for skipped in repo.skipped:
            console.print(f"[yellow]skipped[/] {skipped['file']}: {skipped['reason']}")
        if repo.error:
            console.print(f"[red]error:[/] {repo.error}", markup=True)
    _print_errors(report)


def _print_errors(report: CycleReport) -> None:
    """Failures also go to stderr, one line each, so scripts and CI logs show them."""
    for repo in report.repositories:
        lines: list[Any] = [f"error: {o.policy}: {o.message}" for o in repo.outcomes
                            if o.status == "failed"]
        if repo.error:
            lines.append(f"error: {repo.repository}: {repo.error}")
        for line in lines:
            click.echo(line, err=True)
