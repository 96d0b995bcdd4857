"""Logs (JSON lines or human lines) and metrics fed from cycle reports."""

from __future__ import annotations

import json
import logging

from image_bot import errors
from image_bot.engine import observing
from image_bot.engine.report import (
    CycleReport,
    PolicyOutcome,
    PullRequestResult,
    RepositoryReport,
)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("image_bot.scheduler", logging.INFO, __file__, 1,
                               "image updated: %s", ("1.0 → 1.1",), None)
    record.__dict__.update(extra)
    return record


def test_json_logs_are_one_object_per_line_with_the_context_that_is_set() -> None:
    line = observing.JsonFormatter().format(_record(policy="web", image="ghcr.io/a/web",
                                                    registry="ghcr.io", tag=None))
    data = json.loads(line)
    assert "\n" not in line
    assert data["event"] == "image updated: 1.0 → 1.1"
    assert (data["level"], data["policy"], data["image"], data["registry"]) == (
        "info", "web", "ghcr.io/a/web", "ghcr.io")
    assert "tag" not in data and data["time"].endswith("+00:00")


def test_human_logs_are_short_lines() -> None:
    line = observing.HumanFormatter().format(_record(policy="web", seconds=0.25))
    assert line.split(" ", 1)[1] == "info    image updated: 1.0 → 1.1  policy=web seconds=0.25"


def test_metrics_count_outcomes_commits_and_errors_by_kind() -> None:
    metrics = observing.Metrics()
    report = CycleReport((RepositoryReport("repo", "main", outcomes=(
        PolicyOutcome("a", "p.yaml", "updated", "1.0 → 1.1"),
        PolicyOutcome("b", "p.yaml", "current", "latest"),
        PolicyOutcome("c", "p.yaml", "failed",
                      error=errors.RegistryUnavailable("registry r.io unreachable")),
        PolicyOutcome("d", "p.yaml", "failed", error=errors.ConfigError("==> File p.yaml: bad")),
        # kinds come from the error's class, not from the words its message starts with
        PolicyOutcome("e", "p.yaml", "failed", error=errors.ForgeError("registry-ish text")),
    ), commits=("abc",), errors=(errors.SyncError("git push? no: a sync error"),),
        pull_requests=(PullRequestResult("image-bot/a", "opened", "opened #4", 4),
                       PullRequestResult("image-bot/b", "unchanged", "#5 is up to date", 5))),))
    metrics.observe_report(report, 0.3)
    metrics.on_registry_request("GET", "https://r.io/v2/a/tags/list", 429, 0.1)
    metrics.on_registry_request("GET", "https://r.io/v2/a/tags/list", 0, 0.1)
    text = metrics.exposition().decode()
    for line in ['image_bot_scans_total{outcome="updated"} 1.0',
                 'image_bot_scans_total{outcome="failed"} 3.0',
                 'image_bot_updates_total{stage="committed"} 1.0',
                 'image_bot_errors_total{kind="registry"} 1.0',
                 'image_bot_errors_total{kind="config"} 1.0',
                 'image_bot_errors_total{kind="forge"} 1.0',
                 "image_bot_pull_requests_opened_total 1.0",
                 'image_bot_errors_total{kind="sync"} 1.0',
                 'image_bot_registry_requests_total{host="r.io",status="429"} 1.0',
                 'image_bot_registry_requests_total{host="r.io",status="error"} 1.0',
                 'image_bot_rate_limit_waits_total{host="r.io"} 1.0',
                 "image_bot_cycle_duration_seconds_count 1.0"]:
        assert line in text, line
