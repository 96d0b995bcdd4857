"""Observability of the engine: Prometheus metrics (fed by the registry client's hook) and logs.

The metrics live in their own ``CollectorRegistry`` (not the process-global one) so tests
and several apps in one process never share counters. Logs are one JSON object per line
(``event`` plus context such as ``policy``, ``image``, ``registry``) unless stderr is a
terminal, where they are short human lines. Nothing logged here carries a secret: URLs
are shown without credentials and webhook bodies are never logged.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from image_bot import logs
from image_bot.engine.pipelines import STATES as STAGE_STATES
from image_bot.engine.report import CycleReport, PolicyOutcome

LogFormat = Literal["auto", "json", "human"]
CONTEXT_FIELDS = ("repository", "policy", "image", "registry", "tag", "receiver", "outcome",
                  "status", "commit", "seconds", "trigger", "count", "shard", "listen")
_CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_DEPLOY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                   21600.0, 86400.0)


class Metrics:
    """Every metric image-bot exports (``/metrics``), registered in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.scans = Counter("image_bot_scans", "Policy scans, by outcome "
                             "(updated, proposed, current, failed).", ["outcome"], registry=r)
        self.registry_requests = Counter(
            "image_bot_registry_requests", "HTTP requests sent to registries, by host and "
            "status code ('error' when no answer came).", ["host", "status"], registry=r)
        self.rate_limit_waits = Counter(
            "image_bot_rate_limit_waits", "Registry answers asking us to wait (HTTP 429).",
            ["host"], registry=r)
        self.updates = Counter("image_bot_updates", "Image updates, by stage (proposed: "
                               "decided and edited; committed: pushed to Git).", ["stage"],
                               registry=r)
        self.pull_requests = Counter("image_bot_pull_requests_opened",
                                     "Pull/merge requests opened.", registry=r)
        self.errors = Counter("image_bot_errors", "Errors, by kind (the error's class: "
                              "config, registry, auth, git, forge, update, sync, internal).",
                              ["kind"], registry=r)
        self.cycle_duration = Histogram("image_bot_cycle_duration_seconds",
                                        "Duration of one scan of a repository's policies.",
                                        buckets=_CYCLE_BUCKETS, registry=r)
        self.webhook_events = Counter(
            "image_bot_webhook_events", "Webhook requests, by receiver and outcome (accepted, "
            "ignored, reload, unauthorized, too_large, malformed).", ["receiver", "outcome"],
            registry=r)
        self.policies = Gauge("image_bot_policies", "Policies scheduled by this instance.",
                              registry=r)
        self.deploy_seconds = Histogram(
            "image_bot_deploy_seconds", "Time from registry push to bot commit "
            "(phase push_to_commit) and from bot commit to Synced + Healthy on an agent "
            "(phase commit_to_deployed).", ["phase"], buckets=_DEPLOY_BUCKETS, registry=r)
        self.deployments = Counter(
            "image_bot_deployments", "Bot updates followed to the agents, by what happened "
            "(deployed, degraded, rolled-back).", ["state"], registry=r)
        self.notifications = Counter(
            "image_bot_notifications", "Notification deliveries, by target and outcome "
            "(sent, retried, failed, dropped).", ["target", "outcome"], registry=r)
        self.agent_reports = Counter(
            "image_bot_agent_reports", "Sync agent reports posted to the daemon, by outcome "
            "(accepted, unauthorized, too_large, malformed).", ["outcome"], registry=r)
        self.queued = Gauge("image_bot_queued_scans", "Policies waiting for a scan.",
                            registry=r)

        self._status: StatusCollector | None = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def watch(self, read: Callable[[], Mapping[str, Any]] | None) -> None:
        """Export per-policy and per-agent gauges read at each scrape from the status
        document ``read`` returns (``engine.overview``); None stops it."""
        if self._status is not None:
            self.registry.unregister(self._status)
        self._status = StatusCollector(read) if read is not None else None
        if self._status is not None:
            self.registry.register(self._status)

    def observe_report(self, report: CycleReport, seconds: float) -> None:
        self.cycle_duration.observe(seconds)
        for repo in report.repositories:
            # counted first, each label's child then found once (not once per policy)
            statuses = collections.Counter(o.status for o in repo.outcomes)
            for status, count in statuses.items():
                self.scans.labels(status).inc(count)
            if proposed := statuses["updated"] + statuses["planned"]:
                self.updates.labels("proposed").inc(proposed)
            for kind, count in collections.Counter(
                    o.kind for o in repo.outcomes if o.kind is not None).items():
                self.errors.labels(kind).inc(count)
            if repo.commits:
                self.updates.labels("committed").inc(statuses["updated"])
            for error in repo.errors:
                self.errors.labels(error.kind).inc()
            self.pull_requests.inc(sum(1 for pr in repo.pull_requests if pr.action == "opened"))
            for t in repo.transitions:
                self.deployments.labels(t.state).inc()
                if t.state == "deployed" and t.commit_to_deployed is not None:
                    self.deploy_seconds.labels("commit_to_deployed").observe(
                        max(t.commit_to_deployed, 0.0))
                    if t.push_to_commit is not None:
                        self.deploy_seconds.labels("push_to_commit").observe(
                            max(t.push_to_commit, 0.0))

    def on_registry_request(self, method: str, url: str, status: int, seconds: float) -> None:
        """The registry client's ``on_request`` hook (``status`` 0: no answer came)."""
        host = urlsplit(url).netloc.rpartition("@")[2]
        self.registry_requests.labels(host, str(status) if status else "error").inc()
        if status == 429:
            self.rate_limit_waits.labels(host).inc()


class StatusCollector(Collector):
    """Gauges of the status document, read at scrape time (so they survive restarts and
    include what agents posted): one PromQL rule each for "policy X failing for 1 h"
    (``image_bot_policy_status{status="failed"} == 1``, or the last success timestamp) and
    "a stage out of sync" (``image_bot_stage_in_sync == 0``)."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only (registering must not read the state)

    def collect(self) -> Iterator[Metric]:
        try:
            document = self._read()
        except Exception:  # a scrape never fails for this: the other metrics still count
            logs.logger("engine").exception("status metrics unavailable")
            return
        yield from _policy_metrics(document.get("pipelines", []))
        yield from _agent_metrics(document.get("sync", []))


def _policy_metrics(pipelines: Sequence[Mapping[str, Any]]) -> Iterator[Metric]:
    keys = ["repository", "policy", "image"]
    status = GaugeMetricFamily(
        "image_bot_policy_status", "A policy's state as on the status page, one series per "
        f"state, 1 for the current one ({', '.join(STAGE_STATES)}).", labels=[*keys, "status"])
    success = GaugeMetricFamily(
        "image_bot_policy_last_success_timestamp_seconds",
        "When a policy's last run that did not fail ended.", labels=keys)
    ran = GaugeMetricFamily("image_bot_policy_last_run_timestamp_seconds",
                            "When a policy last ran.", labels=keys)
    latency = GaugeMetricFamily(
        "image_bot_policy_deploy_seconds", "A policy's newest update: registry push to bot "
        "commit (push_to_commit), bot commit to deployed on every agent (commit_to_deployed).",
        labels=[*keys, "phase"])
    in_sync = GaugeMetricFamily(
        "image_bot_stage_in_sync", "1 when an agent deploying a policy's files is Synced and "
        "runs the tag in Git.", labels=[*keys, "agent"])
    healthy = GaugeMetricFamily("image_bot_stage_healthy", "1 when an agent deploying a "
                                "policy's files reports its services Healthy.",
                                labels=[*keys, "agent"])
    for stage in (s for p in pipelines for s in p.get("stages", [])):
        values = [stage["repository"], stage["policy"], stage["image"]]
        for state in STAGE_STATES:
            status.add_metric([*values, state], 1.0 if stage["state"] == state else 0.0)
        ran.add_metric(values, stage["last_run"])
        if stage.get("last_success_at") is not None:
            success.add_metric(values, stage["last_success_at"])
        for phase in ("push_to_commit", "commit_to_deployed"):
            seconds = (stage.get("update") or {}).get(phase)
            if seconds is not None:
                latency.add_metric([*values, phase], seconds)
        for agent in stage.get("agents", []):
            running = agent["sync"] == "Synced" and agent["tag"] == stage["tag"]
            in_sync.add_metric([*values, agent["agent"]], 1.0 if running else 0.0)
            healthy.add_metric([*values, agent["agent"]],
                               1.0 if agent["health"] == "Healthy" else 0.0)
    yield from (status, success, ran, latency, in_sync, healthy)


def _agent_metrics(agents: Sequence[Mapping[str, Any]]) -> Iterator[Metric]:
    in_sync = GaugeMetricFamily("image_bot_agent_in_sync", "1 when a sync agent's last pass "
                                "left everything Synced.", labels=["agent"])
    healthy = GaugeMetricFamily("image_bot_agent_healthy", "1 when a sync agent's last pass "
                                "found every service Healthy.", labels=["agent"])
    stale = GaugeMetricFamily("image_bot_agent_stale", "1 when an agent reporting over HTTP "
                              "has been silent for agents.stale_after intervals.",
                              labels=["agent"])
    seen = GaugeMetricFamily("image_bot_agent_last_pass_timestamp_seconds",
                             "When a sync agent's last pass ended.", labels=["agent"])
    for agent in agents:
        name, summary = [agent["agent"]], agent.get("summary") or {}
        in_sync.add_metric(name, 1.0 if summary.get("sync") == "Synced" else 0.0)
        healthy.add_metric(name, 1.0 if summary.get("health") == "Healthy" else 0.0)
        stale.add_metric(name, 1.0 if agent.get("stale") else 0.0)
        seen.add_metric(name, float(agent.get("finished_at") or 0.0))
    yield from (in_sync, healthy, stale, seen)


def outcome_fields(outcome: PolicyOutcome, repository: str) -> dict[str, object]:
    """The log context of one policy outcome."""
    image = outcome.image or ""
    return {"repository": repository, "policy": outcome.policy, "image": image,
            "registry": image.split("/", 1)[0] if image else "", "status": outcome.status}


# --- logs -------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, and the context fields that are set."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "event": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = record.__dict__.get(key)
            if value is not None and value != "":
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            data["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps(data, default=str)


class HumanFormatter(logging.Formatter):
    """``12:00:01 info  scan finished  policy=web image=…`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        context = " ".join(f"{key}={record.__dict__[key]}" for key in CONTEXT_FIELDS
                           if record.__dict__.get(key) not in (None, ""))
        line = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}"
        if context:
            line += f"  {context}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f"  error={type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return line


def setup_logging(fmt: LogFormat = "auto", *, level: int = logging.INFO) -> None:
    """Send image-bot's logs to stderr as JSON lines, or human lines on a terminal."""
    human = fmt == "human" or (fmt == "auto" and sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HumanFormatter() if human else JsonFormatter())
    logger = logging.getLogger("image_bot")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    for noisy in ("uvicorn.access",):  # requests are counted in metrics instead
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.handlers[:] = [handler]
    uvicorn_logger.propagate = False
