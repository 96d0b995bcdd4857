"""Notify: events, per-target filters, and delivery off the cycle's path (bounded retries).

Fed only by the engine (``Engine.record``); imports no stage. A target that is down costs
at most ``retries`` attempts on the background thread, each counted through ``on_result``
(the engine's metric); a full queue drops the event (counted too) instead of waiting.
Messages carry image, tags, repository, commit/PR link, agent and reason, and never a
secret: Apprise URLs and webhook keys are read once and only used to send.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

from image_bot import logs
from image_bot.config import models, secrets
from image_bot.errors import ConfigError

log = logs.logger("notify")
SIGNATURE_HEADER = "X-Image-Bot-Signature-256"
EVENT_HEADER = "X-Image-Bot-Event"
QUEUE_LIMIT = 1000
_REASON_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """Something a person may want to know; ``failures``: failed cycles in a row (``failed``)
    or before this success (``recovered``)."""

    kind: str  # one of models.NOTIFICATION_EVENTS
    repository: str
    policy: str
    image: str
    old_tag: str | None = None
    new_tag: str | None = None
    commit: str | None = None
    link: str | None = None  # the pull request, or the rollback PR
    agent: str | None = None
    service: str | None = None
    reason: str = ""
    failures: int = 0
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def title(self) -> str:
        tags = f"{self.old_tag or '?'} → {self.new_tag}" if self.new_tag else ""
        return f"image-bot {self.kind}: {self.image} {tags}".strip()

    @property
    def body(self) -> str:
        lines = [f"{self.title}", f"repository: {self.repository} (policy {self.policy})"]
        for label, value in (("commit", self.commit), ("link", self.link),
                             ("agent", self.agent), ("service", self.service)):
            if value:
                lines.append(f"{label}: {value}")
        if self.reason:
            lines.append(f"reason: {self.reason[:_REASON_LIMIT]}")
        for name, seconds in self.timings.items():
            lines.append(f"{name.replace('_', ' ')}: {seconds:.1f}s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timings"] = dict(self.timings)
        data["reason"] = self.reason[:_REASON_LIMIT]
        return {"event": data.pop("kind"), **data, "title": self.title}


class DeliveryFailed(Exception):
    """One attempt to reach a target failed (the message says why, without secrets)."""


class Target(Protocol):
    def deliver(self, event: Event) -> None:
        """Send ``event`` once, or raise :class:`DeliveryFailed`."""


class WebhookTarget:
    """``POST`` the event as JSON, signed with HMAC-SHA256 of the body when a key is set."""

    def __init__(self, url: str, secret: str | None, *, timeout: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._url, self._secret, self._timeout = url, secret, timeout
        self._transport = transport

    def __repr__(self) -> str:  # never print the key
        return f"WebhookTarget({httpx.URL(self._url).host!r})"

    def deliver(self, event: Event) -> None:
        body = json.dumps(event.to_dict(), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", EVENT_HEADER: event.kind}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        try:
            with httpx.Client(timeout=self._timeout, transport=self._transport) as http:
                answer = http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}") from None
        if answer.status_code >= 300:
            raise DeliveryFailed(f"HTTP {answer.status_code}")


class AppriseTarget:
    """Any service Apprise knows (Slack, Teams, Matrix, email…), one URL per line."""

    def __init__(self, urls: Sequence[str]) -> None:
        with _quiet():
            import apprise  # imported only when a target needs it

            self._apprise = apprise.Apprise()
            for url in urls:  # plugins load on first use
                if not self._apprise.add(url):
                    raise ConfigError("notifications: an Apprise URL is not understood (the "
                                      "URL is not repeated here: it may hold a token)")

    def __repr__(self) -> str:
        return f"AppriseTarget({len(self._apprise)} URL(s))"

    def deliver(self, event: Event) -> None:
        with _quiet():
            sent = self._apprise.notify(title=event.title, body=event.body)
        if not sent:
            raise DeliveryFailed("apprise could not deliver to every URL")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Apprise's plugins import deprecated modules (imghdr, via pgpy): not our warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Route:
    """One configured target and what it wants."""

    name: str
    target: Target
    events: frozenset[str]
    failed_after: int = 3
    retries: int = 3
    backoff: float = 1.0

    def wants(self, event: Event) -> bool:
        if event.kind not in self.events:
            return False
        if event.kind == "failed":  # once, when the streak reaches the threshold
            return event.failures == self.failed_after
        if event.kind == "recovered":
            return event.failures >= self.failed_after
        return True


def build(configs: Sequence[models.NotificationTarget],
          environ: Mapping[str, str] | None = None) -> list[Route]:
    """The routes of the bot config's ``notifications:`` (secrets read now), or ConfigError."""
    routes = []
    for number, config in enumerate(configs):
        where = f"notifications[{number}] ({config.name})"
        target: Target
        if config.kind == "webhook":
            secret = secrets.read(config.secret_env, config.secret_file, environ=environ,
                                  key=f"{where}.secret")
            target = WebhookTarget(config.url or "", secret, timeout=config.timeout)
        else:
            urls = secrets.read(config.url_env, config.url_file, environ=environ,
                                key=f"{where}.url") or ""
            target = AppriseTarget([u for u in urls.split() if u])
        routes.append(Route(config.name, target, frozenset(config.events),
                            config.failed_after, config.retries, config.backoff))
    return routes


OnResult = Callable[[str, str], None]  # target name, outcome (sent, retried, failed, dropped)


class Notifier:
    """Routes events to targets on one background thread; ``publish`` never blocks."""

    def __init__(self, routes: Sequence[Route], *, on_result: OnResult | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 limit: int = QUEUE_LIMIT) -> None:
        self.routes = list(routes)
        self._on_result = on_result or (lambda name, outcome: None)
        self._sleep = sleep
        self._queue: queue.Queue[tuple[Route, Event] | None] = queue.Queue(limit)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def publish(self, event: Event) -> None:
        for route in self.routes:
            if not route.wants(event):
                continue
            try:
                self._queue.put_nowait((route, event))
            except queue.Full:
                self._on_result(route.name, "dropped")
                continue
            self._start()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (at most ``timeout`` seconds), then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="image-bot-notify",
                                                daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self.deliver(*item)

    def deliver(self, route: Route, event: Event) -> bool:
        """Up to ``route.retries`` attempts, ``backoff`` doubling between them."""
        for attempt in range(1, route.retries + 1):
            try:
                route.target.deliver(event)
            except DeliveryFailed as exc:
                if attempt == route.retries:
                    self._on_result(route.name, "failed")
                    log.warning("notification not delivered: %s", exc,
                                extra={"receiver": route.name, "outcome": event.kind})
                    return False
                self._on_result(route.name, "retried")
                self._sleep(route.backoff * 2 ** (attempt - 1))
                continue
            except Exception:  # a broken plugin must not kill the thread
                self._on_result(route.name, "failed")
                log.exception("notification target crashed", extra={"receiver": route.name})
                return False
            self._on_result(route.name, "sent")
            return True
        return False  # pragma: no cover
