"""Builders for tests/: policy, manifest and bot-config text; starts no server, asserts nothing.

Also pushes tags (through ``devservers.py``, which starts the servers), polls with a
deadline, so tests wait for a condition instead of sleeping a fixed time, and runs the
daemon's app in process (no port) with its scheduler, or ``image-bot webhook`` in a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

import devservers

if TYPE_CHECKING:
    import pytest

SEMVER_1 = {"semver": {"range": "^1.0"}}
DEPLOY_PATHS = ("deploy/**",)
GIT_IDENTITY = {"author_name": "image-bot", "author_email": "bot@example.com"}


# --- config repository files ---------------------------------------------------------------


def policy(name: str, image: str, *, select: Mapping[str, Any] = SEMVER_1,
           paths: Iterable[str] | None = DEPLOY_PATHS, **spec: Any) -> str:
    """One ImagePolicy document, a spec key a line (values in JSON flow style, which is YAML).

    ``paths=None`` leaves ``paths`` out (the default paths); other spec keys are given in
    snake case and written in kebab case (``pin_digest=True`` → ``pin-digest: true``).
    """
    fields: dict[str, Any] = {"image": image, "select": dict(select)}
    if paths is not None:
        fields["paths"] = list(paths)
    fields.update({key.replace("_", "-"): value for key, value in spec.items()})
    lines = ["apiVersion: image-bot/v1", "kind: ImagePolicy",
             f"metadata: {{name: {json.dumps(name)}}}", "spec:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def deployment(name: str, containers: Mapping[str, str], *, comment: str = "") -> str:
    """A Deployment with one container per (name, image reference); ``comment`` follows
    each image reference on its line (e.g. ``"   # keep this comment"``)."""
    lines = ["apiVersion: apps/v1", "kind: Deployment", f"metadata: {{name: {name}}}",
             "spec:", "  template:", "    spec:", "      containers:"]
    for container, reference in containers.items():
        lines += [f"        - name: {container}", f"          image: {reference}{comment}"]
    return "\n".join(lines) + "\n"


def push_tags(registry: devservers.Registry, repository: str,
              tags: Iterable[str]) -> list[str]:
    """Push one small image per tag to ``repository``; returns their digests in order."""
    return [devservers.push_image(registry.url, repository, tag) for tag in tags]


def one_image_each(registry: devservers.Registry, prefix: str,
                   policies: Mapping[str, Mapping[str, Any]],
                   tags: Iterable[str] = ("1.0.0", "1.1.0")) -> dict[str, str | bytes]:
    """A config repository's files, one image per policy: for each name, ``tags`` pushed to
    ``<prefix>/<name>``, its policy (``policies[name]``: more spec keys, as for
    :func:`policy`) in ``policies/<name>.yaml`` and a Deployment of ``1.0.0`` in
    ``deploy/<name>.yaml``."""
    files: dict[str, str | bytes] = {}
    for name, spec in policies.items():
        push_tags(registry, f"{prefix}/{name}", tags)
        image = f"{registry.host}/{prefix}/{name}"
        files[f"policies/{name}.yaml"] = policy(name, image, **spec)
        files[f"deploy/{name}.yaml"] = deployment(name, {"app": f"{image}:1.0.0"})
    return files


def push_as_a_human(url: str, folder: Path, files: Mapping[str, str]) -> Path:
    """Write ``files`` in a clone of ``url`` of its own (``folder/human``), commit and push
    them to main, as someone else than the bot would; the clone."""
    clone = folder / "human"
    devservers.git("clone", "-q", url, str(clone), cwd=folder)
    for name, text in files.items():
        (clone / name).write_text(text)
    devservers.git("add", "-A", cwd=clone)
    devservers.git("commit", "-qm", "a human's change", cwd=clone)
    devservers.git("push", "-q", "origin", "HEAD:main", cwd=clone)
    return clone


# --- the bot's own config ------------------------------------------------------------------


def bot_config(repositories: Iterable[str | Mapping[str, Any]], *, state_dir: Path | str,
               registries: Iterable[str | Mapping[str, Any]] = (),
               **settings: Any) -> dict[str, Any]:
    """A bot config: repositories by URL (or full entries), registries by host (plain HTTP,
    as the test registries serve) or full entries, and any other top-level settings."""
    config: dict[str, Any] = {
        "repositories": [{"url": r} if isinstance(r, str) else dict(r) for r in repositories]}
    hosts = [{"host": r, "insecure": True} if isinstance(r, str) else dict(r)
             for r in registries]
    if hosts:
        config["registries"] = hosts
    return {**config, "state_dir": str(state_dir), **settings}


def write_json(path: Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as JSON (which the bot reads as YAML); returns ``path``."""
    path.write_text(json.dumps(document))
    return path


# --- watching calls ------------------------------------------------------------------------


def recorded(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[Any]:
    """The first argument of every call of ``owner.name`` from now on (the function still
    runs; ``monkeypatch`` undoes the wrapping after the test): how often a text was parsed."""
    calls: list[Any] = []
    function = getattr(owner, name)

    def recording(first: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(first)
        return function(first, *args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


# --- waiting for real processes ------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float = 30.0,
               interval: float = 0.05) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """In a running event loop: wait until ``condition`` holds, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(asgi: Any, scheduler: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The daemon's app on an in-process transport, its scheduler running: a client, once
    ``/readyz`` says so (or after 10 s, for tests of a daemon that never gets ready)."""
    running = asyncio.create_task(scheduler.run())
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as http:
        try:
            for _ in range(200):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            yield http
        finally:
            scheduler.stop()
            await running


@contextlib.contextmanager
def webhook_daemon(config: Path, log: Path) -> Iterator[str]:
    """``image-bot webhook`` (the daemon without polling) in a process on a free port: its
    base URL once it listens; stopped with SIGTERM, and its log shown if it failed."""
    port = devservers.free_port()
    with log.open("wb") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "image_bot", "webhook", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"], stderr=stderr)
    try:
        devservers.wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, log.read_text()[-4000:]
