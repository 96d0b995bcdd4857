"""Hostile registries: slow drips, floods, endless tag lists and huge manifests are bounded.

The real registry answers the manifest test. A registry that drips one byte at a time or
streams without end cannot be made from the real one, so a small loopback HTTP server
(real sockets, real httpx stack) plays it; it records every path it was asked for.
"""

from __future__ import annotations

import asyncio
import json
import socketserver
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import devservers
from image_bot import refs
from image_bot.config import models
from image_bot.errors import RegistryLimitExceeded, RegistryUnavailable
from image_bot.registry import client as registry_client
from image_bot.state import State

_T = TypeVar("_T")
GUARD = 20.0  # seconds: without the fixes these scenarios would run for minutes


class HostileRegistry(socketserver.ThreadingTCPServer):
    """``/v2/<name>/tags/list`` behaves by ``<name>``: drip, flood, declared, pages."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.paths: list[str] = []
        self.sent = 0  # body bytes written by the flood
        self.bearer = False  # /v2/ asks for a token from /token, which floods

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def count(self, name: str) -> int:
        return sum(1 for path in self.paths if path.startswith(f"/v2/{name}/"))


class _Handler(socketserver.StreamRequestHandler):
    server: HostileRegistry

    def handle(self) -> None:
        while not self.server.stopping.is_set():
            line = self.rfile.readline()
            if not line:
                return
            method, target, _ = line.decode().split(" ", 2)
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            self.server.paths.append(target)
            try:
                self._answer(method, target)
            except (BrokenPipeError, ConnectionResetError):
                return

    def _head(self, status: str, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status}", "Content-Type: application/json",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.wfile.write("\r\n".join(lines).encode())
        self.wfile.flush()

    def _answer(self, method: str, target: str) -> None:
        url = urlsplit(target)
        name = url.path.removeprefix("/v2/").split("/", 1)[0]
        if url.path == "/v2/" and self.server.bearer:
            realm = f"http://{self.server.host}/token"
            self._head("401 Unauthorized", {"Content-Length": "2", "WWW-Authenticate":
                                            f'Bearer realm="{realm}",service="hostile"'})
            self.wfile.write(b"{}")
        elif url.path == "/token":
            self._head("200 OK", {"Transfer-Encoding": "chunked"})
            self._chunk(b'{"token": "')
            while not self.server.stopping.is_set() and self.server.sent < 256 * 2**20:
                self._chunk(b"t" * 65536)
        elif url.path == "/v2/":
            self._head("200 OK", {"Content-Length": "2"})
            self.wfile.write(b"{}")
        elif name == "drip":  # headers at once, then one byte every 0.1 s
            body = json.dumps({"name": "drip", "tags": [f"1.0.{i}" for i in range(2000)]})
            self._head("200 OK", {"Content-Length": str(len(body))})
            for byte in body.encode():
                if self.server.stopping.wait(0.1):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        elif name == "flood":  # a tag list without end, chunked
            self._head("200 OK", {"Transfer-Encoding": "chunked"})
            self._chunk(b'{"name": "flood", "tags": ["0"')
            chunk = b"".join(b', "%d"' % i for i in range(10_000))
            while not self.server.stopping.is_set() and self.server.sent < 256 * 2**20:
                self._chunk(chunk)
        elif name == "bigmanifest" and method == "HEAD":  # a digest, then 50 MB of manifest
            self._head("200 OK", {"Docker-Content-Digest": "sha256:" + "ab" * 32,
                                  "Content-Length": str(50 * 2**20)})
        elif name == "bigmanifest":
            self._head("200 OK", {"Transfer-Encoding": "chunked"})
            self._chunk(b'{"schemaVersion": 2, "annotations": {"padding": "')
            while not self.server.stopping.is_set() and self.server.sent < 50 * 2**20:
                self._chunk(b"x" * 65536)
        elif name == "declared":  # says how big it is, then waits
            self._head("200 OK", {"Content-Length": str(50 * 2**20)})
            self.server.stopping.wait(30)
        elif name == "pages":  # 1000 fresh tags per page, always another page
            start = int(parse_qs(url.query).get("last", ["-1"])[0]) + 1
            body = json.dumps({"name": "pages",
                               "tags": [str(i) for i in range(start, start + 1000)]})
            link = f'</v2/pages/tags/list?n=1000&last={start + 999}>; rel="next"'
            self._head("200 OK", {"Content-Length": str(len(body)), "Link": link})
            self.wfile.write(body.encode())
        else:
            self._head("404 Not Found", {"Content-Length": "2"})
            self.wfile.write(b"{}")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.server.sent += len(data)


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    server = HostileRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _client(host: str, **settings: Any) -> registry_client.RegistryClient:
    config = models.RegistryConfig(host=host, insecure=True, **settings)
    return registry_client.RegistryClient([config], backoff=0.0, timeout=10.0)


def _guarded(scenario: Callable[[], Awaitable[_T]]) -> _T:
    async def go() -> _T:
        return await asyncio.wait_for(scenario(), GUARD)

    return asyncio.run(go())


def test_a_registry_that_drips_bytes_fails_at_the_request_deadline(
        hostile: HostileRegistry) -> None:
    async def scenario() -> float:
        async with _client(hostile.host, request_deadline=1.0) as client:
            started = time.monotonic()
            with pytest.raises(RegistryUnavailable) as caught:
                await client.list_tags(refs.parse(f"{hostile.host}/drip"))
            assert str(caught.value) == (
                f"registry {hostile.host}, image drip: no complete answer to tags "
                f"http://{hostile.host}/v2/drip/tags/list within 1 s "
                f"(registries[].request_deadline)")
            return time.monotonic() - started

    elapsed = _guarded(scenario)
    assert elapsed < 3.0  # one deadline, not one 10 s read timeout per byte
    assert hostile.count("drip") == 1  # a drip is not retried within the cycle


def test_the_registry_phase_of_a_scan_has_its_own_deadline(hostile: HostileRegistry) -> None:
    async def scenario() -> None:
        async with _client(hostile.host, request_deadline=60.0) as client:
            with pytest.raises(RegistryUnavailable, match=(
                    r"^repository http://git.example/config.git: registry requests took "
                    r"longer than 1 s \(repositories\[\].registry_deadline\); the scan was "
                    r"abandoned and runs again next cycle$")):
                async with registry_client.scan_deadline(
                        1.0, repository="http://git.example/config.git"):
                    await client.list_tags(refs.parse(f"{hostile.host}/drip"))

    started = time.monotonic()
    _guarded(scenario)
    assert time.monotonic() - started < 3.0


def test_the_scan_deadline_lets_other_timeouts_through() -> None:
    async def scenario() -> None:
        async with registry_client.scan_deadline(60.0, repository="r"):
            raise TimeoutError("someone else's")

    with pytest.raises(TimeoutError, match="someone else's"):
        asyncio.run(scenario())


def test_an_answer_without_end_is_cut_at_the_byte_cap(hostile: HostileRegistry) -> None:
    async def scenario() -> None:
        async with _client(hostile.host, max_response_bytes=2**20) as client:
            with pytest.raises(RegistryLimitExceeded, match=(
                    rf"^registry {hostile.host}, image flood: tags answer larger than "
                    rf"1048576 bytes \(it kept sending; registries\[\].max_response_bytes\)$")):
                await client.list_tags(refs.parse(f"{hostile.host}/flood"))

    _guarded(scenario)
    assert hostile.count("flood") == 1  # a limit is final: not retried


def test_a_token_server_answer_is_capped_too(hostile: HostileRegistry) -> None:
    hostile.bearer = True

    async def scenario() -> None:
        async with _client(hostile.host, max_response_bytes=2**20) as client:
            with pytest.raises(RegistryLimitExceeded, match=(
                    rf"^registry {hostile.host}: token server http://{hostile.host}/token "
                    rf"answered more than 1048576 bytes \(it kept sending; "
                    rf"registries\[\].max_response_bytes\)$")):
                await client.list_tags(refs.parse(f"{hostile.host}/anything"))

    _guarded(scenario)
    assert hostile.sent < 64 * 2**20


def test_a_declared_length_over_the_cap_is_refused_before_reading(
        hostile: HostileRegistry) -> None:
    async def scenario() -> None:
        async with _client(hostile.host) as client:  # default cap: 16 MiB
            with pytest.raises(RegistryLimitExceeded, match=(
                    rf"^registry {hostile.host}, image declared: tags answer larger than "
                    rf"16777216 bytes \(Content-Length 52428800; "
                    rf"registries\[\].max_response_bytes\)$")):
                await client.list_tags(refs.parse(f"{hostile.host}/declared"))

    started = time.monotonic()
    _guarded(scenario)
    assert time.monotonic() - started < 3.0


def test_tags_per_repository_are_capped_across_pages(hostile: HostileRegistry) -> None:
    async def scenario() -> None:
        async with _client(hostile.host, max_tags=5000, page_size=1000) as client:
            with pytest.raises(RegistryLimitExceeded, match=(
                    rf"^registry {hostile.host}, image pages: more than 5000 tags "
                    rf"\(registries\[\].max_tags\); not reading more$")):
                await client.list_tags(refs.parse(f"{hostile.host}/pages"))

    _guarded(scenario)
    assert hostile.count("pages") == 6


def test_limit_defaults() -> None:
    config = models.RegistryConfig(host="r.example")
    assert (config.request_deadline, config.max_response_bytes, config.max_manifest_bytes,
            config.max_tags) == (60.0, 16 * 2**20, 4 * 2**20, 100_000)
    repository = models.RepositoryConfig(url="https://git.example/c.git")
    assert repository.registry_deadline == 300.0


def test_a_manifest_over_the_cap_is_refused_and_never_cached(
        registry: devservers.Registry, tmp_path: Any) -> None:
    """The real registry refuses to store manifests over 4 MiB itself, so the cap is lowered
    to 1 MiB here (the default 4 MiB is tested against the hostile server below)."""
    name = f"limits/huge-{uuid.uuid4().hex[:8]}"
    devservers.push_image(registry.url, name, "1.0.0", oci=True)
    with httpx.Client(timeout=60) as http:
        manifest = http.get(f"{registry.url}/v2/{name}/manifests/1.0.0",
                            headers={"Accept": devservers.OCI_MANIFEST}).json()
        manifest["annotations"] = {"padding": "x" * (3 * 2**20)}
        http.put(f"{registry.url}/v2/{name}/manifests/2.0.0", content=json.dumps(manifest),
                 headers={"Content-Type": devservers.OCI_MANIFEST}).raise_for_status()

    async def scenario() -> None:
        with State.in_dir(tmp_path) as state:
            config = models.RegistryConfig(host=registry.host, insecure=True,
                                           max_manifest_bytes=2**20)
            async with registry_client.RegistryClient([config], state=state) as client:
                image = refs.parse(f"{registry.host}/{name}")
                await client.image_info(image, "1.0.0")  # a normal one is fine
                with pytest.raises(RegistryLimitExceeded, match=(
                        rf"^registry {registry.host}, image {name}: manifest answer larger "
                        rf"than 1048576 bytes \(Content-Length \d+; "
                        rf"registries\[\].max_manifest_bytes\)$")):
                    await client.image_info(image, "2.0.0")

    _guarded(scenario)
    with sqlite3.connect(tmp_path / "state.db") as db:
        sizes = [row[0] for row in db.execute("SELECT length(data) FROM blobs")]
    assert sizes and max(sizes) < 2**20  # the small manifest and config only


def test_a_50_mb_manifest_is_cut_at_4_mib_and_never_cached(hostile: HostileRegistry,
                                                           tmp_path: Any) -> None:
    async def scenario() -> None:
        with State.in_dir(tmp_path) as state:
            config = models.RegistryConfig(host=hostile.host, insecure=True)
            async with registry_client.RegistryClient([config], state=state) as client:
                with pytest.raises(RegistryLimitExceeded, match=(
                        rf"^registry {hostile.host}, image bigmanifest: manifest answer larger "
                        rf"than 4194304 bytes \(it kept sending; "
                        rf"registries\[\].max_manifest_bytes\)$")):
                    await client.image_info(refs.parse(f"{hostile.host}/bigmanifest"), "1")

    _guarded(scenario)
    assert hostile.sent < 50 * 2**20
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM blobs").fetchone() == (0,)
