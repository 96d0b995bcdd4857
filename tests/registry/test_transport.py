"""The registry client's transport: every request goes through its network backend, an idle
connection the server closed is noticed and never reused (what httpcore's own readability
check is for), redirects are followed as httpx follows them and network failures are httpx's
errors. Real sockets on loopback: the distribution registry, and small asyncio servers (one
closes a kept-alive connection when told to, others redirect, record, stay silent or hang
up)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import sniffio

import devservers
from image_bot import refs
from image_bot.config import models
from image_bot.registry import client as registry_client
from image_bot.registry import network, transport


class _Recording(transport.Backend):
    def __init__(self) -> None:
        super().__init__()
        self.streams: list[httpcore.AsyncNetworkStream] = []

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        stream = await super().connect_tcp(*args, **kwargs)
        self.streams.append(stream)
        return stream


async def _until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.005)


async def _serve(close_first: asyncio.Event) -> asyncio.Server:
    """Answers ``GET /v2/`` with ``{}``, keeping connections alive; the first connection is
    closed by the server once ``close_first`` is set."""
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        reading: asyncio.Future[bytes] | None = None
        try:
            while True:
                reading = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
                waits = {reading, asyncio.ensure_future(close_first.wait())} if first \
                    else {reading}
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if reading not in done:
                    return  # told to close this idle connection
                assert reading.result().startswith(b"GET /v2/ HTTP/1.1"), reading.result()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except asyncio.IncompleteReadError:
            return  # the client closed it
        finally:
            if reading is not None:  # the loop is closing: no read left behind
                if reading.done() and not reading.cancelled():
                    reading.exception()  # the client's close, seen too late: retrieved
                reading.cancel()
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def go() -> None:
        close_first = asyncio.Event()
        server = await _serve(close_first)
        port = server.sockets[0].getsockname()[1]
        backend = _Recording()
        lean = transport.Transport(backend=backend)
        async with server, httpx.AsyncClient(transport=lean) as http:
            url = f"http://127.0.0.1:{port}/v2/"
            assert (await http.get(url)).json() == {}
            assert (await http.get(url)).json() == {}  # kept alive: the same connection
            assert len(backend.streams) == 1
            first = backend.streams[0]
            assert first.get_extra_info("is_readable") is False  # idle and open
            close_first.set()
            await _until(lambda: first.get_extra_info("is_readable") is True,
                         "the server's close seen on the idle connection")
            assert (await http.get(url)).json() == {}  # not sent into the closed one
            assert len(backend.streams) == 2

    asyncio.run(go())


def test_registry_requests_go_through_the_backend(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """If a new httpx stopped sending through the pool :class:`transport.Transport` gives
    it, no connection would be counted here."""
    server = devservers.start_registry(tmp_path / "registry")
    try:
        with httpx.Client(timeout=30) as http:
            for name in ("team/a", "team/b"):
                devservers.push_image(server.url, name, "1.0.0", http=http)
        opened: list[str] = []
        connect = transport.Backend.connect_tcp

        async def counting(self: transport.Backend, host: str, port: int,
                           **options: Any) -> httpcore.AsyncNetworkStream:
            opened.append(f"{host}:{port}")
            return await connect(self, host, port, **options)

        monkeypatch.setattr(transport.Backend, "connect_tcp", counting)

        async def tags() -> list[list[str]]:
            config = models.RegistryConfig(host=server.host, insecure=True)
            async with registry_client.RegistryClient([config]) as client:
                assert sniffio.current_async_library_cvar.get() == "asyncio"
                listed = [await client.list_tags(refs.parse(f"{server.host}/{name}"))
                          for name in ("team/a", "team/b")]
            assert sniffio.current_async_library_cvar.get() is None  # declared only inside
            return listed

        assert asyncio.run(tags()) == [["1.0.0"], ["1.0.0"]]
        assert opened == [server.host]  # the ping and both lists over one kept-alive socket
    finally:
        server.stop()


def test_requests_arriving_together_each_get_their_own_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """httpcore's own pool promises one free connection to every request waiting at that
    moment; all but one then go round the pool again. Here each request is assigned once
    (entering the pool) and the pool is asked again only when an answer is closed."""
    rounds: list[int] = []

    class Counting(transport.Pool):
        def _assign_requests_to_connections(self) -> list[Any]:
            rounds.append(1)
            return super()._assign_requests_to_connections()

    monkeypatch.setattr(transport, "Pool", Counting)

    async def go() -> None:
        server = await _serve(asyncio.Event())
        port = server.sockets[0].getsockname()[1]
        backend = _Recording()
        pool = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        async with server, httpx.AsyncClient(
                transport=transport.Transport(backend=backend, limits=pool)) as http:
            url = f"http://127.0.0.1:{port}/v2/"
            for _ in range(3):  # 24 at once; later rounds over the kept-alive connections
                answers = await asyncio.gather(*(http.get(url) for _ in range(24)))
                assert [a.json() for a in answers] == [{}] * 24
            assert len(backend.streams) == 4

    asyncio.run(go())
    assert len(rounds) == 2 * 3 * 24


def test_the_tls_context_is_made_at_the_first_https_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the CA certificates costs ~25 ms: a registry on plain HTTP never pays it, and
    a registry on HTTPS pays it once, for a context that verifies certificates."""
    made: list[Any] = []
    real = httpx.create_ssl_context

    def recording(**options: Any) -> Any:
        made.append(options)
        return real(**options)

    monkeypatch.setattr(httpx, "create_ssl_context", recording)

    async def plain_http() -> None:
        server = await _serve(asyncio.Event())
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=transport.Transport()) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/v2/")).json() == {}

    asyncio.run(plain_http())
    assert made == []

    pool = transport.Pool(verify=True)
    for _ in range(2):  # created, not connected
        pool.create_connection(httpcore.Origin(b"https", b"registry.example", 443))
    assert made == [{"verify": True}]
    assert pool._ssl_context is not None
    assert pool._ssl_context.verify_mode == ssl.CERT_REQUIRED
    given = ssl.create_default_context()
    assert transport.Pool(verify=given)._ssl_context is given  # a ca_bundle's, as it is


async def _http_server(answer: Callable[[str, dict[str, str]], bytes],
                       seen: list[tuple[str, dict[str, str]]]) -> asyncio.Server:
    """A keep-alive HTTP/1.1 server: each request (its line, its headers) is recorded in
    ``seen`` and answered with ``answer(line, headers)``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *fields = head.strip().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in
                           (f.partition(":") for f in fields)}
                seen.append((line, headers))
                writer.write(answer(line, headers))
                await writer.drain()
        except asyncio.IncompleteReadError:
            return  # the client closed the connection
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _answer(status: str, body: bytes = b"", **headers: str) -> bytes:
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_a_redirect_is_followed_as_httpx_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that redirects a tag list elsewhere (another origin: a CDN, storage): the
    answer comes from there, the registry's ``Authorization`` is not sent there, and both
    requests are counted and reported (the event hooks run for each)."""
    monkeypatch.setenv("REDIRECT_TEST_PASSWORD", "s3cret")
    registry_seen: list[tuple[str, dict[str, str]]] = []
    storage_seen: list[tuple[str, dict[str, str]]] = []
    storage_port = 0

    def registry(line: str, headers: dict[str, str]) -> bytes:
        if "authorization" not in headers:
            return _answer("401 Unauthorized", WWW_Authenticate='Basic realm="test"')
        if line.startswith("GET /v2/team/app/tags/list"):
            return _answer("307 Temporary Redirect",
                           Location=f"http://localhost:{storage_port}/listing?sig=1")
        return _answer("200 OK", b"{}")

    def storage(line: str, headers: dict[str, str]) -> bytes:
        return _answer("200 OK", b'{"name": "team/app", "tags": ["1.1.0", "1.0.0"]}',
                       Content_Type="application/json")

    async def go() -> list[str]:
        nonlocal storage_port
        first = await _http_server(registry, registry_seen)
        second = await _http_server(storage, storage_seen)
        storage_port = second.sockets[0].getsockname()[1]
        host = f"127.0.0.1:{first.sockets[0].getsockname()[1]}"
        reported: list[tuple[str, str, int]] = []
        config = models.RegistryConfig(host=host, insecure=True, username="robot",
                                       password_env="REDIRECT_TEST_PASSWORD")
        async with first, second, registry_client.RegistryClient(
                [config], on_request=lambda m, u, s, _: reported.append((m, u, s))) as client:
            tags = await client.list_tags(refs.parse(f"{host}/team/app"))
        assert reported == [
            ("GET", f"http://{host}/v2/", 401),
            ("GET", f"http://{host}/v2/team/app/tags/list", 307),
            ("GET", f"http://localhost:{storage_port}/listing?sig=***", 200)]
        return tags

    assert asyncio.run(go()) == ["1.0.0", "1.1.0"]
    assert [line for line, _ in registry_seen] == [
        "GET /v2/ HTTP/1.1", "GET /v2/team/app/tags/list HTTP/1.1"]
    assert registry_seen[1][1]["authorization"].startswith("Basic ")
    assert [line for line, _ in storage_seen] == ["GET /listing?sig=1 HTTP/1.1"]
    assert "authorization" not in storage_seen[0][1]  # not the registry's secret


def test_network_failures_are_httpx_errors_with_their_cause() -> None:
    """The backend's failures become httpcore's, then httpx's, exceptions, the cause
    chained (what ``network.unreachable`` reads): a refused connection, a server that
    never answers (read timeout), one that closes without an answer."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def go() -> None:
        unused = devservers.free_port()
        mute = await asyncio.start_server(silent, "127.0.0.1", 0)
        rude = await asyncio.start_server(closing, "127.0.0.1", 0)
        async with mute, rude, httpx.AsyncClient(transport=transport.Transport(),
                                                 timeout=0.3) as http:
            with pytest.raises(httpx.ConnectError) as refused:
                await http.get(f"http://127.0.0.1:{unused}/v2/")
            assert network.unreachable(refused.value) == "connection refused"
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"http://127.0.0.1:{mute.sockets[0].getsockname()[1]}/v2/")
            with pytest.raises(httpx.RemoteProtocolError):  # h11: closed without an answer
                await http.get(f"http://127.0.0.1:{rude.sockets[0].getsockname()[1]}/v2/")

    asyncio.run(go())
