"""Registry authentication: credentials from the environment, and the 401 challenge flow.

Handles ``WWW-Authenticate: Basic`` and ``Bearer realm=…,service=…,scope=…`` (the Docker
Hub / GHCR token flow). Tokens are cached per scope until they expire. Secrets never
appear in messages or logs.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass

import httpx

from image_bot.config import models
from image_bot.errors import AuthError, RegistryError

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_TOKEN_TTL_DEFAULT = 60.0


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = ""

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


def credentials_for(settings: models.RegistryConfig) -> Credentials | None:
    """Basic credentials named by ``username_env``/``password_env``, if both are set."""
    if not settings.username_env:
        return None
    username = os.environ.get(settings.username_env)
    if not username:
        return None
    password = os.environ.get(settings.password_env or "", "")
    return Credentials(username, password)


def parse_challenge(header: str) -> Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in {"basic", "bearer"}:
        return None
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


class TokenCache:
    """Bearer tokens by (realm, service, scope), dropped shortly before they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    def get(self, key: tuple[str, str, str]) -> str | None:
        entry = self._tokens.get(key)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    def put(self, key: tuple[str, str, str], token: str, expires_in: float) -> None:
        self._tokens[key] = (token, time.monotonic() + max(expires_in - 10.0, 1.0))


async def fetch_token(
    http: httpx.AsyncClient, challenge: Challenge, *, scope: str,
    credentials: Credentials | None, host: str,
) -> tuple[str, float]:
    """Ask the token server named in a Bearer challenge for a token with ``scope``."""
    realm = challenge.params.get("realm")
    if not realm:
        raise RegistryError(f"registry {host}: Bearer challenge without a realm")
    params = {"scope": scope}
    if "service" in challenge.params:
        params["service"] = challenge.params["service"]
    auth = (credentials.username, credentials.password) if credentials else None
    try:
        response = await http.get(realm, params=params, auth=auth)
    except httpx.HTTPError as exc:
        raise AuthError(f"registry {host}: token server {realm} unreachable: "
                        f"{type(exc).__name__}") from exc
    if response.status_code in {401, 403}:
        raise AuthError(f"registry {host}: token server refused the credentials "
                        f"(HTTP {response.status_code})")
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
    except ValueError:
        token = None
    if response.status_code != 200 or not isinstance(token, str):
        raise RegistryError(f"registry {host}: token server {realm} answered "
                            f"HTTP {response.status_code} without a token")
    return token, float(body.get("expires_in") or _TOKEN_TTL_DEFAULT)
