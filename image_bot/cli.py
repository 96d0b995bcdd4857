"""Command line: reads flags and environment once, runs the engine, maps errors to exit codes.

Exit codes: 0 everything ran (updated or already current); 1 at least one policy or
repository failed (the reason is printed); 2 the command line or bot config is invalid;
3 another image-bot process holds the state dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.status import Status
from rich.table import Table

from image_bot import __version__, refs
from image_bot.config import loading, models
from image_bot.engine import (
    context,
    cycle,
    history,
    locking,
    observing,
    ranking,
    scheduling,
    selecting,
    syncing,
    waking,
)
from image_bot.engine.report import CycleReport
from image_bot.errors import ConfigError, ImageBotError, StateDirLocked
from image_bot.server import app, page
from image_bot.state import State
from image_bot.sync import agent
from image_bot.sync import status as sync_status_files
from image_bot.sync.settings import AgentSettings
from image_bot.sync.status import SyncReport
from image_bot.update import setting

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
_STATUS_STYLE = {"updated": "green", "planned": "cyan", "current": "dim", "failed": "red",
                 "proposed": "green", "blocked": "yellow", "waiting": "cyan"}

_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="IMAGE_BOT_CONFIG", required=True, show_envvar=True,
    help="Bot config file (YAML): repositories, registries, git author, state_dir.")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print one JSON document instead of a table.")
_listen_option = click.option(
    "--listen", envvar="IMAGE_BOT_LISTEN", show_envvar=True, default=None,
    help="HOST:PORT for webhooks, /metrics, /healthz and the status page "
         "[default: daemon.listen in the config, 0.0.0.0:8080].")
_shard_option = click.option(
    "--shard", metavar="I/N", default=None,
    help="Take only the policies whose stable hash falls in shard I of N (0-based). "
         "Default: JOB_COMPLETION_INDEX/JOB_COMPLETIONS when set (Kubernetes Indexed Job).")
_log_format_option = click.option(
    "--log-format", type=click.Choice(["auto", "json", "human"]), default="auto",
    show_default=True, help="Logs on stderr: JSON lines, or human lines (auto: human on a "
                            "terminal).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="image-bot")
def main() -> None:
    """image-bot: keep image tags in a GitOps repository up to date.

    \b
    Typical use:
      image-bot validate --config bot.yaml        check the config and the policies
      image-bot plan --config bot.yaml            show what would change (a diff)
      image-bot run --once --config bot.yaml      update the YAML, commit and push
      image-bot run --config bot.yaml             the daemon: intervals, webhooks, /metrics
      image-bot status --config bot.yaml          what each policy last did

    Policies (kind: ImagePolicy) live in the config repository; see README.md.
    """


@main.command()
@_config_option
@_json_option
@click.option("--once", is_flag=True, help="Run one cycle and exit (for cron jobs and CI).")
@click.option("--interval", type=click.FloatRange(min=1.0), default=None,
              help="Daemon: poll every policy every SECONDS instead of its spec.interval.")
@_listen_option
@_shard_option
@_log_format_option
def run(config_path: Path, as_json: bool, once: bool, interval: float | None, listen: str | None,
        shard: str | None, log_format: observing.LogFormat) -> None:
    """Update image references, commit and push.

    \b
    With --once: one cycle over every policy, then exit 0 when every policy ran (updated or
    already current) and 1 when any failed.
    Without --once: the daemon. Each policy is polled on its spec.interval (with jitter),
    registry webhooks trigger scans within about a second, and HTTP is served on --listen:
    /webhook/<receiver>, /healthz, /readyz, /metrics and a status page at /.
    SIGTERM finishes running scans (up to daemon.grace seconds) and exits.

    One process per state dir: a second run on the same state dir exits 3.
    """
    config = _load_config(config_path)
    selection = selecting.Selection(shard=_shard(shard))
    if not once:
        _daemon(config, polling=True, interval=interval, listen=listen,
                shard=selection.shard, log_format=log_format)
        return
    report = _cycle(config, dry_run=False, selection=selection, show_progress=not as_json,
                    purpose="run --once")
    _print_report(report, as_json=as_json)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


@main.command()
@_config_option
@_listen_option
@_shard_option
@_log_format_option
def webhook(config_path: Path, listen: str | None, shard: str | None,
            log_format: observing.LogFormat) -> None:
    """Serve the webhook receiver alone: scan only when a registry says an image changed.

    Same HTTP endpoints as `run` (no interval polling). Receivers are configured in the bot
    config under `receivers:` (name, kind, secret_env); see docs/webhooks.md.
    """
    config = _load_config(config_path)
    _daemon(config, polling=False, interval=None, listen=listen, shard=_shard(shard),
            log_format=log_format)


@main.command()
@_config_option
@_json_option
def status(config_path: Path, as_json: bool) -> None:
    """Every policy: its tag in Git, the latest eligible tag, open PR, last error, last run.

    Read from the state dir, which `run` (with or without --once) keeps up to date; safe to
    run while the daemon works.
    """
    config = _load_config(config_path)
    with State.in_dir(config.state_dir) as state:
        rows = history.statuses(state)
    if as_json:
        click.echo(json.dumps({"policies": [row.to_dict() for row in rows]}, indent=2))
        return
    if not rows:
        click.echo(f"no policy has run yet (state dir {config.state_dir})")
        return
    table = Table(title="image-bot status", title_justify="left")
    for column in ("policy", "image", "in Git", "latest", "status", "PR", "last error",
                   "last run"):
        table.add_column(column, overflow="fold")
    for row in rows:
        behind = row.latest and row.current != row.latest
        table.add_row(row.policy, row.image, row.current or "—",
                      f"[yellow]{row.latest}[/]" if behind else (row.latest or "—"),
                      f"[{_STATUS_STYLE.get(row.status, 'white')}]{row.status}[/]",
                      row.pull_request or "—", row.last_error or "", page.ago(row.last_run))
    Console(highlight=False).print(table)


@main.command()
@_config_option
@_json_option
def plan(config_path: Path, as_json: bool) -> None:
    """Show what `run` would change, as a diff, without committing anything."""
    config = _load_config(config_path)
    report = _cycle(config, dry_run=True, selection=selecting.EVERYTHING,
                    show_progress=not as_json, purpose="plan")
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


def _shard(text: str | None) -> selecting.Shard | None:
    try:
        return selecting.parse_shard(text) if text else selecting.shard_from_env()
    except selecting.InvalidShard as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None


def _cycle(config: models.BotConfig, *, dry_run: bool, selection: selecting.Selection,
           show_progress: bool, purpose: str) -> CycleReport:
    """One cycle under the state dir lock, with a progress line on a terminal."""
    console = Console(stderr=True)
    try:
        with locking.hold(config.state_dir, purpose=purpose), \
                console.status("starting", spinner="dots") if show_progress and \
                console.is_terminal else contextlib.nullcontext() as progress:
            report = asyncio.run(_cycle_async(config, dry_run=dry_run, selection=selection,
                                              progress=progress, purpose=purpose))
    except StateDirLocked as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    return report


async def _cycle_async(config: models.BotConfig, *, dry_run: bool,
                       selection: selecting.Selection, progress: Status | None,
                       purpose: str) -> CycleReport:
    started, requests = time.monotonic(), [0]

    def counted(method: str, url: str, status: int, seconds: float) -> None:
        requests[0] += 1
        if progress is not None:
            progress.update(f"scanning {len(config.repositories)} repositories: "
                            f"{requests[0]} registry requests, "
                            f"{time.monotonic() - started:.0f}s")

    if progress is not None:
        progress.update(f"fetching {len(config.repositories)} repositories")
    async with context.Engine.open(config, on_request=counted) as engine:
        report = await cycle.run_once(engine, dry_run=dry_run, selection=selection)
        engine.record(report, trigger=purpose, seconds=time.monotonic() - started)
        return report


def _daemon(config: models.BotConfig, *, polling: bool, interval: float | None,
            listen: str | None, shard: selecting.Shard | None,
            log_format: observing.LogFormat) -> None:
    observing.setup_logging(log_format)
    try:
        with locking.hold(config.state_dir, purpose="daemon"):
            asyncio.run(_daemon_async(config, polling=polling, interval=interval,
                                      listen=listen or config.daemon.listen, shard=shard))
    except StateDirLocked as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


async def _daemon_async(config: models.BotConfig, *, polling: bool,
                        interval: float | None, listen: str,
                        shard: selecting.Shard | None) -> None:
    async with context.Engine.open(config) as engine:
        scheduler = scheduling.Scheduler(engine, shard=shard, polling=polling,
                                         interval=interval)
        await app.serve(config, scheduler=scheduler, state=engine.state,
                        metrics=engine.metrics, listen=listen)


@main.command(name="set-image")
@click.argument("arguments", nargs=-1, required=True, metavar="PATH... IMAGE=REF...")
@click.option("--dry-run", is_flag=True, help="Change nothing; print the unified diff.")
@_json_option
def set_image(arguments: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Point every reference to IMAGE under PATH (files or folders) at REF.

    \b
    REF is repo:tag, repo@sha256:…, repo:tag@sha256:…, or a bare TAG (same repository):
      image-bot set-image deploy/ ghcr.io/acme/web=1.4.2
      image-bot set-image values.yaml nginx=nginx:1.27@sha256:0123…
    References are `image:` values, Helm image maps, kustomize `images:` and Compose
    services (see docs/references.md). Only the value's bytes change; every edit is
    re-read before the file is replaced. Exits 0 when it ran (even if nothing changed),
    1 when a file could not be edited safely (it is left untouched), 2 on bad arguments.
    """
    paths, assignments = _split_set_image_arguments(arguments)
    outcome = setting.set_images(Path.cwd(), paths, assignments, write=not dry_run)
    result = outcome.result
    if as_json:
        click.echo(json.dumps({
            "dry_run": dry_run, "files": list(result.files),
            "changes": [{"file": c.file, "line": c.line, "image": c.image, "old": c.old,
                         "new": c.new} for c in result.changes],
            "skipped": [{"file": s.file, "reason": s.reason} for s in outcome.unreadable],
            "refused": [{"file": s.file, "reason": s.reason} for s in outcome.refused],
        }, indent=2))
    else:
        for file in result.files:
            click.echo(f"{'would update' if dry_run else 'updated'} {file}")
        if dry_run:
            click.echo("".join(result.diffs.values()), nl=False)
        for skipped in outcome.unreadable:
            click.echo(f"skipped {skipped.file}: {skipped.reason}", err=True)
        for refused in outcome.refused:
            click.echo(f"error: {refused.file}: {refused.reason}", err=True)
    sys.exit(EXIT_FAILED if outcome.refused else EXIT_OK)


def _split_set_image_arguments(
        arguments: tuple[str, ...]) -> tuple[list[Path], list[setting.Assignment]]:
    paths: list[Path] = []
    assignments: list[setting.Assignment] = []
    for argument in arguments:
        if "=" in argument and not Path(argument).exists():
            try:
                assignments.append(setting.parse_assignment(argument))
            except setting.InvalidAssignment as exc:
                raise click.UsageError(str(exc)) from None
        elif Path(argument).exists():
            paths.append(Path(argument))
        else:
            raise click.UsageError(f"{argument!r}: no such file or folder")
    if not paths or not assignments:
        raise click.UsageError("give at least one PATH and one IMAGE=REF")
    return paths, assignments


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
            console.print(f"[yellow]skipped[/] {skipped.file}: {skipped.reason}")
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


# --- sync agent ---------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_SYNC_STYLE = {"Synced": "green", "OutOfSync": "yellow", "Healthy": "green",
               "Progressing": "cyan", "Degraded": "red", "Missing": "red", "Unknown": "dim"}


def _seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``90``, ``30s``, ``1m``, ``500ms``, ``1h`` → seconds (a click callback)."""
    match = _DURATION.match(value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 1m or 1h")
    number, unit = float(match[1]), match[2] or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def _state_dir(state_dir: Path | None, config_path: Path | None) -> tuple[
        Path, models.BotConfig | None]:
    config = _load_config(config_path) if config_path else None
    if state_dir is not None:
        return state_dir, config
    if config is not None:
        return config.state_dir, config
    default = models.BotConfig.model_fields["state_dir"].get_default(call_default_factory=True)
    return Path(default), None


_sync_state_dir = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    envvar="IMAGE_BOT_STATE_DIR", show_envvar=True,
    help="Where the agent keeps its clone and status file (default: the config's state_dir, "
         "else $XDG_STATE_HOME/image-bot).")
_sync_config = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="IMAGE_BOT_CONFIG", show_envvar=True,
    help="Optional bot config: registry credentials for pulls, and the state_dir.")


@main.group(invoke_without_command=True)
@click.option("--repo", "url", envvar="IMAGE_BOT_SYNC_REPO", show_envvar=True,
              help="Config repository URL (any URL git clone accepts).")
@click.option("--branch", default="main", show_default=True, help="Branch to deploy.")
@click.option("--path", "path", default=".", show_default=True,
              help="Folder (or file) in the repository with Compose files (docker) or "
                   "manifests / a kustomization (kubernetes).")
@click.option("--target", type=click.Choice(sorted(agent.TARGETS)), default="docker",
              show_default=True, help="What to apply the repository to.")
@click.option("--once", is_flag=True, help="One pass, then exit 0 (all Synced and Healthy) "
                                           "or 1.")
@click.option("--interval", default="1m", show_default=True, callback=_seconds,
              help="Time between passes (30s, 1m, 1h).")
@click.option("--name", help="Agent name: labels its containers (docker) or names its "
                             "ApplySet (kubernetes); default derived from repo, branch, path.")
@click.option("--no-prune", is_flag=True, help="Keep what Git no longer has (report it).")
@click.option("--no-self-heal", is_flag=True,
              help="Only report drift (a container stopped, removed or changed by hand).")
@click.option("--healthy-after", default="5s", show_default=True, callback=_seconds,
              help="A service without a healthcheck is healthy once it ran this long.")
@click.option("--health-timeout", default="60s", show_default=True, callback=_seconds,
              help="Give up on a new container (and roll back) after this long.")
@click.option("--stop-timeout", default=10, show_default=True, type=click.IntRange(min=0),
              help="Seconds a container gets to stop before it is killed.")
@click.option("--docker-host", envvar="DOCKER_HOST", show_envvar=True,
              help="Docker engine to sync (unix:///path/docker.sock, tcp://...).")
@click.option("--namespace", help="kubernetes: namespace for objects without one and for "
                                  "the ApplySet.")
@click.option("--listen", envvar="IMAGE_BOT_SYNC_LISTEN", show_envvar=True,
              help="Serve the sync status as Prometheus metrics on HOST:PORT (/metrics) "
                   "while the agent runs (not with --once).")
@click.option("--kubectl", default="kubectl", show_default=True, envvar="IMAGE_BOT_KUBECTL",
              show_envvar=True, help="kubernetes: the kubectl binary (uses KUBECONFIG).")
@click.option("--no-validate", is_flag=True,
              help="kubernetes: kubectl apply --validate=false, for API servers that serve "
                   "no OpenAPI schema (emulators).")
@_sync_state_dir
@_sync_config
@_json_option
@click.pass_context
def sync(ctx: click.Context, url: str | None, branch: str, path: str, target: str,
         once: bool, interval: float, name: str | None, no_prune: bool, no_self_heal: bool,
         healthy_after: float, health_timeout: float, stop_timeout: int,
         docker_host: str | None, namespace: str | None, listen: str | None, kubectl: str,
         no_validate: bool,
         state_dir: Path | None,
         config_path: Path | None, as_json: bool) -> None:
    """Apply the config repository to a Docker host (or Kubernetes) and keep it there.

    \b
    Each pass fetches BRANCH, renders the desired state from --path, compares it with what
    runs, applies the difference, removes what Git no longer has, waits until changed
    services are healthy (rolling back those that are not) and writes a status file.
    \b
      image-bot sync --repo https://git.example.com/ops/config.git --path deploy/ --once
      image-bot sync status            what the last pass found
    """
    if ctx.invoked_subcommand is not None:
        return
    if not url:
        raise click.UsageError("--repo is required (or IMAGE_BOT_SYNC_REPO)")
    directory, config = _state_dir(state_dir, config_path)
    settings = AgentSettings(
        agent=name or syncing.agent_name(url, branch, path, target), target=target,
        prune=not no_prune, self_heal=not no_self_heal, min_running=healthy_after,
        health_timeout=health_timeout, stop_timeout=stop_timeout,
        credentials=syncing.credentials(config), docker_host=docker_host,
        namespace=namespace, kubectl=kubectl, validate=not no_validate)
    job = syncing.SyncJob(url, branch, path, directory, settings)
    sync_target = agent.build(settings)
    try:
        if once:
            report = syncing.run_pass(job, sync_target)
            _print_sync([report], as_json=as_json)
            sys.exit(EXIT_OK if report.ok else EXIT_FAILED)
        stop_metrics = None
        if listen:
            try:
                host, port = app.parse_listen(listen)
            except ConfigError as exc:
                raise click.BadParameter(str(exc), param_hint="--listen") from None
            stop_metrics = syncing.serve_metrics(directory, host=host, port=port)
        try:
            syncing.run_forever(job, sync_target, interval=interval,
                                on_report=lambda r: _print_sync([r], as_json=as_json),
                                sleep=waking.sleeper(directory))
        finally:
            if stop_metrics:
                stop_metrics()
    finally:
        sync_target.close()


@sync.command("status")
@_sync_state_dir
@_sync_config
@click.option("--name", help="Only this agent (default: every agent in the state dir).")
@_json_option
def sync_status(state_dir: Path | None, config_path: Path | None, name: str | None,
                as_json: bool) -> None:
    """Show what the last sync pass found, from the status file (no Docker or Git needed).

    Exits 0 when every service is Synced and Healthy, 1 otherwise or when no agent ran yet.
    """
    directory, _ = _state_dir(state_dir, config_path)
    reports = [r for r in sync_status_files.read_all(syncing.status_dir(directory))
               if name is None or r.agent == name]
    _print_sync(reports, as_json=as_json)
    if not reports and not as_json:
        click.echo(f"no sync status in {syncing.status_dir(directory)}", err=True)
    sys.exit(EXIT_OK if reports and all(r.ok for r in reports) else EXIT_FAILED)


def _print_sync(reports: list[SyncReport], *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"agents": [r.to_dict() for r in reports]}, indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    for report in reports:
        revision = (report.revision or "-")[:12]
        table = Table(title=f"{report.agent}: {report.repository} ({report.branch}) "
                            f"{report.path} → {report.target} @ {revision}",
                      title_justify="left")
        for column in ("application", "service", "sync", "health", "revision", "details"):
            table.add_column(column)
        for s in report.services:
            details = "; ".join(x for x in (s.action if s.action != "none" else "", s.drift,
                                            s.error) if x)
            table.add_row(s.application, s.service, f"[{_SYNC_STYLE[s.sync]}]{s.sync}[/]",
                          f"[{_SYNC_STYLE[s.health]}]{s.health}[/]", (s.revision or "-")[:12],
                          details)
        console.print(table)
        for removed in report.removed:
            console.print(f"removed {removed} (not in Git any more)")
        for error in report.errors:
            console.print(f"[red]error:[/] {error}")
            click.echo(f"error: {error}", err=True)


_STRATEGY_FLAGS = {"semver_range": "--semver", "numerical": "--numerical",
                   "alphabetical": "--alphabetical", "newest_build": "--newest-build",
                   "digest_tag": "--digest"}


@main.command("test", context_settings={"max_content_width": 100})
@click.argument("image")
@click.option("--semver", "semver_range", metavar="RANGE",
              help="Highest version in an npm-style range: '^1.2', '>=1.2 <2', '~1.2', '1.x', "
                   "'1.2 - 1.4', '<1 || >=3'. The default strategy (range '*').")
@click.option("--prerelease", is_flag=True, help="Let pre-releases (1.0.0-rc.1) qualify.")
@click.option("--numerical", is_flag=True, help="Order the (extracted) value as a number.")
@click.option("--alphabetical", is_flag=True, help="Order the (extracted) value as text.")
@click.option("--order", type=click.Choice(["asc", "desc"]),
              help="With --numerical/--alphabetical: asc picks the highest (default), "
                   "desc the lowest.")
@click.option("--newest-build", is_flag=True,
              help="Newest image creation time wins (ties: the highest tag name).")
@click.option("--digest", "digest_tag", metavar="TAG",
              help="Follow one mutable tag (latest, stable) and print TAG@sha256:….")
@click.option("--pattern", metavar="RE", help="Python regex a tag must match (unanchored).")
@click.option("--extract", metavar="TPL",
              help="What to order, from the pattern's groups: '$1', '$name', '${name}'.")
@click.option("--exclude", multiple=True, metavar="PAT",
              help="Skip tags matching a glob ('*-debug') or 'regex:RE'. Repeatable.")
@click.option("--variant", metavar="V",
              help="Variant family to keep: 'alpine', 'slim', 'none' or 'any' (default: the "
                   "current tag's family).")
@click.option("--precision", metavar="N|any",
              help="Numeric components a tag must have: 1-4, 'any' (default: as many as "
                   "the current tag).")
@click.option("--max-bump", type=click.Choice(["major", "minor", "patch"]),
              help="Largest step away from --current (minor never crosses a major).")
@click.option("--allow-downgrade", is_flag=True, help="Allow a tag lower than --current.")
@click.option("--min-age", metavar="DURATION",
              help="A tag must be at least this old ('30m', '2d'); needs creation times.")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH",
              help="A tag must offer this platform (repeatable); needs platform lists.")
@click.option("--current", metavar="TAG",
              help="The tag deployed now (default: the tag in IMAGE, if any).")
@click.option("--tags-from", type=click.File("r", encoding="utf-8"), metavar="FILE|-",
              help="Rank these tags instead of the registry's: one per line, optionally "
                   "TAG<TAB>RFC3339-created[<TAB>digest].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Bot config file, for registry settings (insecure, credentials).")
@_json_option
@click.option("--explain", is_flag=True,
              help="Also show the ranking, the runner-up and the rule that excluded each tag.")
@click.option("-v", "--verbose", is_flag=True,
              help="Print each registry request to stderr: method, URL (no secrets), status, "
                   "time.")
def test_command(image: str, **flags: Any) -> None:
    """Rank the tags of IMAGE with a policy given as flags and print the chosen tag.

    \b
    Examples:
      image-bot test nginx:1.25.3-alpine3.19 --explain
      image-bot test ghcr.io/acme/app --semver '^1.2' --current 1.2.0
      printf '1.0.0-rc9\\n1.0.0-rc10\\n' | image-bot test app --prerelease --tags-from -

    The chosen tag goes to stdout (nothing when no tag qualifies) and the reason to
    stderr. Exit codes: 0 it ran (even if nothing qualifies); 1 the registry failed;
    2 a usage or policy error. Rules and examples: docs/policies.md.
    """
    as_json, explain = flags.pop("as_json"), flags.pop("explain")
    verbose = flags.pop("verbose")
    try:
        ref = refs.parse(image)
        policy = ranking.build_policy(ref, _spec_from_flags(flags))
        current = flags["current"] or ref.tag
        if flags["tags_from"] is not None:
            source = "-" if flags["tags_from"].name == "<stdin>" else flags["tags_from"].name
            tags = list(ranking.read_tags(flags["tags_from"].read(), source))
        else:
            tags = asyncio.run(_registry_tags(ref, policy, flags["config_path"],
                                              verbose=verbose))
    except (ConfigError, refs.InvalidReference) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except ImageBotError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    decision = policy.select(tags, current=current, current_digest=ref.digest,
                             now=datetime.now(UTC))
    _print_decision(decision, as_json=as_json, explain=explain)


def _spec_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    chosen = [name for name in _STRATEGY_FLAGS if flags[name]]
    if len(chosen) > 1:
        shown = " and ".join(_STRATEGY_FLAGS[name] for name in chosen)
        raise click.UsageError(f"choose one strategy, not {shown}")
    if flags["order"] and not (flags["numerical"] or flags["alphabetical"]):
        raise click.UsageError("--order goes with --numerical or --alphabetical")
    order = {"order": flags["order"] or "asc"}
    select: dict[str, Any] = {"semver": {"range": flags["semver_range"] or "*",
                                         "prerelease": flags["prerelease"]}}
    if flags["numerical"]:
        select = {"numerical": order}
    elif flags["alphabetical"]:
        select = {"alphabetical": order}
    elif flags["newest_build"]:
        select = {"newest-build": {}}
    elif flags["digest_tag"]:
        select = {"digest": {"tag": flags["digest_tag"]}}
    spec: dict[str, Any] = {"select": select, "allow-downgrade": flags["allow_downgrade"],
                            "platforms": list(flags["platforms"])}
    filters = {"pattern": flags["pattern"], "extract": flags["extract"],
               "exclude": list(flags["exclude"])}
    spec["filter"] = {k: v for k, v in filters.items() if v}
    precision = flags["precision"]
    optional = {"variant": flags["variant"], "max-bump": flags["max_bump"],
                "min-age": flags["min_age"],
                "precision": int(precision) if precision and precision.isdigit() else precision}
    spec.update({k: v for k, v in optional.items() if v is not None})
    return spec


async def _registry_tags(ref: refs.ImageRef, policy: Any, config_path: Path | None, *,
                         verbose: bool = False) -> list[Any]:
    settings = loading.load_bot_config(config_path).registries if config_path else []
    on_request = _print_request if verbose else None
    return await ranking.fetch_tags(ref.with_tag(None), policy, settings,
                                    on_request=on_request)


def _print_request(method: str, url: str, status: int, seconds: float) -> None:
    """One line per registry request for ``test --verbose`` (the URL is already redacted)."""
    shown = status if status else "no answer"
    click.echo(f"{method} {url} → {shown} ({seconds * 1000:.0f} ms)", err=True)


def _print_decision(decision: Any, *, as_json: bool, explain: bool) -> None:
    if as_json:
        click.echo(json.dumps(ranking.to_json(decision, explain=explain), indent=2))
        return
    if explain:
        for line in ranking.explanation(decision):
            click.echo(line, err=True)
    else:
        click.echo(decision.reason, err=True)
    chosen = ranking.written(decision)
    if chosen:
        click.echo(chosen)
