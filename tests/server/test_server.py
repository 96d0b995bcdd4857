"""The webhook server in process, with the real scheduler, registry and git server.

Answers (202/400/401/404/413), debouncing (ten events → one scan), forge push → policy
reload, requests that never wait for a registry, and /healthz, /readyz, /metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import devservers
import testing
from image_bot.config import models
from image_bot.engine import context, observing, scheduling, waking
from image_bot.errors import ConfigError
from image_bot.server import app

SECRET = "generic-secret"

DEPLOYMENT = "spec:\n  containers:\n    - image: {host}/team/{image}:1.0.0\n"


def _config(url: str, host: str, state_dir: Path, **daemon: Any) -> models.BotConfig:
    return models.BotConfig.model_validate(testing.bot_config(
        [url], registries=[host], state_dir=state_dir,
        receivers=[{"name": "ci", "kind": "generic", "secret_env": "CI_HOOK_SECRET"},
                   {"name": "forge", "kind": "github", "secret_env": "CI_HOOK_SECRET"}],
        daemon={"debounce": 0.3, **daemon}))


def _sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@asynccontextmanager
async def _daemon(config: models.BotConfig, clock: Callable[[], float] = time.time,
                  ) -> AsyncIterator[
        tuple[httpx.AsyncClient, scheduling.Scheduler, observing.Metrics]]:
    """The app on an in-process transport, its scheduler running (webhooks only)."""
    async with context.Engine.open(config) as engine:
        state, metrics = engine.state, engine.metrics
        scheduler = scheduling.Scheduler(engine, polling=False)
        receivers = app.load_receivers(config, {"CI_HOOK_SECRET": SECRET})
        asgi = app.create_app(config, scheduler=scheduler, state=state, metrics=metrics,
                              receivers_by_name=receivers, clock=clock)
        async with testing.serving(asgi, scheduler) as http:
            yield http, scheduler, metrics


async def _post(http: httpx.AsyncClient, payload: Any, *, receiver: str = "ci",
                sign: bool = True, **headers: str) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if sign:
        headers["X-Signature-256"] = _sign(body)
        headers["X-Hub-Signature-256"] = _sign(body)
    return await http.post(f"/webhook/{receiver}", content=body, headers=headers)


@pytest.fixture
def web_repo(registry: devservers.Registry, git_server: devservers.GitServer,
             config_repo: Callable[[dict[str, str]], str]) -> tuple[str, Path]:
    image = f"web{time.monotonic_ns()}"
    devservers.push_image(registry.url, f"team/{image}", "1.0.0")
    url = config_repo({
        "deploy/web.yaml": DEPLOYMENT.format(host=registry.host, image=image),
        "policies/web.yaml": testing.policy("web", f"{registry.host}/team/{image}", interval="1h"),
    })
    return url, git_server.root / url.rsplit("/", 1)[1]


def _image(bare: Path) -> str:
    text = devservers.git("show", "main:deploy/web.yaml", cwd=bare)
    return text.split("image: ", 1)[1].strip()


def test_ten_events_for_one_image_make_one_scan_and_one_commit(
        registry: devservers.Registry, web_repo: tuple[str, Path], tmp_path: Path) -> None:
    url, bare = web_repo
    name = _image(bare).rsplit(":", 1)[0]

    async def scenario() -> None:
        async with _daemon(_config(url, registry.host, tmp_path)) as (http, scheduler, metrics):
            devservers.push_image(registry.url, name.split("/", 1)[1], "1.1.0")
            answers = [await _post(http, {"image": name, "tag": "1.1.0"}) for _ in range(10)]
            assert {a.status_code for a in answers} == {202}
            assert answers[0].json() == {"queued": {name: ["web"]}, "ignored": []}
            await testing.until(lambda: scheduler.scans == 1)
            await asyncio.sleep(0.5)  # no late second scan
            assert scheduler.scans == 1
            exposition = metrics.exposition().decode()
            assert 'image_bot_webhook_events_total{outcome="accepted",receiver="ci"} 10.0' \
                in exposition
            assert 'image_bot_scans_total{outcome="updated"} 1.0' in exposition

    asyncio.run(scenario())
    assert _image(bare).endswith(":1.1.0")
    subjects = devservers.git("log", "--format=%s", "main", cwd=bare).splitlines()
    assert len(subjects) == 2  # the initial commit and exactly one update


def test_answers_for_bad_requests(registry: devservers.Registry, web_repo: tuple[str, Path],
                                  tmp_path: Path) -> None:
    url, _ = web_repo
    config = _config(url, registry.host, tmp_path, max_body_bytes=2048)

    async def scenario() -> None:
        async with _daemon(config) as (http, scheduler, metrics):
            unsigned = await _post(http, {"image": "x.io/a", "tag": "1"}, sign=False)
            assert unsigned.status_code == 401
            assert unsigned.json() == {"error": "unauthorized"}
            bad = await _post(http, {"image": "x.io/a", "tag": "1"}, sign=False,
                              **{"X-Signature-256": "sha256=" + "0" * 64})
            assert bad.status_code == 401
            too_big = await _post(http, {"image": "x" * 4096})
            assert too_big.status_code == 413
            malformed = await _post(http, {"tag": "1"})
            assert malformed.status_code == 400
            assert malformed.json() == {
                "error": "malformed generic payload: image: expected a non-empty string"}
            unknown = await _post(http, {}, receiver="nope")
            assert unknown.status_code == 404
            other = await _post(http, {"image": "elsewhere.io/not/ours", "tag": "1"})
            assert other.status_code == 202
            assert other.json() == {"queued": {}, "ignored": ["elsewhere.io/not/ours"]}
            assert scheduler.scans == 0
            text = metrics.exposition().decode()
            for outcome, count in [("unauthorized", 2), ("too_large", 1), ("malformed", 1),
                                   ("ignored", 1)]:
                assert (f'image_bot_webhook_events_total{{outcome="{outcome}",receiver="ci"}} '
                        f'{count}.0') in text
            assert (await http.get("/healthz")).text == "ok\n"
            metrics_page = await http.get("/metrics")
            assert metrics_page.headers["content-type"].startswith("text/plain")
            assert "image_bot_cycle_duration_seconds_bucket" in metrics_page.text

    asyncio.run(scenario())


def test_forge_push_reloads_policies(registry: devservers.Registry,
                                     web_repo: tuple[str, Path], tmp_path: Path) -> None:
    url, bare = web_repo
    work = tmp_path / "work"
    devservers.git("clone", "-q", str(bare), str(work), cwd=tmp_path)

    async def scenario() -> None:
        async with _daemon(_config(url, registry.host, tmp_path / "bot")) as (http, sched, _):
            assert [e.name for e in sched.entries] == ["web"]
            policy = testing.policy("api", f"{registry.host}/team/api", interval="1h")
            (work / "policies" / "api.yaml").write_text(policy)
            devservers.git("add", "-A", cwd=work)
            devservers.git("commit", "-qm", "add api policy", cwd=work)
            devservers.git("push", "-q", "origin", "HEAD:main", cwd=work)
            answer = await _post(http, {"ref": "refs/heads/main"}, receiver="forge",
                                 **{"X-GitHub-Event": "push"})
            assert (answer.status_code, answer.json()) == (202, {"reload": True})
            await testing.until(lambda: len(sched.entries) == 2)
            assert sorted(e.name for e in sched.entries) == ["api", "web"]
            assert waking.wake_file(tmp_path / "bot").exists()  # and a sync agent is woken

    asyncio.run(scenario())


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a registry that hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_webhook_answers_while_the_registry_hangs_and_shutdown_abandons_cleanly(
        silent_registry: str, config_repo: Callable[[dict[str, str]], str],
        git_server: devservers.GitServer, tmp_path: Path) -> None:
    url = config_repo({
        "deploy/web.yaml": DEPLOYMENT.format(host=silent_registry, image="web"),
        "policies/web.yaml": testing.policy("web", f"{silent_registry}/team/web", interval="1h"),
    })
    config = _config(url, silent_registry, tmp_path, debounce=0.0, grace=0.5)
    name = f"{silent_registry}/team/web"

    async def scenario() -> None:
        async with _daemon(config) as (http, scheduler, _):
            await _post(http, {"image": name, "tag": "1.1.0"})
            await asyncio.sleep(0.3)  # the scan is now waiting for the registry
            started = time.monotonic()
            answer = await _post(http, {"image": name, "tag": "1.2.0"})
            assert answer.status_code == 202
            assert time.monotonic() - started < 0.5
            stopped = time.monotonic()
        assert time.monotonic() - stopped < 3  # grace 0.5 s, then the scan is abandoned
        assert scheduler.scans == 0

    asyncio.run(scenario())
    bare = git_server.root / url.rsplit("/", 1)[1]
    assert len(devservers.git("log", "--format=%H", "main", cwd=bare).splitlines()) == 1


def test_receivers_need_their_secret_in_the_environment(tmp_path: Path) -> None:
    config = _config("file:///nowhere", "h.io", tmp_path)
    with pytest.raises(ConfigError, match=r"receivers\[0\] \(ci\).secret_env: environment "
                                          r"variable CI_HOOK_SECRET is not set or empty"):
        app.load_receivers(config, {})
    # the same reader as every other secret: a file works too (a mounted Secret)
    secret_file = tmp_path / "hook-secret"
    secret_file.write_text(f"{SECRET}\n")
    from_file = config.model_copy(update={"receivers": [models.ReceiverConfig.model_validate(
        {"name": "ci", "kind": "generic", "secret_file": str(secret_file)})]})
    assert app.load_receivers(from_file, {})["ci"].secret == SECRET
    with pytest.raises(ValueError, match="receiver 'open' needs secret_env"):
        models.ReceiverConfig.model_validate({"name": "open", "kind": "quay"})
    unsigned = models.ReceiverConfig.model_validate(
        {"name": "open", "kind": "quay", "allow_unsigned": True})
    assert unsigned.secret_env is None


def test_deeply_nested_json_is_a_400_not_a_500(registry: devservers.Registry,
                                               web_repo: tuple[str, Path],
                                               tmp_path: Path) -> None:
    url, _ = web_repo

    async def scenario() -> None:
        async with _daemon(_config(url, registry.host, tmp_path)) as (http, scheduler, _):
            deep = b"[" * 100_000 + b"]" * 100_000
            for receiver in ("ci", "forge"):
                answer = await _post(http, deep, receiver=receiver,
                                     **{"X-GitHub-Event": "package"})
                assert answer.status_code == 400
                assert answer.json()["error"].endswith("body is JSON nested too deeply")
            assert scheduler.scans == 0

    asyncio.run(scenario())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _stamped(payload: Any, stamp: float) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    text = str(int(stamp))
    signature = "sha256=" + hmac.new(SECRET.encode(), text.encode() + b"." + body,
                                     hashlib.sha256).hexdigest()
    return body, {"X-Signature-256": signature, "X-Signature-Timestamp": text}


def test_signed_requests_replayed_within_the_window_are_refused(
        registry: devservers.Registry, web_repo: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = web_repo
    config = _config(url, registry.host, tmp_path)
    config = config.model_copy(update={"receivers": [*config.receivers, models.ReceiverConfig(
        name="strict", kind="generic", secret_env="CI_HOOK_SECRET", require_timestamp=True)]})
    clock = FakeClock()
    package = {"action": "published", "package": {
        "name": "nothing-of-ours", "owner": {"login": "acme"},
        "package_version": {"container_metadata": {"tag": {"name": "1.0.1"}}}}}
    event = {"X-GitHub-Event": "package", "X-GitHub-Delivery": "72d3162e"}

    async def scenario() -> None:
        async with _daemon(config, clock) as (http, _, metrics):
            # GitHub signs the body, unique per delivery: the same signature again is a replay
            assert (await _post(http, package, receiver="forge", **event)).status_code == 202
            clock.now += 60
            again = await _post(http, package, receiver="forge",
                                **{**event, "X-GitHub-Delivery": "another-id"})
            assert (again.status_code, again.json()) == (
                409, {"error": "replay of a request accepted 60 s ago"})
            clock.now += 241  # past the window GitHub's unsigned requests cannot be told apart
            assert (await _post(http, package, receiver="forge", **event)).status_code == 202
            # generic with a signed timestamp: replays refused within the window, stale after
            body, headers = _stamped({"image": "x.io/a", "tag": "1"}, clock.now)
            first = await http.post("/webhook/ci", content=body, headers=headers)
            assert first.status_code == 202
            replayed = await http.post("/webhook/ci", content=body, headers=headers)
            assert replayed.status_code == 409
            clock.now += 301
            stale = await http.post("/webhook/ci", content=body, headers=headers)
            assert (stale.status_code, stale.json()) == (409, {
                "error": "signed 301 s ago, outside the replay window of 300 s"})
            moved = {**headers, "X-Signature-Timestamp": str(int(clock.now))}
            forged = await http.post("/webhook/ci", content=body, headers=moved)
            assert forged.status_code == 401  # a fresh time needs a fresh signature
            # generic without a timestamp: a CI job may send the same event twice on purpose
            for _ in range(2):
                plain = await _post(http, {"image": "x.io/a", "tag": "1"})
                assert plain.status_code == 202
            unstamped = await _post(http, {"image": "x.io/a", "tag": "1"}, receiver="strict")
            assert unstamped.status_code == 401
            body, headers = _stamped({"image": "x.io/a", "tag": "2"}, clock.now)
            stamped = await http.post("/webhook/strict", content=body, headers=headers)
            assert stamped.status_code == 202
            text = metrics.exposition().decode()
            assert 'image_bot_webhook_events_total{outcome="replayed",receiver="forge"} 1.0' \
                in text
            assert 'image_bot_webhook_events_total{outcome="replayed",receiver="ci"} 2.0' in text

    asyncio.run(scenario())


def test_no_secret_or_body_is_logged(registry: devservers.Registry, web_repo: tuple[str, Path],
                                     tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url, _ = web_repo
    caplog.set_level("DEBUG")
    marker = "body-marker-5e1f"

    async def scenario() -> None:
        async with _daemon(_config(url, registry.host, tmp_path)) as (http, _, _):
            payloads = [{"image": f"x.io/{marker}", "tag": "1"}, {"tag": marker}, b"[" * 5000]
            for payload in payloads:
                for sign in (True, False):
                    await _post(http, payload, sign=sign)
            await _post(http, {"package": marker}, receiver="forge",
                        **{"X-GitHub-Event": "package"})

    asyncio.run(scenario())
    assert "webhook refused" in caplog.text
    assert marker not in caplog.text and SECRET not in caplog.text
