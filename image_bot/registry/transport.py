"""The HTTP transport of the registry client: httpx's own, over httpcore's connection pool,
with three changes: the pool's connections are asyncio streams (:class:`Backend`), the pool
asks cheaply whether an idle connection was closed by the server, and it hands free
connections to waiting requests one each (:class:`Pool`).

httpcore's default network backend goes through anyio: a cancel scope per read and write on
top of asyncio's own timeout, and a table of socket attributes (a dict of lambdas and a
``getpeername`` system call) built each time the pool asks whether a pooled connection is
readable (an idle socket that is readable is one the server closed): ~16 µs, up to ~24
times per request with a dozen pooled connections (bench/fleet_memory.py measured 13 % of a
fleet's CPU there). :class:`Backend` uses asyncio's streams and timeouts directly, and its
streams answer from what asyncio saw (the end of the stream) and one ``poll``.

httpx has no parameter for a network backend yet (encode/httpx#3749 adds one); until it
does, :class:`Transport` builds httpx's transport and gives it a pool with this backend,
made with the same settings. ``tests/registry/test_transport.py`` fails if a new httpx
stops sending requests through it.

:func:`send` is ``AsyncClient.send(request, stream=True)`` for the registry's clients, which
use no auth flow (the registry client writes its own ``Authorization``) and no cookie jar:
the event hooks, the transport, and redirects followed by httpx itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx


async def send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """``client.send(request, stream=True)`` without the layers a registry client does not
    use: no auth flow (``auth`` is never set: the registry client writes its own header), no
    cookie jar, no per-request log record. httpx's pipeline around the transport (an auth
    generator, the redirect loop, a response stream bound to a timer, the cookie jar) cost
    ~0.13 ms a request, a seventh of the client's CPU for a tag list (200 ``tags/list`` on
    loopback: 174 → 148 ms). The event
    hooks run as in httpx; a redirect is handed to httpx's own redirect handling (its
    checks: scheme, cross-origin ``Authorization`` dropped, method on 303, the redirect
    cap), its body left unread (never read past a cap). The answer's body is not read yet:
    close it (``aclose``) when done."""
    for hook in client.event_hooks["request"]:
        await hook(request)
    response = await client._transport_for_url(request.url).handle_async_request(request)
    response.request = request
    try:
        for hook in client.event_hooks["response"]:
            await hook(response)
        if client.follow_redirects and response.has_redirect_location:
            following = client._build_redirect_request(request, response)
            await response.aclose()
            return await client.send(following, stream=True)
    except BaseException:
        await response.aclose()
        raise
    return response


class Transport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport(verify=…, limits=…)`` with :class:`Backend` as its pool's
    network backend."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True,
                 limits: httpx.Limits | None = None,
                 backend: Backend | None = None) -> None:
        limits = limits or httpx.Limits()  # httpx's defaults
        # the parent's pool is replaced below and never connects: a bare TLS context spares
        # it loading the CA certificates (~25 ms)
        super().__init__(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), limits=limits)
        self._pool = Pool(
            verify=verify, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=backend or Backend())


class Pool(httpcore.AsyncConnectionPool):
    """httpcore's pool (HTTP/1.1), except that a free connection goes to one waiting request.

    httpcore hands each waiting request the first connection that is free, and a connection
    stays free until its request starts on it: requests that arrive together (a scan's
    ``gather``) are all given the same one, all but one find it busy, and each goes round
    the pool again (bench/fleet_memory.py: 1.4 extra rounds a request, ~10 % of the
    client's CPU). Here a connection promised to a request that has not started yet is not
    offered again. Closed and expired connections leave the pool as in httpcore, and idle
    ones beyond ``max_keepalive_connections`` (httpcore counts every connection there);
    HTTP/2 (several requests a connection) is not enabled on this pool.

    ``verify`` (httpx's meaning) becomes a TLS context at the first ``https`` connection:
    loading the CA certificates costs ~25 ms, which a registry on plain HTTP never needs.
    """

    def __init__(self, *, verify: ssl.SSLContext | bool = True, **options: Any) -> None:
        super().__init__(ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
                         **options)
        self._verify = verify

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        if self._ssl_context is None and origin.scheme == b"https":
            self._ssl_context = httpx.create_ssl_context(verify=self._verify)
        return super().create_connection(origin)

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing = []
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired():
                self._connections.remove(connection)
                closing.append(connection)
        idle = [c for c in self._connections if c.is_idle()]
        for connection in idle[self._max_keepalive_connections:]:  # kept alive: the first
            self._connections.remove(connection)
            closing.append(connection)
        promised = {id(r.connection) for r in self._requests if r.connection is not None}
        for waiting in self._requests:
            if waiting.connection is not None:
                continue
            origin = waiting.request.url.origin
            free = [c for c in self._connections if id(c) not in promised
                    and c.can_handle_request(origin) and c.is_available()]
            if free:
                connection = free[0]
            else:
                if len(self._connections) >= self._max_connections:
                    spare = [c for c in self._connections
                             if id(c) not in promised and c.is_idle()]
                    if not spare:
                        continue  # waits for a connection to come back
                    self._connections.remove(spare[0])  # idle, to another origin
                    closing.append(spare[0])
                connection = self.create_connection(origin)
                self._connections.append(connection)
            promised.add(id(connection))
            waiting.assign_to_connection(connection)
        return closing


class Backend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend over asyncio's own streams.

    httpcore's default backend goes through anyio, which wraps every read and write in a
    cancel scope of its own (for the timeout) on top of asyncio's: ~0.05 ms of a request's
    CPU (200 ``tags/list`` on loopback: 148 → 137 ms). Here a timeout is
    ``asyncio.timeout`` and a connection an ``asyncio.StreamReader``/``StreamWriter``;
    failures become httpcore's exceptions as in its anyio backend (``ConnectError``,
    ``ReadTimeout``…, the cause chained), which httpx maps to its own. The registry client
    runs on asyncio only (see ``RegistryClient.__aenter__``)."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=_READ_LIMIT, happy_eyeballs_delay=_HAPPY_EYEBALLS,
                    local_addr=(local_address, 0) if local_address else None)
        return _Stream.opened(reader, writer, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=_READ_LIMIT)
        return _Stream.opened(reader, writer, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_READ_LIMIT = 2 ** 16  # asyncio's buffer of one connection (httpcore reads 64 KiB at most)
_HAPPY_EYEBALLS = 0.25  # seconds before trying a host's next address, as anyio does


@contextlib.contextmanager
def _mapped(timeout: type[Exception], failure: type[Exception]) -> Iterator[None]:
    """asyncio's timeout and socket errors (TLS errors are ``OSError`` too) as httpcore's."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except OSError as exc:
        raise failure(str(exc) or type(exc).__name__) from exc


class _Stream(httpcore.AsyncNetworkStream):
    """One connection: asyncio's reader and writer, and the socket under them (TLS runs
    over the same one)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._socket: socket.socket | None = writer.get_extra_info("socket")

    @classmethod
    def opened(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               socket_options: Iterable[Any] | None) -> _Stream:
        stream = cls(reader, writer)
        try:
            for option in socket_options or ():
                writer.get_extra_info("socket").setsockopt(*option)
        except OSError as exc:
            writer.transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        return stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()

    async def aclose(self) -> None:
        # at once, without TLS's close_notify exchange (as httpcore's anyio streams close)
        self._writer.transport.abort()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException:
            await self.aclose()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asyncio reads as data comes: its end is seen there
            return (self._reader.at_eof() or self._reader.exception() is not None
                    or self._writer.transport.is_closing() or _readable(self._socket))
        if info in ("ssl_object", "socket"):
            return self._writer.get_extra_info(info)
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        return None


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or the end a closed connection sends);
    a socket already closed counts as readable, as httpcore's own check has it."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))
