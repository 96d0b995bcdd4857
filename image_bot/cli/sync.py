"""`image-bot sync` (the agent: Git → Docker or Kubernetes) and `image-bot sync status`.

Reads flags and environment once and hands them to image_bot.engine.syncing; prints through
image_bot.cli.render and returns an exit code (never calls sys.exit).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from image_bot.cli import errors, options, render
from image_bot.config import loading, models, secrets
from image_bot.engine import reporting, syncing, waking
from image_bot.errors import ConfigError
from image_bot.server import app
from image_bot.sync import agent
from image_bot.sync import status as sync_status_files
from image_bot.sync.settings import AgentSettings
from image_bot.sync.status import SyncReport


def _state_dir(state_dir: Path | None, config_path: Path | None) -> tuple[
        Path, models.BotConfig | None]:
    config = loading.load_bot_config(config_path) if config_path else None
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


@click.group(invoke_without_command=True)
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
@click.option("--interval", default="1m", show_default=True, callback=options.seconds,
              help="Time between passes (30s, 1m, 1h).")
@click.option("--name", help="Agent name: labels its containers (docker) or names its "
                             "ApplySet (kubernetes); default derived from repo, branch, path.")
@click.option("--no-prune", is_flag=True, help="Keep what Git no longer has (report it).")
@click.option("--no-self-heal", is_flag=True,
              help="Only report drift (a container stopped, removed or changed by hand).")
@click.option("--healthy-after", default="5s", show_default=True, callback=options.seconds,
              help="A service without a healthcheck is healthy once it ran this long.")
@click.option("--health-timeout", default="60s", show_default=True, callback=options.seconds,
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
@click.option("--report-to", envvar="IMAGE_BOT_REPORT_TO", show_envvar=True,
              help="Post each pass to the bot daemon: its URL (http://bot:8080), or the full "
                   "report URL. Needs --report-secret-env or --report-secret-file.")
@click.option("--report-secret-env", help="Environment variable holding the shared secret "
                                          "(the bot config's agents.secret_env).")
@click.option("--report-secret-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the shared secret.")
@_sync_state_dir
@_sync_config
@options.as_json
@click.pass_context
def sync(ctx: click.Context, url: str | None, branch: str, path: str, target: str,
         once: bool, interval: float, name: str | None, no_prune: bool, no_self_heal: bool,
         healthy_after: float, health_timeout: float, stop_timeout: int,
         docker_host: str | None, namespace: str | None, listen: str | None, kubectl: str,
         no_validate: bool, report_to: str | None, report_secret_env: str | None,
         report_secret_file: Path | None, state_dir: Path | None,
         config_path: Path | None, as_json: bool) -> int | None:
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
        return None
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
    send = _reporter(report_to, report_secret_env, report_secret_file, settings.agent,
                     interval)
    sync_target = agent.build(settings)

    def on_report(report: SyncReport) -> None:
        render.sync_reports([report], as_json=as_json)
        send(report)

    try:
        if once:
            report = syncing.run_pass(job, sync_target)
            on_report(report)
            return errors.EXIT_OK if report.ok else errors.EXIT_FAILED
        stop_metrics = None
        if listen:
            try:
                host, port = app.parse_listen(listen)
            except ConfigError as exc:
                raise click.BadParameter(str(exc), param_hint="--listen") from None
            stop_metrics = syncing.serve_metrics(directory, host=host, port=port)
        try:
            syncing.run_forever(job, sync_target, interval=interval, on_report=on_report,
                                sleep=waking.sleeper(directory))
        finally:
            if stop_metrics:
                stop_metrics()
        return errors.EXIT_OK
    finally:
        sync_target.close()


def _reporter(url: str | None, secret_env: str | None, secret_file: Path | None,
              name: str, interval: float) -> Callable[[SyncReport], object]:
    """Post each report to the bot (``--report-to``), or do nothing without it."""
    if not url:
        if secret_env or secret_file:
            raise click.UsageError("--report-secret-env/--report-secret-file need --report-to")
        return lambda report: None
    try:
        secret = secrets.read(secret_env, secret_file, key="--report-secret")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--report-secret-env") from None
    if secret is None:
        raise click.UsageError("--report-to needs --report-secret-env or --report-secret-file")
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--report-to")
    target = url if "/api/agents/" in url else f"{url.rstrip('/')}/api/agents/{name}/report"
    return lambda report: reporting.post(target, secret, report, interval=interval)


@sync.command("status")
@_sync_state_dir
@_sync_config
@click.option("--name", help="Only this agent (default: every agent in the state dir).")
@options.as_json
def sync_status(state_dir: Path | None, config_path: Path | None, name: str | None,
                as_json: bool) -> int:
    """Show what the last sync pass found, from the status file (no Docker or Git needed).

    Exits 0 when every service is Synced and Healthy, 1 otherwise or when no agent ran yet.
    """
    directory, _ = _state_dir(state_dir, config_path)
    reports = [r for r in sync_status_files.read_all(sync_status_files.folder(directory))
               if name is None or r.agent == name]
    render.sync_reports(reports, as_json=as_json)
    if not reports and not as_json:
        click.echo(f"no sync status in {sync_status_files.folder(directory)}", err=True)
    return errors.EXIT_OK if reports and all(r.ok for r in reports) else errors.EXIT_FAILED
