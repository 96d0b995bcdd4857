"""The daemon end to end: the real registry notifies it, the commit lands on the git server.

Also: a second run on the same state dir is refused, `status` reads what the daemon did,
and SIGTERM ends the daemon cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import devservers
import testing

pytestmark = pytest.mark.e2e

SECRET = "webhook-secret-for-tests"


@pytest.fixture(scope="module")
def daemon_port() -> int:
    return devservers.free_port()


@pytest.fixture(scope="module")
def notifying_registry(tmp_path_factory: pytest.TempPathFactory,
                       daemon_port: int) -> Iterator[devservers.Registry]:
    """A registry that sends its push notifications to the daemon's webhook receiver."""
    endpoint = {
        "name": "image-bot", "url": f"http://127.0.0.1:{daemon_port}/webhook/registry",
        "headers": {"Authorization": [f"Bearer {SECRET}"]},
        "timeout": "2s", "threshold": 3, "backoff": "1s",
    }
    server = devservers.start_registry(tmp_path_factory.mktemp("notifying-registry"),
                                       extra={"notifications": {"endpoints": [endpoint]}})
    yield server
    server.stop()


def _bot_config(path: Path, url: str, registry: devservers.Registry, port: int) -> Path:
    return testing.write_json(path, testing.bot_config(
        [{"url": url, "branch": "main", "policies": "policies/"}],
        registries=[registry.host], state_dir=path.parent / "state",
        receivers=[{"name": "registry", "kind": "distribution",
                    "secret_env": "TEST_WEBHOOK_SECRET"}],
        daemon={"listen": f"127.0.0.1:{port}", "debounce": 0.1}))


def _bot(*args: str) -> list[str]:
    return [sys.executable, "-m", "image_bot", *args]


def _ready(port: int, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "the daemon exited during start-up"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _remote_subjects(bare: Path) -> list[str]:
    return devservers.git("log", "--format=%s", "main", cwd=bare).splitlines()


def _wait_for_commit(bare: Path, text: str, timeout: float = 20) -> float:
    start = time.monotonic()
    if not testing.wait_until(
            lambda: any(text in subject for subject in _remote_subjects(bare)), timeout):
        raise AssertionError(f"no commit mentioning {text!r}: {_remote_subjects(bare)}")
    return time.monotonic() - start


def test_registry_push_notification_becomes_a_commit(
    notifying_registry: devservers.Registry, daemon_port: int,
    git_server: devservers.GitServer, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    host = notifying_registry.host
    devservers.push_image(notifying_registry.url, "team/web", "1.0.0")
    url = config_repo({
        "deploy/web.yaml": testing.deployment("web", {"web": f"{host}/team/web:1.0.0"},
                                              comment="   # deployed by image-bot"),
        # interval 1h: only a webhook can explain a commit within seconds
        "policies/web.yaml": testing.policy("web", f"{host}/team/web", interval="1h"),
    })
    bare = git_server.root / url.rsplit("/", 1)[1]
    config = _bot_config(tmp_path / "bot.yaml", url, notifying_registry, daemon_port)
    env = {**os.environ, "TEST_WEBHOOK_SECRET": SECRET}
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(_bot("run", "--config", str(config), "--log-format", "json"),
                              env=env, stderr=log, stdout=subprocess.DEVNULL)
    try:
        assert testing.wait_until(lambda: _ready(daemon_port, daemon)), "daemon never ready"
        # 1. a push to the real registry → notification → scan → commit on the git server
        devservers.push_image(notifying_registry.url, "team/web", "1.1.0")
        seconds = _wait_for_commit(bare, "1.1.0")
        print(f"push to commit: {seconds:.2f}s")
        assert seconds < 10
        shown = devservers.git("show", "main:deploy/web.yaml", cwd=bare)
        assert f"image: {host}/team/web:1.1.0   # deployed by image-bot" in shown
        # 2. a second process on the same state dir is refused with a clear message
        second = subprocess.run(_bot("run", "--once", "--config", str(config)), env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert "is in use by pid" in second.stderr and "daemon" in second.stderr
        # 3. what the daemon exposes: metrics, the JSON status
        metrics = httpx.get(f"http://127.0.0.1:{daemon_port}/metrics").text
        assert 'image_bot_webhook_events_total{outcome="accepted",receiver="registry"}' \
            in metrics
        assert 'image_bot_updates_total{stage="committed"} 1.0' in metrics
        assert f'image_bot_registry_requests_total{{host="{host}",status="200"}}' in metrics
        status = httpx.get(f"http://127.0.0.1:{daemon_port}/api/status").json()
        [web] = status["policies"]
        assert (web["policy"], web["current"], web["latest"]) == ("web", "1.1.0", "1.1.0")
        # 4. a wrong secret is refused before anything is parsed
        refused = httpx.post(f"http://127.0.0.1:{daemon_port}/webhook/registry",
                             content=b"{}", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        log.close()
    logs = (tmp_path / "daemon.log").read_text()
    assert code == 0, logs
    events = [json.loads(line) for line in logs.splitlines()]
    assert any(e["event"] == "pushed commit" for e in events)
    assert any(e.get("policy") == "web" and e.get("image") == f"{host}/team/web"
               and e.get("registry") == host for e in events)
    assert SECRET not in logs
    # 5. status reads the state the daemon left
    shown = subprocess.run(_bot("status", "--json", "--config", str(config)),
                           capture_output=True, text=True, check=True, env=env)
    [row] = json.loads(shown.stdout)["policies"]
    # "updated", or "current" when a later notification (a retried one) scanned it again
    assert (row["current"], row["latest"], row["last_error"]) == ("1.1.0", "1.1.0", None)
    assert row["status"] in ("updated", "current")
