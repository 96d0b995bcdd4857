"""Notifications: filters, signed webhook, Apprise (its json:// plugin on a local receiver),
bounded retries that never block the caller, failed/recovered streaks from real cycles."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import devservers
import testing
from image_bot.config import models
from image_bot.engine import context, cycle
from image_bot.errors import ConfigError
from image_bot.notify import notifying

KEY = "hmac-key"
EVENT = notifying.Event("degraded", "https://git.example/ops.git", "web",
                        "registry.example/team/web", old_tag="1.1.0", new_tag="1.2.0",
                        commit="a" * 40, agent="edge-1", service="web",
                        reason="container exited with code 1")


class Receiver:
    """Records what it is sent; answers ``status`` (a target that is down answers 503)."""

    def __init__(self, status: int = 204) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.bodies.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _route(target: notifying.Target, *, events: tuple[str, ...] = models.NOTIFICATION_EVENTS,
           retries: int = 3) -> notifying.Route:
    return notifying.Route("t", target, frozenset(events), failed_after=2, retries=retries,
                           backoff=1.0)


def test_the_webhook_is_signed_and_carries_the_fields(receiver: Receiver) -> None:
    target = notifying.WebhookTarget(f"http://127.0.0.1:{receiver.port}/h", KEY, timeout=5)
    target.deliver(EVENT)
    [(headers, body)] = receiver.bodies
    expected = "sha256=" + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert headers[notifying.SIGNATURE_HEADER] == expected
    assert headers[notifying.EVENT_HEADER] == "degraded"
    data = json.loads(body)
    assert (data["event"], data["image"], data["old_tag"], data["new_tag"], data["agent"],
            data["repository"], data["commit"]) == (
        "degraded", EVENT.image, "1.1.0", "1.2.0", "edge-1", EVENT.repository, "a" * 40)
    assert KEY not in body.decode() and KEY not in repr(target)


def test_apprise_delivers_through_its_own_plugins(receiver: Receiver) -> None:
    target = notifying.AppriseTarget([f"json://127.0.0.1:{receiver.port}/notify"])
    target.deliver(EVENT)
    [(_, body)] = receiver.bodies
    data = json.loads(body)
    assert "1.1.0 → 1.2.0" in data["title"]
    assert "agent: edge-1" in data["message"] and "exited with code 1" in data["message"]


def test_an_apprise_url_it_does_not_understand_is_a_config_error_without_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        notifying.AppriseTarget(["nosuchscheme://tok3n@x"])
    assert "tok3n" not in str(caught.value)


def test_a_target_that_is_down_costs_bounded_retries_counted_and_never_raises() -> None:
    down = Receiver(status=503)
    try:
        results: list[tuple[str, str]] = []
        sleeps: list[float] = []
        notifier = notifying.Notifier([_route(notifying.WebhookTarget(
            f"http://127.0.0.1:{down.port}/h", None, timeout=5))],
            on_result=lambda name, outcome: results.append((name, outcome)),
            sleep=sleeps.append)
        assert notifier.deliver(notifier.routes[0], EVENT) is False
        assert len(down.bodies) == 3
        assert results == [("t", "retried"), ("t", "retried"), ("t", "failed")]
        assert sleeps == [1.0, 2.0]
    finally:
        down.server.shutdown()
        down.server.server_close()


def test_publish_never_waits_for_a_target() -> None:
    release, entered = threading.Event(), threading.Event()

    class Stuck:
        def deliver(self, event: notifying.Event) -> None:
            entered.set()
            release.wait(30)

    results: list[str] = []
    notifier = notifying.Notifier([_route(Stuck())], limit=1,
                                  on_result=lambda name, outcome: results.append(outcome))
    notifier.publish(EVENT)  # taken by the thread, which is now stuck
    assert entered.wait(10)
    notifier.publish(EVENT)  # fills the queue
    notifier.publish(EVENT)  # dropped (counted), instead of waiting
    assert results == ["dropped"]
    release.set()
    notifier.close()
    assert results.count("sent") == 2


def test_filters_failed_once_at_the_threshold_and_recovered_after_it() -> None:
    route = _route(notifying.WebhookTarget("http://unused", None, timeout=1),
                   events=("failed", "recovered", "deployed"))
    streak = [notifying.Event("failed", "r", "p", "i", failures=n) for n in (1, 2, 3)]
    assert [route.wants(e) for e in streak] == [False, True, False]
    assert route.wants(notifying.Event("recovered", "r", "p", "i", failures=2))
    assert not route.wants(notifying.Event("recovered", "r", "p", "i", failures=1))
    assert not route.wants(notifying.Event("updated", "r", "p", "i"))


def test_config_needs_a_url_for_webhooks_and_keeps_apprise_urls_out_of_the_file() -> None:
    with pytest.raises(ValidationError, match="kind webhook needs url"):
        models.NotificationTarget.model_validate({"name": "a", "kind": "webhook"})
    with pytest.raises(ValidationError, match="url_env or url_file"):
        models.NotificationTarget.model_validate(
            {"name": "a", "kind": "apprise", "url": "slack://t/o/k"})
    with pytest.raises(ValidationError, match="updated"):
        models.NotificationTarget.model_validate(
            {"name": "a", "kind": "webhook", "url": "http://x", "events": ["merged"]})
    with pytest.raises(ConfigError, match=r"notifications\[0\] \(a\).secret_env"):
        notifying.build([models.NotificationTarget.model_validate(
            {"name": "a", "kind": "webhook", "url": "http://x", "secret_env": "NOPE"})], {})




def test_a_policy_failing_n_cycles_in_a_row_notifies_once_then_recovered(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_HOOK", KEY)
    url = config_repo({"deploy/a.yaml": f"image: {registry.host}/team/late:1.0.0\n",
                       "policies/late.yaml": testing.policy("late",
                                                             f"{registry.host}/team/late")})
    config = models.BotConfig.model_validate({
        "repositories": [{"url": url}], "state_dir": str(tmp_path / "state"),
        "registries": [{"host": registry.host, "insecure": True}],
        "notifications": [{"name": "ops", "kind": "webhook", "secret_env": "TEST_HOOK",
                           "url": f"http://127.0.0.1:{receiver.port}/h",
                           "events": ["failed", "recovered"], "failed_after": 2}]})

    async def cycles() -> None:
        for number in range(4):  # one process per run, like ``run --once`` from cron
            async with context.Engine.open(config) as engine:
                if number == 3:  # the image appears: the policy works again
                    devservers.push_image(registry.url, "team/late", "1.0.0")
                report = await cycle.run_once(engine)
                engine.record(report, trigger="test", seconds=0.0)

    asyncio.run(cycles())
    events = [json.loads(body) for _, body in receiver.bodies]
    assert [(e["event"], e["failures"]) for e in events] == [("failed", 2), ("recovered", 3)]
    assert events[0]["policy"] == "late" and events[0]["reason"]


def test_an_opened_pull_request_is_a_pr_opened_event_with_its_link() -> None:
    from image_bot.engine import context
    from image_bot.engine.report import PolicyOutcome, PullRequestResult, RepositoryReport
    from image_bot.update.result import Change

    change = Change("deploy/a.yaml", 3, "r.io/team/web", "r.io/team/web:1.0.0",
                    "r.io/team/web:1.1.0", "1.0.0", "1.1.0", "web")
    repo = RepositoryReport("https://git/x.git", "main", outcomes=(
        PolicyOutcome("web", "policies/web.yaml", "proposed", "opened #7",
                      image="r.io/team/web", changes=(change,)),
        PolicyOutcome("api", "policies/api.yaml", "proposed", "#3 is up to date",
                      image="r.io/team/api"),
    ), pull_requests=(
        PullRequestResult("image-bot/web", "opened", "opened #7", 7, "https://forge/pr/7",
                          policies=("web",)),
        PullRequestResult("image-bot/api", "unchanged", "#3 is up to date", 3,
                          "https://forge/pr/3", policies=("api",)),
    ))

    [event] = context._events(repo, {})

    assert (event.kind, event.policy, event.old_tag, event.new_tag, event.link) == (
        "pr-opened", "web", "1.0.0", "1.1.0", "https://forge/pr/7")


def test_a_suspended_policy_neither_fails_nor_recovers() -> None:
    from image_bot.engine import context
    from image_bot.engine.report import PolicyOutcome, RepositoryReport

    repo = RepositoryReport("https://git/x.git", "main", outcomes=(
        PolicyOutcome("web", "policies/web.yaml", "suspended", "spec.suspend: true",
                      image="r.io/team/web"),))

    assert context._events(repo, {"https://git/x.git#web": 3}) == []
