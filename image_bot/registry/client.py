"""OCI distribution v2 client: list tags (with ``Link`` pagination) and resolve digests.

Every failure becomes an :mod:`image_bot.errors` exception naming the registry and image:
unreachable or 5xx/429 → ``RegistryUnavailable`` (retried with backoff first), 404 →
``ImageNotFound``, 401/403 → ``AuthError``, garbage → ``RegistryError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import tenacity

from image_bot import refs
from image_bot.config import models
from image_bot.errors import (
    AuthError,
    ImageNotFound,
    RegistryError,
    RegistryUnavailable,
)
from image_bot.registry import auth

_DOCKER_HUB_API = "registry-1.docker.io"
_MAX_PAGES = 1000
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class RegistryClient:
    """One client for all registries; per-host settings come from the bot config."""

    def __init__(
        self, registries: Mapping[str, models.RegistryConfig] | None = None, *,
        attempts: int = 3, backoff: float = 0.5, timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._registries = dict(registries or {})
        self._attempts = attempts
        self._backoff = backoff
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport,
                                       follow_redirects=True)
        self._tokens = auth.TokenCache()
        self.requests = 0  # every HTTP request sent to a registry, for benchmarks and status

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_tags(self, image: refs.ImageRef) -> list[str]:
        """Every tag of ``image``, de-duplicated, in the order the registry sent them."""
        url: str | None = f"{self._base(image.host)}/v2/{image.repository}/tags/list"
        tags: dict[str, None] = {}
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= _MAX_PAGES:
                raise RegistryError(f"registry {image.host}: pagination loop listing tags "
                                    f"of {image.repository}")
            seen.add(url)
            response = await self._get(image, url)
            for tag in _tags_from(response, image):
                tags[tag] = None
            url = self._next_page(response, image)
        return list(tags)

    async def digest(self, image: refs.ImageRef, tag: str) -> str:
        """The manifest digest of ``image:tag``, by HEAD (a GET would count as a pull)."""
        url = f"{self._base(image.host)}/v2/{image.repository}/manifests/{tag}"
        response = await self._request(image, "HEAD", url, headers={"Accept": MANIFEST_ACCEPT})
        digest = response.headers.get("Docker-Content-Digest")
        if not isinstance(digest, str) or not digest:
            raise RegistryError(f"registry {image.host}: no Docker-Content-Digest for "
                                f"{image.repository}:{tag}")
        return digest

    # --- plumbing ---------------------------------------------------------------------

    def _settings(self, host: str) -> models.RegistryConfig:
        return self._registries.get(host) or models.RegistryConfig(host=host)

    def _base(self, host: str) -> str:
        scheme = "http" if self._settings(host).insecure else "https"
        api_host = _DOCKER_HUB_API if host == refs.DOCKER_HUB else host
        return f"{scheme}://{api_host}"

    async def _get(self, image: refs.ImageRef, url: str) -> httpx.Response:
        return await self._request(image, "GET", url)

    async def _request(self, image: refs.ImageRef, method: str, url: str,
                       headers: dict[str, str] | None = None) -> httpx.Response:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=_wait_retry_after(self._backoff),
            retry=tenacity.retry_if_exception_type(RegistryUnavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._authorized(image, method, url, dict(headers or {}))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _authorized(self, image: refs.ImageRef, method: str, url: str,
                          headers: dict[str, str]) -> httpx.Response:
        settings = self._settings(image.host)
        credentials = auth.credentials_for(settings)
        scope = f"repository:{image.repository}:pull"
        token_key = (image.host, "", scope)
        token = self._tokens.get(token_key)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif credentials and self._tokens.get((image.host, "basic", "")):
            headers["Authorization"] = credentials.basic_header()
        response = await self._send(image, method, url, headers)
        if response.status_code == 401:
            challenge = auth.parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if challenge is None:
                raise AuthError(f"registry {image.host}: 401 without a usable challenge "
                                f"for {image.repository}")
            if challenge.scheme == "basic":
                if not credentials:
                    raise AuthError(f"registry {image.host}: credentials required for "
                                    f"{image.repository} (set username_env/password_env)")
                self._tokens.put((image.host, "basic", ""), "basic", 3600.0)
                headers["Authorization"] = credentials.basic_header()
            else:
                token, ttl = await auth.fetch_token(self._http, challenge, scope=scope,
                                                    credentials=credentials, host=image.host)
                self.requests += 1
                self._tokens.put(token_key, token, ttl)
                headers["Authorization"] = f"Bearer {token}"
            response = await self._send(image, method, url, headers)
        _raise_for_status(response, image)
        return response

    async def _send(self, image: refs.ImageRef, method: str, url: str,
                    headers: dict[str, str]) -> httpx.Response:
        self.requests += 1
        try:
            return await self._http.request(method, url, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"registry {image.host} unreachable while reading {image.repository}: "
                f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _next_page(response: httpx.Response, image: refs.ImageRef) -> str | None:
        link = response.links.get("next")
        if not link or not link.get("url"):
            return None
        url = urljoin(str(response.url), link["url"])
        if urlsplit(url).netloc != response.url.netloc.decode("ascii"):
            raise RegistryError(f"registry {image.host}: refusing a next-page link to "
                                f"another host ({urlsplit(url).netloc})")
        return url


def _raise_for_status(response: httpx.Response, image: refs.ImageRef) -> None:
    status = response.status_code
    if status < 400:
        return
    where = f"registry {image.host}, image {image.repository}"
    if status in {401, 403}:
        raise AuthError(f"{where}: access denied (HTTP {status})")
    if status == 404:
        raise ImageNotFound(f"{where}: not found (HTTP 404{_error_code(response)})")
    if status == 429 or status >= 500:
        retry_after = _retry_after(response)
        raise RegistryUnavailable(f"{where}: HTTP {status}", retry_after=retry_after)
    raise RegistryError(f"{where}: unexpected HTTP {status}{_error_code(response)}")


def _error_code(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return f" {errors[0]['code']}" if errors else ""
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _tags_from(response: httpx.Response, image: refs.ImageRef) -> list[str]:
    try:
        body: Any = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown type")
        raise RegistryError(f"registry {image.host}: tag list of {image.repository} is not "
                            f"JSON ({kind})") from None
    tags = body.get("tags") if isinstance(body, dict) else None
    if tags is None and isinstance(body, dict) and "name" in body:
        return []  # a repository without tags answers "tags": null
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RegistryError(f"registry {image.host}: tag list of {image.repository} has no "
                            f"'tags' array")
    return tags


def _wait_retry_after(backoff: float) -> Callable[[tenacity.RetryCallState], float]:
    """Exponential backoff, unless the registry said how long to wait (``Retry-After``)."""
    exponential = tenacity.wait_exponential(multiplier=backoff, max=30)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RegistryUnavailable) and error.retry_after is not None:
            return min(error.retry_after, 300.0)
        return float(exponential(state))

    return wait
