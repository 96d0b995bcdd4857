"""Per-host request budget: token bucket, concurrency cap, pauses the registry asks for, and
the byte cap every answer is read under.

A pause comes from ``429`` + ``Retry-After`` or from a rate-limit header saying nothing is
left (Docker Hub's ``ratelimit-remaining: 0;w=21600``). While a host is paused nothing is
sent to it: short pauses are waited out, long ones fail fast with ``RegistryUnavailable``
carrying ``retry_after`` so the caller reports it and tries again next cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from image_bot.errors import RegistryUnavailable
from image_bot.registry import transport


class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # waiters are served in order
            while True:
                now = self._clock()
                self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)


@dataclass(frozen=True, slots=True)
class Quota:
    """What a registry said about its rate limit (Docker Hub's ``ratelimit-*`` headers)."""

    limit: int | None
    remaining: int
    window: float | None  # seconds


def quota_from(headers: Mapping[str, str]) -> Quota | None:
    remaining = headers.get("ratelimit-remaining")
    if remaining is None:
        return None
    value, window = _count_and_window(remaining)
    if value is None:
        return None
    limit = _count_and_window(headers.get("ratelimit-limit", ""))[0]
    return Quota(limit, value, window)


def _count_and_window(text: str) -> tuple[int | None, float | None]:
    """``"76;w=21600"`` → (76, 21600.0)."""
    count, *params = (part.strip() for part in text.split(";"))
    window = None
    for param in params:
        key, _, value = param.partition("=")
        if key == "w" and value.isdigit():
            window = float(value)
    return (int(count) if count.isdigit() else None), window


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from ``Retry-After`` (delta seconds or an HTTP date), or None."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HostLimits:
    """The budget of one registry host, shared by every request to it."""

    def __init__(self, host: str, *, concurrency: int, rate: float | None,
                 burst: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self._semaphore = asyncio.Semaphore(concurrency)
        self._bucket = (TokenBucket(rate, burst or max(1, int(rate)), clock=clock)
                        if rate else None)
        self._clock = clock
        self._paused_until = 0.0
        self.pause_reason = ""
        self.quota: Quota | None = None

    @contextlib.asynccontextmanager
    async def slot(self, *, max_wait: float) -> AsyncIterator[None]:
        """Wait for a pause to end (or fail fast), the bucket and a free connection."""
        await self._wait_pause(max_wait)
        async with self._semaphore:
            if self._bucket:
                await self._bucket.acquire()
            yield

    def pause(self, seconds: float, reason: str) -> None:
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until, self.pause_reason = until, reason

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def paused_until_utc(self) -> str | None:
        if self.paused_for <= 0:
            return None
        at = datetime.now(UTC).timestamp() + self.paused_for
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the rate-limit headers of an answer; pause the host when nothing is left."""
        quota = quota_from(headers)
        if quota is None:
            return
        self.quota = quota
        if quota.remaining <= 0:
            wait = retry_after(headers) or quota.window or 60.0
            limit = f"{quota.limit} " if quota.limit is not None else ""
            self.pause(wait, f"rate limit of {limit}requests used up")

    async def _wait_pause(self, max_wait: float) -> None:
        wait = self.paused_for
        if wait <= 0:
            return
        if wait > max_wait:
            raise RegistryUnavailable(
                f"registry {self.host}: {self.pause_reason}; not querying it until "
                f"{self.paused_until_utc()}", retry_after=wait)
        await asyncio.sleep(wait)


class TooLarge(Exception):
    """An answer went past its byte cap (the message says how we know)."""


_DROPPED_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


async def read_capped(http: httpx.AsyncClient, method: str, url: str, *, limit: int,
                      **options: Any) -> httpx.Response:
    """The answer with its body read, never more than ``limit`` bytes once decoded (so a
    gzip bomb counts at its real size); ``options`` go to ``httpx.AsyncClient.build_request``,
    the request is sent by :func:`transport.send`."""
    streamed = await transport.send(http, http.build_request(method, url, **options))
    try:
        declared = streamed.headers.get("Content-Length", "")
        if method != "HEAD" and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"Content-Length {declared}")
        if declared.isdigit() and "Content-Encoding" not in streamed.headers:
            # the body is exactly the bytes declared (HTTP/1.1 framing reads no more) and
            # not decoded into more: the answer as it came, read in one piece
            await streamed.aread()
            return streamed
        body = bytearray()
        async for chunk in streamed.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise TooLarge("it kept sending")
    finally:
        await streamed.aclose()
    # the body is decoded already: a fresh response without the transfer headers
    kept = [(k, v) for k, v in streamed.headers.multi_items()
            if k.lower() not in _DROPPED_HEADERS]
    return httpx.Response(streamed.status_code, headers=kept, content=bytes(body),
                          request=streamed.request)
