"""Registry authentication: the 401 challenge, Basic headers and the Bearer token flow.

Handles ``WWW-Authenticate: Basic`` and ``Bearer realm=…,service=…,scope=…`` (Docker Hub,
GHCR, GAR, ACR, Quay, Harbor, GitLab). Tokens come from the realm by ``GET`` (Basic
credentials or anonymous) or, with an identity token from the Docker config, by the OAuth2
``POST`` (``grant_type=refresh_token``); either ``token`` or ``access_token`` is accepted.
Tokens are cached per (realm, service, scope) until shortly before they expire. Nothing
here ever puts a token or a password into a message.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from image_bot.errors import AuthError, RegistryError, RegistryLimitExceeded, RegistryUnavailable
from image_bot.registry import limits, network

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_TOKEN_TTL_DEFAULT = 60.0  # the distribution spec's default when expires_in is absent
_EXPIRY_MARGIN = 10.0
CLIENT_ID = "image-bot"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and a secret; ``identity_token`` is an OAuth2 refresh token (ACR, Docker
    Desktop) used instead of the password at the token server."""

    username: str
    password: str = field(default="", repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, password=***)"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret strings, so callers can scrub them from anything they print."""
        return tuple(s for s in (self.password, self.identity_token) if s)


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")


def parse_challenge(header: str) -> Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in {"basic", "bearer"}:
        return None
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


TokenKey = tuple[str, str, str]  # realm, service, scope


class TokenCache:
    """Bearer tokens by (realm, service, scope), dropped shortly before they expire.

    Concurrent requests for one scope share a single token request (one lock per key).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[TokenKey, tuple[str, float]] = {}
        self._locks: dict[TokenKey, asyncio.Lock] = {}

    def get(self, key: TokenKey) -> str | None:
        entry = self._tokens.get(key)
        if entry and entry[1] > self._clock():
            return entry[0]
        return None

    def put(self, key: TokenKey, token: str, expires_in: float) -> None:
        lifetime = max(expires_in - _EXPIRY_MARGIN, min(expires_in, 1.0))
        self._tokens[key] = (token, self._clock() + lifetime)

    def drop(self, key: TokenKey) -> None:
        self._tokens.pop(key, None)

    def lock(self, key: TokenKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_in: float


async def fetch_token(
    http: httpx.AsyncClient, challenge: Challenge, *, scope: str,
    credentials: Credentials | None, host: str, max_bytes: int,
) -> Token:
    """Ask the token server named in a Bearer challenge for a token with ``scope``; its
    answer is read up to ``max_bytes``."""
    realm = challenge.realm
    if not realm:
        raise RegistryError(f"registry {host}: Bearer challenge without a realm")
    try:
        if credentials and credentials.identity_token:
            response = await limits.read_capped(http, "POST", realm, limit=max_bytes, data={
                "grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                "service": challenge.service, "scope": scope, "client_id": CLIENT_ID})
        else:
            params = {"scope": scope, "service": challenge.service}
            if credentials:
                params["account"] = credentials.username
            headers = {"Authorization": credentials.basic_header()} if credentials else {}
            response = await limits.read_capped(http, "GET", realm, limit=max_bytes,
                                                params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise RegistryUnavailable(f"registry {host}: token server {origin(realm)} "
                                  f"unreachable: {network.unreachable(exc)}") from exc
    except limits.TooLarge as exc:
        raise RegistryLimitExceeded(f"registry {host}: token server {origin(realm)} answered "
                                    f"more than {max_bytes} bytes ({exc}; registries[]."
                                    f"max_response_bytes)") from None
    return _token_from(response, host=host, realm=realm, anonymous=credentials is None)


def _token_from(response: httpx.Response, *, host: str, realm: str,
                anonymous: bool) -> Token:
    where = f"registry {host}: token server {origin(realm)}"
    if response.status_code in {401, 403}:
        what = "refused anonymous access" if anonymous else "refused the credentials"
        raise AuthError(f"{where} {what} (HTTP {response.status_code})")
    if response.status_code == 429 or response.status_code >= 500:
        raise RegistryUnavailable(f"{where} answered HTTP {response.status_code}")
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
        expires_in = float(body.get("expires_in") or _TOKEN_TTL_DEFAULT)
    except (ValueError, AttributeError, TypeError):
        token, expires_in = None, 0.0
    if response.status_code != 200 or not isinstance(token, str) or not token:
        raise RegistryError(f"{where} answered HTTP {response.status_code} without a token")
    return Token(token, expires_in)


def origin(url: str) -> str:
    """Scheme, host and path of ``url``: never its query (it may carry an account name)."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}{parsed.path}"
