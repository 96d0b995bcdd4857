"""Benchmark: what a hostile registry can cost the bot (memory and time), against a floor.

A loopback HTTP server in its own process plays the registry (the real one cannot send one
byte per tick or a tag list without end). The client runs with the default limits. Measured
in the same run, with ``tracemalloc`` (peak Python allocations of this process only):

* the **floor**: ``json.loads`` of one page holding ``max_tags`` (100,000) tags and the dict
  of them, i.e. what the largest *allowed* image costs whatever the client does;
* **allowed**: ``list_tags`` of an image with 100,000 tags in one page (must succeed);
* **1M tags**: one page of 1,000,000 tags (the review's 1.3 GB case; must fail);
* **endless pages**: 1,000-tag pages that always link to another (must fail at the tag cap);
* **flood**: a tag list streamed without end (must fail at ``max_response_bytes``);
* **drip**: one byte every 0.1 s (must fail at ``request_deadline``, set to 2 s here).

Prints peak memory of each as a ratio to the floor, and the drip's wall time. Not part of
``make test``:

    .venv/bin/python bench/registry_limits.py [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socketserver
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import devservers  # noqa: E402
from image_bot import refs  # noqa: E402
from image_bot.config import models  # noqa: E402
from image_bot.errors import RegistryError, RegistryUnavailable  # noqa: E402
from image_bot.registry import client as registry_client  # noqa: E402

ALLOWED = 100_000


def _page(count: int, start: int = 0) -> bytes:
    return json.dumps({"name": "x", "tags": [f"1.{i // 1000}.{i % 1000}-build{i}"
                                             for i in range(start, start + count)]}).encode()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            target = line.decode().split(" ")[1]
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            try:
                self._answer(urlsplit(target))
            except (BrokenPipeError, ConnectionResetError):
                return

    def _send(self, body: bytes, **headers: str) -> None:
        head = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
        self.wfile.write(b"HTTP/1.1 200 OK\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n" + body)
        self.wfile.flush()

    def _answer(self, url: Any) -> None:
        name = url.path.removeprefix("/v2/").split("/", 1)[0]
        if url.path == "/v2/":
            self._send(b"{}")
        elif name == "allowed":
            self._send(_page(ALLOWED))
        elif name == "million":
            self._send(_page(1_000_000))
        elif name == "pages":
            start = int(parse_qs(url.query).get("last", ["-1"])[0]) + 1
            self._send(_page(1000, start),
                       Link=f'</v2/pages/tags/list?last={start + 999}>; rel="next"')
        elif name == "flood":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"".join(b', "%d"' % i for i in range(10_000))
            for _ in range(100_000):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        elif name == "drip":
            body = _page(1000)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for byte in body:
                time.sleep(0.1)
                self.wfile.write(bytes([byte]))
                self.wfile.flush()


def _serve(port: int) -> None:
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", port), _Handler) as server:
        server.serve_forever()


def _measure(call: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[float, float, str]:
    """Peak MiB, seconds, and the outcome (``ok`` or the error class)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        asyncio.run(call())
        outcome = "ok"
    except (RegistryError, RegistryUnavailable) as exc:
        outcome = next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak, elapsed, outcome


def _floor() -> None:
    body = _page(ALLOWED)
    tags = dict.fromkeys(json.loads(body)["tags"])
    assert len(tags) == ALLOWED


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    port = devservers.free_port()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(port,),
                                                         daemon=True)
    server.start()
    devservers.wait_for_port(port)
    host = f"127.0.0.1:{port}"

    def scan(name: str) -> Callable[[], Coroutine[Any, Any, Any]]:
        async def go() -> Any:
            config = models.RegistryConfig(host=host, insecure=True, request_deadline=2.0)
            async with registry_client.RegistryClient([config], backoff=0.0) as client:
                return await client.list_tags(refs.parse(f"{host}/{name}"))
        return go

    async def floor() -> None:
        _floor()

    try:
        results = {"floor": _measure(floor)}
        for name in ("allowed", "million", "pages", "flood", "drip"):
            results[name] = _measure(scan(name))
    finally:
        server.kill()
    base = results["floor"][0]
    if args.json:
        print(json.dumps({k: {"peak_mib": round(p, 1), "seconds": round(s, 2), "outcome": o,
                              "ratio": round(p / base, 2)} for k, (p, s, o) in results.items()}))
        return
    print(f"{'scenario':<10} {'peak MiB':>9} {'× floor':>8} {'seconds':>8}  outcome")
    for name, (peak, seconds, outcome) in results.items():
        print(f"{name:<10} {peak:>9.1f} {peak / base:>8.2f} {seconds:>8.2f}  {outcome}")
    assert results["allowed"][2] == "ok"
    assert all(results[n][2] != "ok" for n in ("million", "pages", "flood", "drip"))
    assert results["drip"][1] < 3.0


if __name__ == "__main__":
    main()
