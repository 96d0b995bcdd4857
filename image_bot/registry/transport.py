"""The HTTP transport of the registry client: httpx's own, over httpcore's connection pool,
with one change in how the pool asks whether an idle connection was closed by the server.

Before it hands out a kept-alive connection, and again when an answer has been read,
httpcore's pool asks every pooled connection whether its socket is readable (an idle socket
that is readable is one the server closed). Through the default anyio stream each question
builds anyio's table of socket attributes (a dict of lambdas and a ``getpeername`` system
call) to find the socket: ~16 µs, up to ~24 times per request with a dozen pooled
connections (bench/fleet_memory.py measured 13 % of a fleet's CPU there). :class:`_Stream`
keeps the socket it was opened on and answers with one ``poll``; reading, writing and TLS
stay anyio's.

httpx has no parameter for a network backend yet (encode/httpx#3749 adds one); until it
does, :class:`Transport` builds httpx's transport and gives it a pool with this backend,
made with the same settings. ``tests/registry/test_transport.py`` fails if a new httpx
stops sending requests through it.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


class Transport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport(verify=…, limits=…)`` with :class:`Backend` as its pool's
    network backend."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True,
                 limits: httpx.Limits | None = None,
                 backend: Backend | None = None) -> None:
        limits = limits or httpx.Limits()  # httpx's defaults
        context = httpx.create_ssl_context(verify=verify)
        super().__init__(verify=context, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=backend or Backend())


class Backend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, its streams wrapped in :class:`_Stream`."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(host, port, timeout=timeout,
                                                     local_address=local_address,
                                                     socket_options=socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """An anyio stream that knows its socket (TLS runs over the same one)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream,
                 sock: socket.socket | None = None) -> None:
        self._inner = inner
        self._socket: socket.socket | None = sock or inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout=timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout=timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        wrapped = await self._inner.start_tls(ssl_context, server_hostname=server_hostname,
                                              timeout=timeout)
        return _Stream(wrapped, self._socket)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or the end a closed connection sends);
    a socket already closed counts as readable, as httpcore's own check has it."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))
