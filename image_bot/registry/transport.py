"""The HTTP transport of the registry client: HTTP/1.1 with h11 over asyncio's streams, and
a pool of kept-alive connections (:class:`Transport`); :func:`send` sends through it.

httpx's own transport goes through httpcore: its connection pool (a lock and a shielded
cancel scope per request, every pooled connection asked whether it is readable each time a
request is assigned), its anyio network backend (a cancel scope per read and write on top
of asyncio's timeout) and a request and response model of its own, converted from and to
httpx's. For a tag list on loopback that was ~0.7 ms of the client's CPU (200 lists:
~160 ms, a third of a ``run --once``'s main thread), after four passes of trimming it;
h11, the HTTP/1.1 state machine httpcore itself uses, over asyncio's streams, does the same
exchange for ~0.25 ms. The registry client needs no more than this transport does: GET and
HEAD (a token ``POST`` with a form), HTTP/1.1, TLS, connections kept alive and bounded, a
timeout per phase; httpx still builds the requests and responses, decodes bodies, follows
redirects and runs the event hooks (see :func:`send`). No proxy: httpx reads none from the
environment for a client given a transport, which this client always is.

Failures are httpx's exceptions, as httpx's transport raises them, with their cause chained
(what ``network.unreachable`` reads): ``ConnectError``/``ConnectTimeout``, ``ReadError``/
``ReadTimeout``, ``WriteError``/``WriteTimeout``, ``PoolTimeout``, ``RemoteProtocolError``
(a garbled answer, or none before the server closed), ``LocalProtocolError`` (a request
h11 refuses to send), ``UnsupportedProtocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator

import h11
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


_Origin = tuple[str, str, int]  # scheme, host, port
_PORTS = {"http": 80, "https": 443}
_READ_LIMIT = 2 ** 16  # bytes asked of a connection at once (as httpcore reads)
_MAX_HEAD = 100 * 1024  # bytes of an answer's head at most (as httpcore has it)
_HAPPY_EYEBALLS = 0.25  # seconds before trying a host's next address, as anyio does


class Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio's streams, h11 reading and writing each exchange.

    ``limits``: at most ``max_connections`` open (in use and idle: an idle one is closed to
    open one to another origin), ``max_keepalive_connections`` idle, each idle at most
    ``keepalive_expiry`` seconds; a request waits for a free one (the ``pool`` timeout). An
    idle connection is reused only if the server has not closed it meanwhile (asyncio saw
    its end, or a ``poll`` finds it readable: an idle connection never is otherwise), the
    most recently used first. ``verify`` (httpx's meaning) becomes a TLS context at the
    first ``https`` connection: loading the CA certificates costs ~25 ms, which a registry
    on plain HTTP never needs."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True,
                 limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits()  # httpx's defaults
        self._verify = verify
        self._tls: ssl.SSLContext | None = verify if isinstance(verify, ssl.SSLContext) \
            else None
        self._most = limits.max_connections
        self._room = asyncio.Semaphore(self._most) if self._most else None
        self._keep = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._idle: dict[_Origin, list[_Connection]] = {}  # the most recent last
        self._open = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        await self._enter(timeouts.get("pool"))
        try:
            connection = self._reuse(origin) or await self._connect(
                origin, timeouts.get("connect"))
        except BaseException:
            self._leave(None)
            raise
        try:
            head = await connection.exchange(request, timeouts.get("read"),
                                             timeouts.get("write"))
        except BaseException:
            self._leave(connection)
            raise
        return httpx.Response(
            head.status_code, headers=head.headers.raw_items(),  # names as sent
            stream=_Body(self, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/" + head.http_version,
                        "reason_phrase": head.reason})

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                self._close(connection)
        self._idle.clear()

    async def _enter(self, timeout: float | None) -> None:
        if self._room is None:
            return
        if not self._room.locked():  # free now: taken without waiting (nor a timer)
            await self._room.acquire()
            return
        try:
            async with asyncio.timeout(timeout):
                await self._room.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no connection free in time") from exc

    def _leave(self, connection: _Connection | None, *, reusable: bool = False) -> None:
        """The end of a request: its connection kept idle (``reusable``: its exchange ended
        cleanly, the server keeps it open) or closed."""
        if connection is not None:
            if reusable and (self._keep is None
                             or sum(map(len, self._idle.values())) < self._keep):
                connection.since = time.monotonic()
                self._idle.setdefault(connection.origin, []).append(connection)
            else:
                self._close(connection)
        if self._room is not None:
            self._room.release()

    def _reuse(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if (self._expiry is None or now - connection.since <= self._expiry) \
                    and connection.usable():
                return connection
            self._close(connection)
        return None

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._context() if scheme == "https" else None
        if self._most is not None and self._open >= self._most:
            self._close_oldest_idle()  # one is idle: at most ``_most`` are in use
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None,
                    limit=_READ_LIMIT, happy_eyeballs_delay=_HAPPY_EYEBALLS)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:  # TLS errors too
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._open += 1
        return _Connection(origin, reader, writer)

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = httpx.create_ssl_context(verify=self._verify)
        return self._tls

    def _close_oldest_idle(self) -> None:
        oldest = min((idle[0] for idle in self._idle.values() if idle),
                     key=lambda c: c.since, default=None)
        if oldest is not None:
            self._idle[oldest.origin].remove(oldest)
            self._close(oldest)

    def _close(self, connection: _Connection) -> None:
        # at once, without TLS's close_notify exchange (as httpcore's streams close)
        connection.writer.transport.abort()
        self._open -= 1


def _origin(url: httpx.URL) -> _Origin:
    port = _PORTS.get(url.scheme)
    if port is None or not url.host:
        raise httpx.UnsupportedProtocol(f"cannot send {url.scheme or 'a relative'} URL "
                                        f"{url} (http and https only)")
    return url.scheme, url.host, url.port or port


class _Connection:
    """One kept-alive connection: asyncio's reader and writer, and h11's state of it."""

    __slots__ = ("h11", "origin", "reader", "since", "socket", "writer")

    def __init__(self, origin: _Origin, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.origin, self.reader, self.writer = origin, reader, writer
        self.socket: socket.socket | None = writer.get_extra_info("socket")
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self.since = 0.0  # when it became idle

    def usable(self) -> bool:
        """Idle and still open: the server has not closed it (asyncio read its end, or a
        read would return at once: data or the end, which an idle connection only gets when
        the server closed it)."""
        return not (self.reader.at_eof() or self.reader.exception() is not None
                    or self.writer.transport.is_closing() or _readable(self.socket))

    async def exchange(self, request: httpx.Request, read: float | None,
                       write: float | None) -> h11.Response:
        """Send ``request`` and read the head of its answer (interim ``1xx`` skipped)."""
        body = await request.aread()
        with _protocol():
            data = self.h11.send(h11.Request(method=request.method,
                                             target=request.url.raw_path,
                                             headers=request.headers.raw))
            if body:
                data += self.h11.send(h11.Data(data=body))
            data += self.h11.send(h11.EndOfMessage())
        assert data is not None
        self.writer.write(data)
        try:
            if self.writer.transport.get_write_buffer_size():  # not all sent at once
                async with asyncio.timeout(write):
                    await self.writer.drain()
            else:
                await self.writer.drain()  # at once (it raises what the write met)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        while True:
            event = await self.next_event(read)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise httpx.RemoteProtocolError("Server disconnected without sending a "
                                                "response.")

    async def next_event(self, read: float | None) -> h11.Event | type[h11.PAUSED]:
        while True:
            with _protocol():
                event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]  # not NEED_DATA, as checked
            try:
                async with asyncio.timeout(read):
                    data = await self.reader.read(_READ_LIMIT)
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or "timed out") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            with _protocol():
                self.h11.receive_data(data)  # b"": the server closed it


@contextlib.contextmanager
def _protocol() -> Iterator[None]:
    """h11's protocol errors as httpx's: ours (a header it refuses to send), or the
    server's (an answer that is not HTTP/1.1)."""
    try:
        yield
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc)) from exc
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc


class _Body(httpx.AsyncByteStream):
    """An answer's body, read from its connection as httpx asks; closing it ends the
    request (the connection kept if the answer was read to its end and the server keeps it
    open, else closed)."""

    def __init__(self, transport: Transport, connection: _Connection,
                 read: float | None) -> None:
        self._transport, self._connection, self._read = transport, connection, read
        self._ended = self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._ended:
            event = await self._connection.next_event(self._read)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._ended = True
            else:
                raise httpx.RemoteProtocolError("the server closed the connection in the "
                                                "middle of an answer")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        state = self._connection.h11
        reusable = self._ended and state.our_state is h11.DONE \
            and state.their_state is h11.DONE
        if reusable:
            state.start_next_cycle()
        self._transport._leave(self._connection, reusable=reusable)


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or the end a closed connection sends);
    a socket already closed counts as readable, as httpcore's own check has it."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))
