"""Sync agent, status: the status file, `image-bot sync status`, and the Prometheus metrics."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

import devservers
from image_bot import cli
from image_bot.engine import syncing
from image_bot.sync import status
from image_bot.sync.status import ServiceStatus, SyncReport

REPORT = SyncReport(
    agent="edge", target="docker", repository="https://git.example.test/ops/config.git",
    branch="main", path="hosts/edge", revision="0123456789abcdef", started_at=100.0,
    finished_at=107.5, services=(
        ServiceStatus("shop", "api", "Synced", "Healthy", revision="0123456789abcdef",
                      image="r.example.test/api:1.2.0", config_hash="aa", action="updated"),
        ServiceStatus("shop", "web", "OutOfSync", "Degraded", revision="fedcba9876543210",
                      image="r.example.test/web:2.0.0", config_hash="bb", action="rolled-back",
                      error="shop-web: r.example.test/web:2.1.0 failed: container exited "
                            "with code 1", failed_hash="cc"),
    ), errors=("==> File hosts/edge/db.yaml: not valid YAML: x",), removed=("shop/old",))


def test_the_status_file_round_trips_and_is_replaced_atomically(tmp_path: Path) -> None:
    path = status.folder(tmp_path) / "edge.json"
    status.write(path, REPORT)
    status.write(path, REPORT)

    assert status.read(path) == REPORT
    assert [p.name for p in path.parent.iterdir()] == ["edge.json"]  # no temp files left
    data = json.loads(path.read_text())
    assert data["ok"] is False
    assert data["summary"] == {"sync": "OutOfSync", "health": "Degraded", "services": 2}


def test_an_unreadable_status_file_is_no_status(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    assert status.read(path) is None
    assert status.read(tmp_path / "missing.json") is None


def test_sync_status_prints_every_agent_and_exits_1_when_not_all_healthy(
        tmp_path: Path) -> None:
    status.write(status.folder(tmp_path) / "edge.json", REPORT)

    text = CliRunner().invoke(cli.main, ["sync", "status", "--state-dir", str(tmp_path)],
                              env={"COLUMNS": "250"})  # one table row per line
    as_json = CliRunner().invoke(cli.main, ["sync", "status", "--state-dir", str(tmp_path),
                                            "--json"])

    assert text.exit_code == as_json.exit_code == 1
    assert "edge: https://git.example.test/ops/config.git (main) hosts/edge → docker @ " \
           "0123456789ab" in text.stdout
    assert "rolled-back; shop-web: r.example.test/web:2.1.0 failed: container exited with " \
           "code 1" in text.stdout
    assert "removed shop/old (not in Git any more)" in text.stdout
    assert json.loads(as_json.stdout)["agents"][0]["services"][1]["failed_hash"] == "cc"


def test_sync_status_without_any_agent(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["sync", "status", "--state-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert f"no sync status in {tmp_path}/sync/status" in result.stderr


def test_metrics_come_from_the_status_files(tmp_path: Path) -> None:
    status.write(status.folder(tmp_path) / "edge.json", REPORT)
    registry = CollectorRegistry()
    registry.register(syncing.StatusCollector(tmp_path))

    lines = generate_latest(registry).decode().splitlines()

    assert 'image_bot_sync_service{agent="edge",application="shop",health="Healthy",' \
           'service="api",sync="Synced"} 1.0' in lines
    assert 'image_bot_sync_service{agent="edge",application="shop",health="Degraded",' \
           'service="web",sync="OutOfSync"} 1.0' in lines
    assert 'image_bot_sync_ok{agent="edge"} 0.0' in lines
    assert 'image_bot_sync_last_pass_timestamp_seconds{agent="edge"} 107.5' in lines
    assert 'image_bot_sync_errors{agent="edge"} 1.0' in lines


def test_metrics_are_served_over_http(tmp_path: Path) -> None:
    status.write(status.folder(tmp_path) / "edge.json", REPORT)
    port = devservers.free_port()
    stop = syncing.serve_metrics(tmp_path, host="127.0.0.1", port=port)
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop()

    assert 'image_bot_sync_ok{agent="edge"} 0.0' in body.splitlines()
