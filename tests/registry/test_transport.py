"""The registry client's transport (HTTP/1.1 with h11 over asyncio's streams): every request
goes through it, connections are kept alive and bounded, an idle connection the server
closed is noticed and never reused, bodies are framed and decoded as httpx would (chunked,
gzip, HEAD, interim answers), redirects are followed as httpx follows them and failures are
httpx's errors. Real sockets on loopback: the distribution registry, and small asyncio
servers (one closes a kept-alive connection when told to, others redirect, record, stay
silent, hang up or answer garbage)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import devservers
from image_bot import refs
from image_bot.config import models
from image_bot.registry import client as registry_client
from image_bot.registry import network, transport


async def _until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.005)


async def _serve(close_first: asyncio.Event, accepted: list[str] | None = None
                 ) -> asyncio.Server:
    """Answers ``GET /v2/`` with ``{}``, keeping connections alive; the first connection is
    closed by the server once ``close_first`` is set. ``accepted`` gets "open" for each
    connection and "closed" when the server closed one."""
    connections = 0
    accepted = [] if accepted is None else accepted

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        accepted.append("open")
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
                    writer.close()
                    await writer.wait_closed()
                    accepted.append("closed")
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
        accepted: list[str] = []
        server = await _serve(close_first, accepted)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=transport.Transport()) as http:
            url = f"http://127.0.0.1:{port}/v2/"
            assert (await http.get(url)).json() == {}
            assert (await http.get(url)).json() == {}  # kept alive: the same connection
            assert accepted == ["open"]
            close_first.set()
            await _until(lambda: accepted == ["open", "closed"], "the server's close")
            assert (await http.get(url)).json() == {}  # not sent into the closed one
            assert accepted == ["open", "closed", "open"]

    asyncio.run(go())


def test_registry_requests_go_through_the_transport(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """If the registry client stopped sending through :class:`transport.Transport`, no
    connection would be counted here."""
    server = devservers.start_registry(tmp_path / "registry")
    try:
        with httpx.Client(timeout=30) as http:
            for name in ("team/a", "team/b"):
                devservers.push_image(server.url, name, "1.0.0", http=http)
        opened: list[tuple[str, str, int]] = []
        connect = transport.Transport._connect

        async def counting(self: transport.Transport, origin: tuple[str, str, int],
                           timeout: float | None) -> Any:
            opened.append(origin)
            return await connect(self, origin, timeout)

        monkeypatch.setattr(transport.Transport, "_connect", counting)

        async def tags() -> list[list[str]]:
            config = models.RegistryConfig(host=server.host, insecure=True)
            async with registry_client.RegistryClient([config]) as client:
                return [await client.list_tags(refs.parse(f"{server.host}/{name}"))
                        for name in ("team/a", "team/b")]

        assert asyncio.run(tags()) == [["1.0.0"], ["1.0.0"]]
        host, port = server.host.split(":")
        # the ping and both lists over one kept-alive socket
        assert opened == [("http", host, int(port))]
    finally:
        server.stop()


def test_requests_arriving_together_share_the_connections_the_limits_allow() -> None:
    """24 requests at once over at most 4 connections, kept alive for the next rounds; a
    fifth origin's request closes an idle connection to open its own."""

    async def go() -> None:
        accepted: list[str] = []
        server = await _serve(asyncio.Event(), accepted)
        other: list[str] = []
        second = await _serve(asyncio.Event(), other)
        port = server.sockets[0].getsockname()[1]
        pool = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        async with server, second, httpx.AsyncClient(
                transport=transport.Transport(limits=pool)) as http:
            url = f"http://127.0.0.1:{port}/v2/"
            for _ in range(3):  # later rounds over the kept-alive connections
                answers = await asyncio.gather(*(http.get(url) for _ in range(24)))
                assert [a.json() for a in answers] == [{}] * 24
            assert accepted == ["open"] * 4
            elsewhere = f"http://127.0.0.1:{second.sockets[0].getsockname()[1]}/v2/"
            assert (await http.get(elsewhere)).json() == {}
            assert other == ["open"]
            answers = await asyncio.gather(*(http.get(url) for _ in range(8)))
            assert [a.json() for a in answers] == [{}] * 8
            assert accepted == ["open"] * 5  # the one closed for the other origin, again

    asyncio.run(go())


def test_the_tls_context_is_made_at_the_first_https_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the CA certificates costs ~25 ms: a registry on plain HTTP never pays it, and
    a registry on HTTPS pays it once, for a context that verifies certificates (here the
    server speaks plain HTTP: the handshake fails, and says so)."""
    made: list[Any] = []
    real = httpx.create_ssl_context

    def recording(**options: Any) -> Any:
        made.append(options)
        context = real(**options)
        assert context.verify_mode == ssl.CERT_REQUIRED
        return context

    monkeypatch.setattr(httpx, "create_ssl_context", recording)

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # a TLS client hello: answered in plain HTTP
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    async def go(lean: transport.Transport) -> None:
        server = await _serve(asyncio.Event())
        port = server.sockets[0].getsockname()[1]
        http_only = await asyncio.start_server(plain, "127.0.0.1", 0)
        async with server, http_only, httpx.AsyncClient(transport=lean) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/v2/")).json() == {}
            assert made == []
            for _ in range(2):
                with pytest.raises(httpx.ConnectError) as failed:
                    await http.get(f"https://127.0.0.1:{http_only.sockets[0].getsockname()[1]}"
                                   f"/v2/")
                assert network.unreachable(failed.value).startswith("TLS handshake failed")

    asyncio.run(go(transport.Transport()))
    assert made == [{"verify": True}]
    made.clear()
    asyncio.run(go(transport.Transport(verify=ssl.create_default_context())))
    assert made == []  # a ca_bundle's context, as it is


async def _http_server(answer: Callable[[str, dict[str, str]], bytes],
                       seen: list[tuple[str, dict[str, str]]],
                       bodies: list[bytes] | None = None,
                       connections: list[int] | None = None) -> asyncio.Server:
    """A keep-alive HTTP/1.1 server: each request (its line, its headers; its body, read by
    its ``Content-Length``, in ``bodies``) is recorded in ``seen`` and answered with
    ``answer(line, headers)``; ``connections`` gets one item per connection accepted."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connections is not None:
            connections.append(len(connections) + 1)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *fields = head.strip().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in
                           (f.partition(":") for f in fields)}
                seen.append((line, headers))
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if bodies is not None:
                    bodies.append(body)
                writer.write(answer(line, headers))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
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
    """The transport's failures are httpx's exceptions, the cause
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


def test_bodies_are_framed_and_decoded_as_httpx_reads_them() -> None:
    """Chunked and gzip-encoded answers, a HEAD's empty body (its ``Content-Length`` names
    the resource's size), an interim ``100 Continue`` skipped, a form POSTed (a token
    request), a ``Connection: close`` answer whose connection is not reused; every other
    exchange over the one kept-alive connection."""
    seen: list[tuple[str, dict[str, str]]] = []
    bodies: list[bytes] = []
    connections: list[int] = []
    listing = b'{"tags": ["1.0.0", "1.1.0"]}'
    packed = gzip.compress(listing)

    def answer(line: str, headers: dict[str, str]) -> bytes:
        method, path, _ = line.split(" ")
        if path == "/chunked":
            return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                               for part in (listing[:7], listing[7:]))
                    + b"0\r\n\r\n")
        if path == "/gzip":
            return _answer("200 OK", packed, Content_Encoding="gzip")
        if path == "/interim":
            return b"HTTP/1.1 100 Continue\r\n\r\n" + _answer("200 OK", listing)
        if method == "HEAD":
            return (b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:abc\r\n"
                    b"Content-Length: 1234\r\n\r\n")
        if method == "POST":
            return _answer("200 OK", b'{"token": "t"}')
        return _answer("200 OK", b"{}", Connection="close")

    async def go() -> None:
        server = await _http_server(answer, seen, bodies, connections)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server, httpx.AsyncClient(transport=transport.Transport()) as http:
            for path in ("/chunked", "/gzip", "/interim"):
                assert (await http.get(base + path)).json() == {"tags": ["1.0.0", "1.1.0"]}
            head = await http.head(base + "/v2/app/manifests/1.0.0")
            assert (head.status_code, head.content) == (200, b"")
            assert head.headers["Docker-Content-Digest"] == "sha256:abc"
            assert (b"Docker-Content-Digest", b"sha256:abc") in head.headers.raw  # as sent
            token = await http.post(base + "/token", data={"scope": "repository:app:pull"})
            assert token.json() == {"token": "t"}
            assert connections == [1]  # all of these over one connection
            for _ in range(2):
                assert (await http.get(base + "/closing")).json() == {}
            assert (await http.get(base + "/chunked")).status_code == 200
            assert connections == [1, 2, 3]  # closed after each closing: a new one each time

    asyncio.run(go())
    assert [line for line, _ in seen] == [
        "GET /chunked HTTP/1.1", "GET /gzip HTTP/1.1", "GET /interim HTTP/1.1",
        "HEAD /v2/app/manifests/1.0.0 HTTP/1.1", "POST /token HTTP/1.1",
        "GET /closing HTTP/1.1", "GET /closing HTTP/1.1", "GET /chunked HTTP/1.1"]
    assert bodies[4] == b"scope=repository%3Aapp%3Apull"
    assert all(headers["host"].startswith("127.0.0.1:") for _, headers in seen)


def test_a_connection_whose_exchange_did_not_end_cleanly_is_closed_not_reused() -> None:
    """A request cancelled while waiting for its answer, an answer whose body was not read
    to its end, an answer cut off in its body, a garbled answer, a request h11 refuses to
    send: none leaves its connection to the next request (which would read the rest of an
    old answer as its own)."""
    seen: list[tuple[str, dict[str, str]]] = []
    connections: list[int] = []
    late = asyncio.Event()

    def answer(line: str, headers: dict[str, str]) -> bytes:
        path = line.split(" ")[1]
        if path == "/garbled":
            return b"HTTP/1.1 two hundred\r\n\r\n"
        if path == "/big":
            return _answer("200 OK", b"x" * 100_000)
        return _answer("200 OK", b"{}")

    async def go() -> None:
        server = await _http_server(answer, seen, None, connections)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        slow_connections: list[int] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            number = len(slow_connections) + 1
            slow_connections.append(number)
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await late.wait()  # each answer names its connection
                    writer.write(_answer("200 OK", b'{"late": %d}' % number))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            finally:
                writer.close()

        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"")
            writer.close()  # 11 bytes of 100

        slow = await asyncio.start_server(silent, "127.0.0.1", 0)
        cutting = await asyncio.start_server(cut, "127.0.0.1", 0)
        slow_url = f"http://127.0.0.1:{slow.sockets[0].getsockname()[1]}/slow"
        async with server, slow, cutting, httpx.AsyncClient(
                transport=transport.Transport()) as http:
            assert (await http.get(base + "/ok")).json() == {}
            async with http.stream("GET", base + "/big") as streamed:  # left unread
                assert streamed.status_code == 200
            assert (await http.get(base + "/ok")).json() == {}
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(f"http://127.0.0.1:{cutting.sockets[0].getsockname()[1]}/cut")
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(base + "/garbled")
            assert (await http.get(base + "/ok")).json() == {}
            with pytest.raises(httpx.LocalProtocolError):  # h11 refuses to send it
                await http.get(base + "/ok", headers={"Authorization": "Bearer a\r\nX: 1"})
            assert (await http.get(base + "/ok")).json() == {}
            assert connections == [1, 2, 3, 4]  # a new one after each failure

            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await http.get(slow_url)  # given up on, its answer still to come
            late.set()
            # on the first connection this would read the first request's answer
            assert (await http.get(slow_url)).json() == {"late": 2}
            assert slow_connections == [1, 2]

    asyncio.run(go())


def test_an_idle_connection_older_than_keepalive_expiry_is_closed_not_reused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]  # the transport's clock (asyncio's own is left alone)
    monkeypatch.setattr(transport, "time", SimpleNamespace(monotonic=lambda: now[0]))
    seen: list[tuple[str, dict[str, str]]] = []
    connections: list[int] = []

    async def go() -> None:
        server = await _http_server(lambda line, headers: _answer("200 OK", b"{}"), seen,
                                    None, connections)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v2/"
        limits = httpx.Limits(keepalive_expiry=5.0)
        async with server, httpx.AsyncClient(
                transport=transport.Transport(limits=limits)) as http:
            assert (await http.get(url)).json() == {}
            now[0] += 4.9
            assert (await http.get(url)).json() == {}  # idle 4.9 s: kept
            assert connections == [1]
            now[0] += 5.1
            assert (await http.get(url)).json() == {}  # idle 5.1 s: a new one
            assert connections == [1, 2]

    asyncio.run(go())
