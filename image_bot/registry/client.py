"""OCI distribution v2 client: tags, digests and image metadata with the fewest requests.

Per host: one ``GET /v2/`` learns how the registry wants to be addressed (anonymous,
Basic or a Bearer realm), so every later request is sent once, already authorised; a
Bearer token is fetched once per scope and reused until it expires. Tags come from
``tags/list`` following ``Link`` pages; a digest from ``HEAD`` (on Docker Hub a ``GET``
counts as a pull); manifests and config blobs are addressed by digest, hence immutable and
cached forever in :class:`image_bot.state.State`.

Every failure becomes an :mod:`image_bot.errors` exception naming the registry and image:
unreachable or 5xx/429 → ``RegistryUnavailable`` (retried with backoff first, honouring
``Retry-After``), 404 → ``ImageNotFound``, 401/403 → ``AuthError``, garbage →
``RegistryError``. No message, log line or ``on_request`` call carries a secret.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import operator
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import tenacity

from image_bot import logs, refs
from image_bot.config import models
from image_bot.errors import (
    AuthError,
    ConfigError,
    ImageNotFound,
    RegistryError,
    RegistryLimitExceeded,
    RegistryUnavailable,
)
from image_bot.registry import auth, credentials, limits, manifests, network, quirks, transport
from image_bot.registry.manifests import ImageInfo
from image_bot.state import State

_Parsed = TypeVar("_Parsed")

__all__ = ["MANIFEST_ACCEPT", "ImageInfo", "OnRequest", "RegistryClient", "redact_url",
           "scan_deadline"]

MANIFEST_ACCEPT = manifests.ACCEPT
OnRequest = Callable[[str, str, int, float], None]  # method, redacted URL, status, seconds

_MAX_PAGES = 1000
_MAX_BACKOFF = 30.0  # seconds between two attempts, unless Retry-After says otherwise
_SAFE_QUERY_KEYS = frozenset({"n", "last", "scope", "service", "digest", "ns"})
_START = "image_bot.started"
_log = logs.logger("registry")


@dataclass
class _Host:
    """Everything the client knows about one registry host."""

    name: str
    settings: models.RegistryConfig
    base: str
    http: httpx.AsyncClient
    limits: limits.HostLimits
    credentials: credentials.CredentialProvider
    quirks: quirks.Quirks
    challenge: auth.Challenge | None = None
    probed: bool = False
    probe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RegistryClient:
    """One client for all registries; per-host settings come from the bot config.

    ``state`` caches manifests and config blobs by digest across runs; ``on_request`` is
    called after every HTTP request with (method, URL without secrets, status or 0 when
    no answer came, seconds), which is what ``image-bot test --verbose`` prints.
    """

    def __init__(
        self,
        registries: Iterable[models.RegistryConfig] | Mapping[str, models.RegistryConfig]
        | None = None,
        *, state: State | None = None, attempts: int = 3, backoff: float = 0.5,
        timeout: float = 10.0, max_wait: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: OnRequest | None = None,
    ) -> None:
        configs = registries.values() if isinstance(registries, Mapping) else registries
        self._settings: dict[str, models.RegistryConfig] = {}
        for config in configs or ():
            for name in (config.host, *config.aliases):
                self._settings[name] = config
        self._state = state
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._max_wait = max_wait
        self._transport = transport
        self._on_request = on_request
        self._hosts: dict[str, _Host] = {}
        self._tokens = auth.TokenCache()
        self._ahead: dict[tuple[str, str], asyncio.Task[list[str]]] = {}  # listing_ahead
        self.requests = 0  # every HTTP request sent, for benchmarks and status
        self.counts: collections.Counter[str] = collections.Counter()  # by kind

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for host in self._hosts.values():
            await host.http.aclose()

    # --- the API the engine uses ------------------------------------------------------

    async def list_tags(self, image: refs.ImageRef) -> list[str]:
        """Every tag of ``image``, each once, in ascending order (Python's string order, in
        which the distribution registry already sends them: sorting is then one pass).

        A list started ahead (:meth:`listing_ahead`) and not taken yet is taken (once)
        instead of asking again."""
        if (early := self._ahead.pop((image.host, image.repository), None)) is not None:
            return await early
        return await self._list_tags(image)

    @contextlib.asynccontextmanager
    async def listing_ahead(self) -> AsyncIterator[Callable[[Iterable[refs.ImageRef]], None]]:
        """A head start for lists that will be asked for soon (while the caller waits on
        something else, such as a git fetch): inside the block, ``start(images)`` lists
        their tags in the background, and the first :meth:`list_tags` of each takes that
        list. The lists not taken when the block ends are cancelled and dropped: none
        outlives the block, so no list is older than the work that asked for it."""
        mine: dict[tuple[str, str], asyncio.Task[list[str]]] = {}

        def start(images: Iterable[refs.ImageRef]) -> None:
            for image in images:
                key = (image.host, image.repository)
                if key not in self._ahead:  # another block's, not taken yet: theirs serves
                    mine[key] = self._ahead[key] = asyncio.create_task(self._list_tags(image))

        try:
            yield start
        finally:
            left = []
            for key, task in mine.items():
                if self._ahead.get(key) is task:  # not taken
                    del self._ahead[key]
                    task.cancel()
                    left.append(task)
            await asyncio.gather(*left, return_exceptions=True)  # each ended, none unread

    async def _list_tags(self, image: refs.ImageRef) -> list[str]:
        host = self._host(image.host)
        url: str | None = f"{host.base}/v2/{image.repository}/tags/list"
        if size := _page_size(host):
            url = f"{url}?n={size}"
        pages: list[list[str]] = []
        listed = 0  # tags in ``pages``, counting a repeated one again
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= _MAX_PAGES:
                raise RegistryError(f"registry {image.host}: pagination loop listing tags "
                                    f"of {image.repository}")
            seen.add(url)
            response = await self._request(image, "GET", url)
            pages.append(_tags_from(response, image))
            listed += len(pages[-1])
            if listed > host.settings.max_tags:  # repeats do not count: drop them, recount
                pages = [list(dict.fromkeys(itertools.chain.from_iterable(pages)))]
                listed = len(pages[0])
            if listed > host.settings.max_tags:  # a page is capped by its bytes
                raise RegistryLimitExceeded(
                    f"registry {image.host}, image {image.repository}: more than "
                    f"{host.settings.max_tags} tags (registries[].max_tags); not reading "
                    f"more")
            url = _next_page(response, image)
        tags = pages[0] if len(pages) == 1 else list(itertools.chain.from_iterable(pages))
        tags.sort()
        # sorted, repeats are neighbours: one comparison a tag tells whether any repeats
        if all(map(operator.lt, tags, itertools.islice(tags, 1, None))):
            return tags
        return list(dict.fromkeys(tags))

    async def digest(self, image: refs.ImageRef, tag: str) -> str:
        """The manifest digest of ``image:tag``, by HEAD (a GET would count as a pull)."""
        if tag.startswith("sha256:"):
            return tag
        url = f"{self._host(image.host).base}/v2/{image.repository}/manifests/{tag}"
        response = await self._request(image, "HEAD", url,
                                       headers={"Accept": MANIFEST_ACCEPT})
        digest = response.headers.get("Docker-Content-Digest")
        if not isinstance(digest, str) or not digest.startswith("sha"):
            # a registry that does not say: fetch once, hash, and keep it (by digest)
            data = await self._fetch_manifest(image, tag)
            digest = manifests.sha256(data)
            self._store(digest, "manifest", data)
        return digest

    async def image_info(self, image: refs.ImageRef, tag: str, *,
                         platform: str | None = None) -> ImageInfo:
        """Digest, creation time, labels and platforms of ``image:tag``.

        Costs one ``HEAD`` when the manifests and config are already in the state store;
        ``platform`` picks the image of an index (default linux/amd64, else the first).
        """
        digest = await self.digest(image, tag)
        top = await self._manifest(image, digest)
        chosen, platforms = top, tuple[str, ...]()
        if top.is_index:
            platforms = manifests.platforms(top)
            entry = manifests.resolve(top, platform)
            if entry is None:
                raise ImageNotFound(f"registry {image.host}, image {image.repository}:{tag}: "
                                    f"no {platform or 'usable'} image (it has "
                                    f"{', '.join(platforms) or 'none'})")
            chosen = await self._manifest(image, entry.digest)
        if chosen.is_index or chosen.config_digest is None:
            raise RegistryError(f"registry {image.host}, image {image.repository}:{tag}: "
                                f"an index inside an index is not supported")
        config = await self._config(image, chosen.config_digest)
        if not top.is_index:
            platforms = (config.platform,) if config.platform else ()
            if platform and config.platform and (manifests.normalise_platform(platform)
                                                 != manifests.normalise_platform(
                                                     config.platform)):
                raise ImageNotFound(f"registry {image.host}, image {image.repository}:{tag}: "
                                    f"no {platform} image (it has {config.platform})")
        return ImageInfo(digest, config.created, config.labels, platforms)

    def host_status(self) -> dict[str, dict[str, Any]]:
        """Rate-limit quota and pause of every host contacted (for status and reports)."""
        status = {}
        for name, host in self._hosts.items():
            quota = host.limits.quota
            status[name] = {
                "rate_limit": quota.limit if quota else None,
                "rate_limit_remaining": quota.remaining if quota else None,
                "paused_until": host.limits.paused_until_utc(),
                "pause_reason": host.limits.pause_reason or None,
            }
        return status

    # --- manifests and blobs, cached by digest ----------------------------------------

    async def _manifest(self, image: refs.ImageRef, digest: str) -> manifests.Manifest:
        return await self._immutable(image, digest, "manifest", manifests.parse,
                                     lambda: self._fetch_manifest(image, digest))

    async def _fetch_manifest(self, image: refs.ImageRef, reference: str) -> bytes:
        host = self._host(image.host)
        url = f"{host.base}/v2/{image.repository}/manifests/{reference}"
        response = await self._request(image, "GET", url, headers={"Accept": MANIFEST_ACCEPT},
                                       max_bytes=host.settings.max_manifest_bytes)
        kind = _content_type(response)
        if kind not in manifests.INDEX_TYPES | manifests.IMAGE_TYPES | {"application/json", ""}:
            raise RegistryError(f"registry {image.host}, image {image.repository}:{reference}: "
                                f"answered {_describe_type(kind)} instead of a manifest")
        _check_digest(response.content, reference, image)
        return response.content

    async def _config(self, image: refs.ImageRef, digest: str) -> manifests.Config:
        return await self._immutable(image, digest, "config", manifests.parse_config,
                                     lambda: self._fetch_blob(image, digest))

    async def _fetch_blob(self, image: refs.ImageRef, digest: str) -> bytes:
        url = f"{self._host(image.host).base}/v2/{image.repository}/blobs/{digest}"
        data = (await self._request(image, "GET", url)).content
        _check_digest(data, digest, image)
        return data

    async def _immutable(self, image: refs.ImageRef, digest: str, kind: str,
                         parse: Callable[[bytes], _Parsed],
                         fetch: Callable[[], Awaitable[bytes]]) -> _Parsed:
        """Content addressed by ``digest``: from the state store, else fetched and stored
        forever; parsed, with a parse failure reported against the registry and image."""
        data = self._cached(digest, kind)
        if data is None:
            data = await fetch()
            self._store(digest, kind, data)
        try:
            return parse(data)
        except manifests.InvalidManifest as exc:
            raise RegistryError(f"registry {image.host}, image {image.repository}@{digest}: "
                                f"{exc}") from None

    def _cached(self, digest: str, kind: str) -> bytes | None:
        return self._state.get_blob(digest, kind) if self._state else None

    def _store(self, digest: str, kind: str, data: bytes) -> None:
        if self._state:
            self._state.put_blob(digest, kind, data)

    # --- hosts --------------------------------------------------------------------------

    def _host(self, name: str) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = self._new_host(name)
        return host

    def _new_host(self, name: str) -> _Host:
        settings = self._settings.get(name) or models.RegistryConfig(host=name)
        quirk = quirks.for_host(settings.host)
        base = _base_url(settings, quirk)
        hooks = _Hooks(self, name)
        verify = _verify(settings)
        pool = httpx.Limits(max_connections=settings.concurrency + 4,
                            max_keepalive_connections=settings.concurrency + 4)
        http = httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=True, verify=verify, limits=pool,
            transport=self._transport or transport.Transport(verify=verify, limits=pool),
            event_hooks={"request": [hooks.request], "response": [hooks.response]})
        host_limits = limits.HostLimits(name, concurrency=settings.concurrency,
                                        rate=settings.rate_limit, burst=settings.burst)
        return _Host(name, settings, base, http, host_limits,
                     credentials.CredentialProvider(settings), quirk)

    # --- one request: retries, authorisation, limits ------------------------------------

    async def _request(self, image: refs.ImageRef, method: str, url: str,
                       headers: dict[str, str] | None = None, *,
                       max_bytes: int | None = None) -> httpx.Response:
        """One request, retried on temporary failures. The first attempt runs bare (nearly
        every request succeeds at once, and tenacity's bookkeeping costs about 0.1 ms a
        request); after a retryable failure tenacity runs the remaining attempts, waiting
        as it would have (:func:`_retry_delay`)."""
        try:
            return await self._authorized(image, method, url, dict(headers or {}), max_bytes)
        except RegistryUnavailable as exc:
            if self._attempts < 2 or not self._retryable(exc):
                raise
            await asyncio.sleep(_retry_delay(exc, 1, self._backoff))
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts - 1),
            wait=lambda state: _retry_delay(state.outcome.exception() if state.outcome
                                            else None, state.attempt_number + 1, self._backoff),
            retry=tenacity.retry_if_exception(self._retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._authorized(image, method, url, dict(headers or {}),
                                              max_bytes)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retryable(self, error: BaseException) -> bool:
        if not isinstance(error, RegistryUnavailable) or isinstance(error, _DeadlinePassed):
            return False
        return error.retry_after is None or error.retry_after <= self._max_wait

    async def _authorized(self, image: refs.ImageRef, method: str, url: str,
                          headers: dict[str, str], max_bytes: int | None) -> httpx.Response:
        host = self._host(image.host)
        await self._probe(host, image)
        scope = auth.pull_scope(image.repository)
        headers.update(await self._auth_headers(host, image, scope))
        response = await self._send(host, image, method, url, headers, max_bytes)
        if response.status_code == 401:
            response = await self._reauthorize(host, image, method, url, headers, response,
                                               max_bytes)
        _raise_for_status(response, image)
        return response

    async def _probe(self, host: _Host, image: refs.ImageRef) -> None:
        """``GET /v2/`` once per host to learn its challenge before the first real request."""
        if host.probed:
            return
        async with host.probe_lock:
            if host.probed:
                return
            response = await self._send(host, image, "GET", f"{host.base}/v2/", {}, None)
            if response.status_code == 429 or response.status_code >= 500:
                _raise_for_status(response, image)
            if response.status_code == 401:
                host.challenge = auth.parse_challenge(
                    response.headers.get("WWW-Authenticate", ""))
            host.probed = True

    async def _auth_headers(self, host: _Host, image: refs.ImageRef,
                            scope: str) -> dict[str, str]:
        challenge = host.challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = await host.credentials.get()
            return {"Authorization": creds.basic_header()} if creds else {}
        key = (challenge.realm, challenge.service, scope)
        token = self._tokens.get(key)
        if token is None:
            async with self._tokens.lock(key):  # one token request per scope
                token = self._tokens.get(key)
                if token is None:
                    fetched = await self._fetch_token(host, image, challenge, scope)
                    self._tokens.put(key, fetched.value, fetched.expires_in)
                    token = fetched.value
        return {"Authorization": f"Bearer {token}"}

    async def _fetch_token(self, host: _Host, image: refs.ImageRef,
                           challenge: auth.Challenge, scope: str) -> auth.Token:
        creds = await host.credentials.get()
        try:
            return await self._fetch_token_once(host, image, challenge, scope, creds)
        except AuthError:
            if creds is None:
                raise
            host.credentials.invalidate()  # expired or rotated: read the source once more
            fresh = await host.credentials.get()
            if fresh == creds:
                raise
            return await self._fetch_token_once(host, image, challenge, scope, fresh)

    async def _fetch_token_once(self, host: _Host, image: refs.ImageRef,
                                challenge: auth.Challenge, scope: str,
                                creds: auth.Credentials | None) -> auth.Token:
        # under the host's cap too: token and registry requests then interleave, instead of
        # a burst of token requests for every repository before the first tag list
        async with host.limits.slot(max_wait=self._max_wait), _deadline(
                host, image, lambda: f"a token from {auth.origin(challenge.realm)}"):
            return await auth.fetch_token(host.http, challenge, scope=scope,
                                          credentials=creds, host=image.host,
                                          max_bytes=host.settings.max_response_bytes)

    async def _reauthorize(self, host: _Host, image: refs.ImageRef, method: str, url: str,
                           headers: dict[str, str], refused: httpx.Response,
                           max_bytes: int | None) -> httpx.Response:
        """A 401: learn the challenge, or fetch fresh credentials and token; send once more."""
        challenge = auth.parse_challenge(refused.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            raise AuthError(f"registry {image.host}: 401 without a usable challenge for "
                            f"{image.repository}")
        scope = challenge.params.get("scope") or auth.pull_scope(image.repository)
        if headers.pop("Authorization", None):  # ours was refused: it expired or was revoked
            self._tokens.drop((challenge.realm, challenge.service, scope))
            host.credentials.invalidate()
        host.challenge = challenge
        fresh = await self._auth_headers(host, image, scope)
        if not fresh:
            hint = (host.credentials.why_none() if host.credentials.configured else
                    "configure a credentials source for this registry; see "
                    "docs/registries.md")
            raise AuthError(f"registry {image.host}: credentials required for "
                            f"{image.repository} ({hint})")
        response = await self._send(host, image, method, url, {**headers, **fresh}, max_bytes)
        if response.status_code == 401:
            who = ("the configured credentials" if await host.credentials.get() else
                   f"anonymous access ({host.credentials.why_none()})"
                   if host.credentials.configured else
                   "anonymous access (no credentials configured)")
            raise AuthError(f"registry {image.host}, image {image.repository}: access denied "
                            f"to {who} (HTTP 401; the repository may also not exist)")
        return response

    async def _send(self, host: _Host, image: refs.ImageRef, method: str, url: str,
                    headers: dict[str, str], max_bytes: int | None) -> httpx.Response:
        """One HTTP exchange, its whole body read within ``request_deadline`` and capped at
        ``max_bytes`` (default ``max_response_bytes``): a registry that drips or floods
        cannot hold a scan or fill memory."""
        limit = max_bytes or host.settings.max_response_bytes
        async with host.limits.slot(max_wait=self._max_wait):
            try:
                async with _deadline(host, image,
                                     lambda: f"{_kind(method, url)} {redact_url(url)}"):
                    response = await limits.read_capped(host.http, method, url, limit=limit,
                                                        headers=headers)
            except httpx.HTTPError as exc:
                self._record(method, url, 0, 0.0)
                raise RegistryUnavailable(
                    f"registry {image.host} unreachable while reading {image.repository}: "
                    f"{network.unreachable(exc)}") from exc
            except limits.TooLarge as exc:
                raise RegistryLimitExceeded(
                    f"registry {image.host}, image {image.repository}: {_kind(method, url)} "
                    f"answer larger than {limit} bytes ({exc}; registries[]."
                    f"{'max_manifest_bytes' if max_bytes else 'max_response_bytes'})") from None
        host.limits.observe(response.headers)
        wait = limits.retry_after(response.headers)
        if response.status_code == 429 and wait is not None:  # nobody sends until then
            host.limits.pause(wait, "HTTP 429 Too Many Requests")
        return response

    def _record(self, method: str, url: str, status: int, seconds: float) -> None:
        self.requests += 1
        self.counts[_kind(method, url)] += 1
        if self._on_request or _log.isEnabledFor(logging.DEBUG):
            shown = redact_url(url)
            _log.debug("%s %s → %s in %.3fs", method, shown, status or "no answer", seconds)
            if self._on_request:
                self._on_request(method, shown, status, seconds)


class _Hooks:
    """httpx event hooks: time, count and report every request (tokens and redirects too)."""

    def __init__(self, client: RegistryClient, host: str) -> None:
        self._client = client
        self._host = host

    async def request(self, request: httpx.Request) -> None:
        request.extensions[_START] = time.monotonic()

    async def response(self, response: httpx.Response) -> None:
        started = response.request.extensions.get(_START, time.monotonic())
        self._client._record(response.request.method, str(response.request.url),
                             response.status_code, time.monotonic() - started)


# --- deadlines and caps --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scan_deadline(seconds: float, *, repository: str) -> AsyncIterator[None]:
    """Bound the registry phase of one repository scan (``repositories[].registry_deadline``).

    Every registry request already has its own deadline; this bounds their sum, so a scan
    of many images on a slow registry ends with a :class:`RegistryUnavailable` (retried next
    cycle) instead of holding its repository's slot for the time of hundreds of requests.
    """
    async with _within(seconds, lambda: RegistryUnavailable(
            f"repository {repository}: registry requests took longer than "
            f"{seconds:g} s (repositories[].registry_deadline); the scan was abandoned and "
            f"runs again next cycle")):
        yield


@contextlib.asynccontextmanager
async def _deadline(host: _Host, image: refs.ImageRef,
                    what: Callable[[], str]) -> AsyncIterator[None]:
    """``what()`` names the request (called only when it timed out)."""
    seconds = host.settings.request_deadline
    async with _within(seconds, lambda: _DeadlinePassed(
            f"registry {image.host}, image {image.repository}: no complete answer to "
            f"{what()} "
            f"within {seconds:g} s (registries[].request_deadline)")):
        yield


@contextlib.asynccontextmanager
async def _within(seconds: float, error: Callable[[], Exception]) -> AsyncIterator[None]:
    """``error()`` when the block outlives ``seconds``; other timeouts pass through."""
    try:
        async with asyncio.timeout(seconds) as scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        raise error() from None


class _DeadlinePassed(RegistryUnavailable):
    """Not retried within the cycle: a registry that drips once likely drips again."""


# --- helpers ------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without user info and with every query value but harmless ones hidden
    (blob redirects carry signatures; token requests carry the account name)."""
    if "?" not in url and "@" not in url and "#" not in url:
        return url  # nothing to hide (a tag list, a manifest): as it is
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode([(k, v if k in _SAFE_QUERY_KEYS else "***")
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe=":/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _kind(method: str, url: str) -> str:
    path = urlsplit(url).path
    if path.rstrip("/") == "/v2":
        return "ping"
    if path.endswith("/tags/list"):
        return "tags"
    if "/manifests/" in path:
        return "manifest-head" if method == "HEAD" else "manifest"
    if "/blobs/" in path:
        return "blob"
    return "token" if "/v2/" not in path else "other"


def _base_url(settings: models.RegistryConfig, quirk: quirks.Quirks) -> str:
    scheme = "http" if settings.insecure else "https"
    if settings.mirror:
        return settings.mirror if "://" in settings.mirror else f"{scheme}://{settings.mirror}"
    return f"{scheme}://{quirk.api_host or settings.host}"


def _verify(settings: models.RegistryConfig) -> ssl.SSLContext | bool:
    if settings.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"registry {settings.host}: ca_bundle {settings.ca_bundle} is not "
                          f"a readable PEM file ({type(exc).__name__})") from None


def _page_size(host: _Host) -> int | None:
    size = host.settings.page_size or host.quirks.page_size
    if size and host.quirks.max_page_size:
        size = min(size, host.quirks.max_page_size)
    return size


def _next_page(response: httpx.Response, image: refs.ImageRef) -> str | None:
    link = response.links.get("next")
    if not link or not link.get("url"):
        return None
    url = urljoin(str(response.url), link["url"])
    if urlsplit(url).netloc != response.url.netloc.decode("ascii"):
        raise RegistryError(f"registry {image.host}: refusing a next-page link to "
                            f"another host ({urlsplit(url).netloc}) listing tags of "
                            f"{image.repository}")
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
        raise RegistryUnavailable(f"{where}: HTTP {status}",
                                  retry_after=limits.retry_after(response.headers))
    raise RegistryError(f"{where}: unexpected HTTP {status}{_error_code(response)}")


def _error_code(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        code = errors[0]["code"] if errors else ""
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        return ""
    return f" {code}" if isinstance(code, str) and code.isidentifier() else ""


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower())


def _describe_type(kind: str) -> str:
    return "an HTML page" if kind == "text/html" else f"Content-Type {kind or 'none'}"


def _check_digest(data: bytes, reference: str, image: refs.ImageRef) -> None:
    if ":" in reference and not manifests.verify(data, reference):
        raise RegistryError(f"registry {image.host}, image {image.repository}: content "
                            f"does not match its digest {reference}")


def _tags_from(response: httpx.Response, image: refs.ImageRef) -> list[str]:
    where = f"registry {image.host}: tag list of {image.repository}"
    if _content_type(response) == "text/html":
        raise RegistryError(f"{where} is an HTML page, not JSON")
    try:
        body: Any = response.json()
    except ValueError:
        raise RegistryError(f"{where} is not JSON "
                            f"({_describe_type(_content_type(response))})") from None
    tags = body.get("tags") if isinstance(body, dict) else None
    if tags is None and isinstance(body, dict) and "name" in body:
        return []  # a repository without tags answers "tags": null
    if not isinstance(tags, list):
        raise RegistryError(f"{where} has no 'tags' array")
    try:
        "".join(tags)  # every item a string: a third of the time of an isinstance each
    except TypeError:
        raise RegistryError(f"{where} has no 'tags' array of strings") from None
    return tags


def _retry_delay(error: BaseException | None, attempt: int, backoff: float) -> float:
    """How long to wait after failed attempt number ``attempt``: what the registry said
    (``Retry-After``), else exponential backoff (``backoff``, twice that, ... at most 30 s,
    as tenacity's ``wait_exponential``)."""
    if isinstance(error, RegistryUnavailable) and error.retry_after is not None:
        return error.retry_after
    return float(min(backoff * 2 ** (attempt - 1), _MAX_BACKOFF))
