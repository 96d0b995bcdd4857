"""Benchmark: memory and CPU of `image-bot plan` over a fleet, POLICIES policies × TAGS tags.
Not in make test.

A loopback fake registry in its own process (so its memory and CPU are not counted) serves
``tags/list`` in pages of PAGE tags with ``Link`` headers, as Docker Hub and the
distribution registry do; each policy has its own image (the worst case: no tag list is
shared) and its own Deployment in a real git repository (git http-backend).

`plan` runs in this process; prints its CPU time and this process's peak RSS, next to two
floors measured in the same run: for memory, the same process after importing image-bot and
before the cycle; for CPU, a bare httpx loop (in a process of its own) fetching the same
pages, 8 at a time as the engine does per registry, and doing nothing else (goals: peak
RSS ≤ 120 MB and CPU ≤ 5 s for 500 × 5,000):

    .venv/bin/python bench/fleet_memory.py [--policies 500] [--tags 5000] [--page 1000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import pstats
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import devservers  # noqa: E402
import testing  # noqa: E402
from image_bot import cli  # noqa: E402

_TAGS_PATH = re.compile(r"^/v2/(?P<name>.+)/tags/list$")


def _tags(count: int) -> list[str]:
    """Realistic tags: semver releases, a few pre-releases and build variants, ``latest``."""
    tags = ["latest"]
    i = 0
    while len(tags) < count:
        major, minor, patch = 1 + i // 2500, (i // 50) % 50, i % 50
        tags.append(f"{major}.{minor}.{patch}")
        if i % 10 == 0 and len(tags) < count:
            tags.append(f"{major}.{minor}.{patch}-rc.1")
        if i % 7 == 0 and len(tags) < count:
            tags.append(f"{major}.{minor}.{patch}-alpine")
        i += 1
    return sorted(tags)


def _serve(port: int, count: int, page: int) -> None:
    tags = _tags(count)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body in one segment: two writes wait out the client's delayed ACK
        # (40 ms a page), which measured the server instead of the client
        wbufsize = 1 << 16

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/v2/":
                return self._answer(200, {})
            match = _TAGS_PATH.match(url.path)
            if not match:
                return self._answer(404, {"errors": [{"code": "NAME_UNKNOWN"}]})
            query = parse_qs(url.query)
            size = min(int(query.get("n", [page])[0]), page)
            last = query.get("last", [""])[0]
            start = 0
            if last:  # tags are sorted: the page starts after ``last``
                start = next((i for i, t in enumerate(tags) if t > last), len(tags))
            chunk = tags[start:start + size]
            headers = {}
            if start + size < len(tags):
                headers["Link"] = (f'</v2/{match["name"]}/tags/list?n={size}&last={chunk[-1]}>; '
                                   f'rel="next"')
            return self._answer(200, {"name": match["name"], "tags": chunk}, headers)

        def _answer(self, status: int, body: object, headers: dict[str, str] | None = None,
                    ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _bare_fetch(host: str, images: int, page: int, done: Any) -> None:
    """The CPU floor: every page of every image's tag list through a bare httpx client."""
    import asyncio

    import httpx

    async def fetch_all() -> int:
        room = asyncio.Semaphore(8)  # registries[].concurrency's default
        async with httpx.AsyncClient() as http:
            async def one(i: int) -> int:
                url: str | None = f"http://{host}/v2/fleet/app-{i}/tags/list?n={page}"
                count = 0
                async with room:
                    while url:
                        answer = await http.get(url)
                        count += len(answer.json()["tags"])
                        link = answer.links.get("next", {}).get("url")
                        url = f"http://{host}{link}" if link else None
                return count
            return sum(await asyncio.gather(*(one(i) for i in range(images))))

    started = time.process_time()
    tags = asyncio.run(fetch_all())
    done.send((time.process_time() - started, tags))


def _floor_cpu(host: str, images: int, page: int) -> tuple[float, int]:
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_bare_fetch, args=(host, images, page, sending))
    child.start()
    result: tuple[float, int] = receiving.recv()
    child.join()
    return result


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--tags", type=int, default=5000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="print where the CPU goes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="image-bot-bench-fleet-"))
    port = devservers.free_port()
    fake = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, args.tags, args.page), daemon=True)
    fake.start()
    devservers.wait_for_port(port)
    host = f"127.0.0.1:{port}"
    (work / "git").mkdir()
    git = devservers.start_git_server(work / "git")
    try:
        files: dict[str, str | bytes] = {}
        for i in range(args.policies):
            image = f"{host}/fleet/app-{i}"
            files[f"policies/p{i}.yaml"] = testing.policy(
                f"p{i}", image, publish={"mode": "commit", "branch": "main"})
            files[f"deploy/app-{i}.yaml"] = testing.deployment(
                f"app-{i}", {"app": f"{image}:1.0.0"})
        devservers.create_repo(git.root, "fleet.git", files)
        config = testing.write_json(work / "bot.yaml", testing.bot_config(
            [{"url": git.url("fleet.git"), "branch": "main", "policies": "policies/"}],
            registries=[{"host": host, "insecure": True, "page_size": args.page}],
            state_dir=work / "state",
            git={"author_name": "image-bot", "author_email": "image-bot@localhost"}))
        del files
        floor_cpu, floor_tags = _floor_cpu(host, args.policies, args.page)
        assert floor_tags == args.policies * args.tags, floor_tags
        before = _peak_mb()
        cpu, wall = time.process_time(), time.perf_counter()
        words = ["plan", "--json", "--config", str(config)]
        profile = cProfile.Profile() if args.profile else None
        result = (profile.runcall if profile else _call)(
            CliRunner().invoke, cli.main, words, catch_exceptions=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert result.exit_code == 0, result.output[-2000:]
        report = json.loads(result.output)
        print(f"policies: {args.policies}, tags each: {args.tags}, page: {args.page}")
        print(f"registry requests: {report.get('registry_requests')}")
        print(f"peak RSS before the cycle (imports, fake repo): {before:.0f} MB")
        print(f"peak RSS after plan: {_peak_mb():.0f} MB (goal ≤ 120)")
        print(f"plan CPU: {cpu:.2f} s (goal ≤ 5), wall: {wall:.2f} s")
        print(f"floor CPU (bare httpx, the same pages): {floor_cpu:.2f} s; plan/floor: "
              f"{cpu / floor_cpu:.2f}; beyond the floor: {cpu - floor_cpu:.2f} s")
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return 0
    finally:
        git.stop()
        fake.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
