"""Credential sources for one registry: env vars, a file, the Docker config, a command.

Each source is a plain function in ``SOURCES`` (one line to add another). A
:class:`CredentialProvider` caches what its source returned until ``credentials_refresh``
passes, or until the source's own expiry (``expires_at`` / ``expires_in`` in JSON output),
or until the registry refuses it, whichever comes first, so short-lived secrets (ECR: 12 h,
GAR access tokens: 1 h) are fetched again in time. Messages name the source, never a secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from image_bot.config import models, secrets
from image_bot.errors import AuthError, ConfigError
from image_bot.registry.auth import Credentials

COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Found:
    credentials: Credentials | None
    expires_at: float | None = None  # wall-clock seconds, when the source says


Source = Callable[[models.RegistryConfig], Found]


def from_env(settings: models.RegistryConfig) -> Found:
    """``username_env`` / ``password_env`` (``username`` may replace ``username_env``).

    Unlike other secrets, unset variables are allowed here: they mean anonymous access
    (documented in docs/registries.md), so one config serves CI with and without a login.
    """
    username = os.environ.get(settings.username_env or "", "") or settings.username or ""
    password = os.environ.get(settings.password_env or "", "")
    if not username and not password:
        return Found(None)
    if not username:
        raise ConfigError(f"registry {settings.host}: {settings.password_env} is set but no "
                          f"user name (set username or username_env)")
    return Found(Credentials(username, password))


def unset_variables(settings: models.RegistryConfig) -> str | None:
    """Which of ``username_env``/``password_env`` name an unset variable, for the message of
    a registry that then asks for credentials (``username_env REG_USER is not set``)."""
    unset = [f"{key} {name}" for key, name in (("username_env", settings.username_env),
                                               ("password_env", settings.password_env))
             if name and not os.environ.get(name)]
    if not unset:
        return None
    return f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set"


def from_file(settings: models.RegistryConfig) -> Found:
    """``credentials_file``: ``user:password`` or a lone secret on the first line, or JSON."""
    path = settings.credentials_file
    assert path is not None
    text = secrets.read(None, path, key=f"registry {settings.host}: credentials")
    return _parse_output(text or "", settings, source=f"credentials_file {path}")


def from_docker_config(settings: models.RegistryConfig) -> Found:
    """``auths``, ``credHelpers`` and ``credsStore`` of a Docker config, by the docker SDK
    (so ``docker-credential-ecr-login``, ``-gcloud``, ``-acr-env``… helpers run as usual)."""
    from docker import auth as docker_auth  # imported on use: most runs never need it
    from docker import errors as docker_errors

    path = settings.docker_config if isinstance(settings.docker_config, Path) else None
    if path is not None and path.is_dir():
        path = path / "config.json"
    lookup = "docker.io" if settings.host == "docker.io" else settings.host
    try:
        config = docker_auth.load_config(str(path) if path else None)
    except docker_errors.DockerException:
        raise ConfigError(f"registry {settings.host}: Docker config {path or '(default)'} "
                          f"is not valid") from None
    try:
        entry = config.resolve_authconfig(lookup)
    except docker_errors.DockerException:  # its text may quote the helper's output
        helper = config.get_credential_store(lookup)
        raise AuthError(f"registry {settings.host}: Docker credential helper "
                        f"docker-credential-{helper} failed") from None
    return Found(_from_docker_entry(entry or {}))


def _from_docker_entry(entry: Mapping[str, Any]) -> Credentials | None:
    username = entry.get("username") or entry.get("Username") or ""
    password = entry.get("password") or entry.get("Password") or ""
    identity = entry.get("IdentityToken") or entry.get("identitytoken")
    if identity:
        return Credentials(username or "<token>", "", identity_token=str(identity))
    if username or password:
        return Credentials(str(username), str(password))
    return None


def from_command(settings: models.RegistryConfig) -> Found:
    """``credentials_command``: run it (registry host in ``IMAGE_BOT_REGISTRY``) and read
    its standard output like a ``credentials_file``."""
    argv = settings.credentials_command
    assert argv
    env = {**os.environ, "IMAGE_BOT_REGISTRY": settings.host}
    where = f"registry {settings.host}: credentials_command {argv[0]}"
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                              timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError(f"{where} not found") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"{where} did not finish within {COMMAND_TIMEOUT:.0f}s") from None
    if done.returncode != 0:  # its stderr may quote a secret: report the status only
        raise AuthError(f"{where} exited with status {done.returncode}")
    return _parse_output(done.stdout, settings, source=f"credentials_command {argv[0]}")


def _parse_output(text: str, settings: models.RegistryConfig, *, source: str) -> Found:
    text = text.strip()
    if text.startswith("{"):
        return _parse_json(text, settings, source=source)
    line = text.splitlines()[0].strip() if text else ""
    if not line:
        raise AuthError(f"registry {settings.host}: {source} gave no credentials")
    username, sep, password = line.partition(":")
    if not sep:
        username, password = settings.username or "", line
    if not username:
        raise ConfigError(f"registry {settings.host}: {source} gave a secret without a user "
                          f"name (set username, or print user:password)")
    return Found(Credentials(username, password))


def _parse_json(text: str, settings: models.RegistryConfig, *, source: str) -> Found:
    try:
        body = json.loads(text)
    except ValueError:
        raise AuthError(f"registry {settings.host}: {source} printed invalid JSON") from None
    if not isinstance(body, dict):
        raise AuthError(f"registry {settings.host}: {source} printed JSON that is not an "
                        f"object")
    credentials = _from_docker_entry({
        "username": body.get("username") or body.get("Username") or settings.username,
        "password": body.get("password") or body.get("Secret") or body.get("token"),
        "identitytoken": body.get("identity_token") or body.get("identitytoken"),
    })
    if credentials is None:
        raise AuthError(f"registry {settings.host}: {source} printed JSON without username "
                        f"and password")
    return Found(credentials, _expiry(body))


def _expiry(body: Mapping[str, Any]) -> float | None:
    if isinstance(body.get("expires_in"), int | float):
        return time.time() + float(body["expires_in"])
    stamp = body.get("expires_at") or body.get("ExpiresAt")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


SOURCES: dict[str, Source] = {  # config key → source; the first key that is set wins
    "credentials_command": from_command,
    "credentials_file": from_file,
    "docker_config": from_docker_config,
    "username_env": from_env,
}


def source_for(settings: models.RegistryConfig) -> Source | None:
    for key, source in SOURCES.items():
        value = getattr(settings, key)
        if key == "username_env":
            value = value or settings.password_env
        if value is not None and value is not False:
            return source
    return None


class CredentialProvider:
    """The credentials of one registry, re-read when they may have expired or were refused."""

    def __init__(self, settings: models.RegistryConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._source = source_for(settings)
        self._clock = clock
        self._cached: Found | None = None
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.reads = 0  # how often the source ran (tests and status)

    @property
    def configured(self) -> bool:
        return self._source is not None

    def why_none(self) -> str:
        """Why a configured source gave no credentials, as precisely as is known."""
        if self._source is from_env:
            return unset_variables(self._settings) or "its credentials source gave none"
        return "its credentials source gave none"

    async def get(self) -> Credentials | None:
        if self._source is None:
            return None
        async with self._lock:
            if self._cached is None or self._clock() >= self._valid_until:
                self._cached = await asyncio.to_thread(self._source, self._settings)
                self.reads += 1
                deadline = self._clock() + self._settings.refresh_seconds
                if self._cached.expires_at is not None:  # refresh a little before expiry
                    deadline = min(deadline, self._cached.expires_at - 60.0)
                self._valid_until = deadline
            return self._cached.credentials

    def invalidate(self) -> None:
        """Forget the cached credentials (the registry refused them): read again next time."""
        self._cached = None
