"""The daemon's HTTP app (Starlette on uvicorn): webhooks, health, metrics, status page.

Routes: ``POST /webhook/<receiver>``, ``POST /api/agents/<name>/report`` (sync agents),
``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``GET /`` (status page) and
``GET /api/status`` (the same as JSON: ``schema/status.schema.json``; ``daemon.peers``
are merged in, ``?local=1`` leaves them out). A webhook or report is answered after parsing,
storing and enqueueing only: it never waits for a registry or Git.

Webhook answers: 404 unknown receiver, 413 body over ``daemon.max_body_bytes``, 401 bad or
missing secret, 400 malformed payload, 409 a replay (a signed request seen, or signed, too
long ago: ``receivers[].replay_window``), 202 accepted (with the policies queued) or ignored
(image not covered by any policy, or an event kind that is not a push).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from image_bot import logs
from image_bot.config import models, secrets
from image_bot.engine import observing, overview, reporting, scheduling
from image_bot.errors import ConfigError
from image_bot.server import page, receivers, replay
from image_bot.state import State

log = logs.logger("server")


@dataclass(frozen=True, slots=True)
class Receiver:
    config: models.ReceiverConfig
    secret: str | None  # None only with allow_unsigned

    def __repr__(self) -> str:  # never print the secret
        return f"Receiver(name={self.config.name!r}, kind={self.config.kind!r})"


def load_receivers(config: models.BotConfig,
                   env: Mapping[str, str] | None = None) -> dict[str, Receiver]:
    """Receivers with their secrets (``secret_env`` or ``secret_file``), or a
    :class:`ConfigError`."""
    loaded = {}
    for number, receiver in enumerate(config.receivers):
        secret = secrets.read(receiver.secret_env, receiver.secret_file, environ=env,
                              key=f"receivers[{number}] ({receiver.name}).secret")
        loaded[receiver.name] = Receiver(receiver, secret)
    return loaded


def parse_listen(listen: str) -> tuple[str, int]:
    """``"0.0.0.0:8080"`` or ``"[::]:8080"`` → host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen {listen!r}: expected HOST:PORT, for example 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_agent_secret(config: models.BotConfig,
                      env: Mapping[str, str] | None = None) -> str | None:
    """The shared secret agents sign their reports with (None: reports are not accepted)."""
    if config.agents is None:
        return None
    return secrets.read(config.agents.secret_env, config.agents.secret_file, environ=env,
                        key="agents.secret")


class _Handlers:
    def __init__(self, config: models.BotConfig, scheduler: scheduling.Scheduler,
                 state: State, metrics: observing.Metrics,
                 receivers_by_name: Mapping[str, Receiver],
                 clock: Callable[[], float] = time.time,
                 agent_secret: str | None = None) -> None:
        self.config, self.scheduler, self.state, self.metrics = config, scheduler, state, metrics
        self.receivers = receivers_by_name
        self.guards = {name: replay.ReplayGuard(r.config.replay_window, clock=clock)
                       for name, r in receivers_by_name.items()}
        self.agent_secret = agent_secret
        self.stopping = False

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        if self.stopping:
            return PlainTextResponse("shutting down\n", status_code=503)
        if not self.scheduler.ready:
            return PlainTextResponse("loading policies\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def status_page(self, request: Request) -> Response:
        return HTMLResponse(page.render(await self._document(peers=True)))

    async def status_json(self, request: Request) -> Response:
        """The status document; ``?local=1``: this daemon's part only (what peers ask)."""
        local = request.query_params.get("local") in ("1", "true")
        return JSONResponse(await self._document(peers=not local))

    async def _document(self, *, peers: bool) -> dict[str, Any]:
        """The state dir as one document (``engine.overview``), with this daemon's
        scheduling, and the peers' parts merged in."""
        document = await asyncio.to_thread(overview.read, self.state, self.config,
                                           now=time.time())
        document.update(ready=self.scheduler.ready, scheduled=len(self.scheduler.entries),
                        shard=str(self.scheduler.shard) if self.scheduler.shard else None,
                        mode=self._summary())
        if peers:
            daemon = self.config.daemon
            document = await overview.with_peers(document, daemon.peers,
                                                 timeout=daemon.peer_timeout)
        return document

    async def agent_report(self, request: Request) -> Response:
        status, answer = await self._agent_report(request)
        self.metrics.agent_reports.labels(answer.pop("outcome")).inc()
        return JSONResponse(answer, status_code=status)

    async def _agent_report(self, request: Request) -> tuple[int, dict[str, Any]]:
        name = request.path_params["name"]
        if self.agent_secret is None:
            return 404, {"outcome": "disabled",
                         "error": "agent reports are not enabled (bot config: agents)"}
        if not reporting.NAME.match(name):
            return 400, {"outcome": "malformed", "error": "invalid agent name"}
        assert self.config.agents is not None
        body = await _read_limited(request, self.config.agents.max_body_bytes)
        if body is None:
            return 413, {"outcome": "too_large", "error": "body too large"}
        incoming = receivers.Request({k.lower(): v for k, v in request.headers.items()},
                                     {}, body)
        try:
            receivers.authenticate("generic", incoming, self.agent_secret)
        except receivers.Unauthorized as exc:
            log.warning("agent report refused: %s", exc, extra={"receiver": name})
            return 401, {"outcome": "unauthorized", "error": "unauthorized"}
        try:
            posted = reporting.parse(name, body)
        except reporting.Malformed as exc:
            return 400, {"outcome": "malformed", "error": f"malformed report: {exc}"}
        self.state.put_agent_report(name, posted.report.to_dict(), interval=posted.interval,
                                    at=time.time())
        queued = self.scheduler.request_tracking(posted.report.repository,
                                                 posted.report.branch)
        return 202, {"outcome": "accepted", "tracking": queued}

    def _summary(self) -> str:
        shard = f", shard {self.scheduler.shard}" if self.scheduler.shard else ""
        mode = "polling and webhooks" if self.scheduler.polling else "webhooks only"
        return (f"{len(self.scheduler.entries)} policies scheduled in "
                f"{len(self.config.repositories)} repositories ({mode}{shard})")

    async def webhook(self, request: Request) -> Response:
        name = request.path_params["receiver"]
        receiver = self.receivers.get(name)
        if receiver is None:
            return JSONResponse({"error": f"no receiver named {name!r}"}, status_code=404)
        status, answer = await self._webhook(receiver, request)
        self.metrics.webhook_events.labels(name, answer.pop("outcome")).inc()
        return JSONResponse(answer, status_code=status)

    async def _webhook(self, receiver: Receiver,
                       request: Request) -> tuple[int, dict[str, Any]]:
        body = await _read_limited(request, self.config.daemon.max_body_bytes)
        if body is None:
            return 413, {"outcome": "too_large", "error": "body too large"}
        incoming = receivers.Request({k.lower(): v for k, v in request.headers.items()},
                                     dict(request.query_params), body)
        kind, name = receiver.config.kind, receiver.config.name
        signed_at = None
        if receiver.secret is not None:
            try:
                receivers.authenticate(kind, incoming, receiver.secret)
                signed_at = receivers.signed_time(kind, incoming)
                if signed_at is None and receiver.config.require_timestamp:
                    raise receivers.Unauthorized(f"missing {receivers.TIMESTAMP_HEADER}")
            except receivers.Unauthorized as exc:
                log.warning("webhook refused: %s", exc, extra={"receiver": name})
                return 401, {"outcome": "unauthorized", "error": "unauthorized"}
        try:
            parsed = receivers.parse(kind, incoming, receiver.config.registry)
        except receivers.MalformedPayload as exc:
            return 400, {"outcome": "malformed", "error": f"malformed {kind} payload: {exc}"}
        if receiver.secret is not None:  # only a signed request can be told from a replay
            refusal = self.guards[name].refusal(receivers.replay_key(kind, incoming), signed_at)
            if refusal:
                log.warning("webhook refused: %s", refusal, extra={"receiver": name})
                return 409, {"outcome": "replayed", "error": refusal}
        return 202, self._enqueue(receiver, parsed)

    def _enqueue(self, receiver: Receiver, parsed: receivers.Parsed) -> dict[str, Any]:
        if parsed.reload:
            self.scheduler.request_reload()
            log.info("policy reload requested", extra={"receiver": receiver.config.name})
            return {"outcome": "reload", "reload": True}
        queued: dict[str, list[str]] = {}
        ignored: list[str] = []
        for push in parsed.pushes:
            if push.tag:  # the start of the push → commit → deployed timings
                self.state.note_push(push.image, push.tag, time.time())
            names = self.scheduler.request_image(push.image)
            if names:
                queued.setdefault(push.image, []).extend(names)
            else:
                ignored.append(push.image)
            log.info("webhook push %s", "queued" if names else "ignored (no policy)",
                     extra={"receiver": receiver.config.name, "image": push.image,
                            "tag": push.tag, "count": len(names)})
        outcome = "accepted" if queued else "ignored"
        answer: dict[str, Any] = {"outcome": outcome, "queued": queued,
                                  "ignored": sorted(set(ignored))}
        if parsed.note:
            answer["note"] = parsed.note
        return answer


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is longer than ``limit`` (never buffer more)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(config: models.BotConfig, *, scheduler: scheduling.Scheduler, state: State,
               metrics: observing.Metrics, receivers_by_name: Mapping[str, Receiver],
               clock: Callable[[], float] = time.time,
               agent_secret: str | None = None) -> Starlette:
    """The app; ``clock`` (Unix seconds) dates requests for replay protection."""
    handlers = _Handlers(config, scheduler, state, metrics, receivers_by_name, clock,
                         agent_secret)
    app = Starlette(routes=[
        Route("/", handlers.status_page),
        Route("/api/status", handlers.status_json),
        Route("/healthz", handlers.healthz),
        Route("/readyz", handlers.readyz),
        Route("/metrics", handlers.metrics_page),
        Route("/webhook/{receiver}", handlers.webhook, methods=["POST"]),
        Route("/api/agents/{name}/report", handlers.agent_report, methods=["POST"]),
    ])
    app.state.handlers = handlers
    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon decides how to shut down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(config: models.BotConfig, *, scheduler: scheduling.Scheduler, state: State,
                metrics: observing.Metrics, listen: str) -> None:
    """Run the scheduler and the HTTP app until SIGTERM/SIGINT, then shut down cleanly."""
    receivers_by_name = load_receivers(config)
    agent_secret = load_agent_secret(config)
    host, port = parse_listen(listen)
    app = create_app(config, scheduler=scheduler, state=state, metrics=metrics,
                     receivers_by_name=receivers_by_name, agent_secret=agent_secret)
    sock = _bind(host, port)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        log.info("received %s: finishing running scans, then exiting",
                 signal.Signals(signum).name)
        app.state.handlers.stopping = True
        scheduler.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    http = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("listening", extra={"listen": f"{host}:{port}", "count": len(receivers_by_name)})
    try:
        await scheduler.run()
    finally:
        server.should_exit = True
        await http
        sock.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so a taken port is a clear error and not a dead task."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"listen {host}:{port}: cannot bind: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
