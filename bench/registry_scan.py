"""Benchmark: a full tag scan of 200 repositories × 200 tags through the token flow.

Seeds the real docker-registry (token auth, our test token server in its own process), then
alternates two scans of every repository, each from a cold start:

* the **floor**: a bare concurrent httpx loop issuing exactly the requests a scan needs
  (one token request and one ``tags/list`` per repository), with the same concurrency;
* **image-bot**: ``RegistryClient.list_tags`` for every repository, as the engine does for
  tag-only policies (a semver or alphabetical policy needs no manifest).

Prints the request counts of the client (one ``tags`` request per repository and at most one
token request per scope are asserted) and the ratio of the median wall times (goal ≤ 1.5).
Not part of ``make test``:

    .venv/bin/python bench/registry_scan.py [--repos 200] [--tags 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import devservers  # noqa: E402
from image_bot import refs  # noqa: E402
from image_bot.config import models  # noqa: E402
from image_bot.registry import client as registry_client  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


def _serve_tokens(directory: Path, port: int) -> None:
    server = devservers.start_token_server(directory, {USER: PASSWORD}, port=port)
    server.thread.join()


def start_token_process(directory: Path) -> tuple[multiprocessing.Process, str, Path]:
    """The token server in its own process, so signing JWTs does not share our GIL."""
    port = devservers.free_port()
    process = multiprocessing.get_context("fork").Process(
        target=_serve_tokens, args=(directory, port), daemon=True)
    process.start()
    devservers.wait_for_port(port)
    return process, f"http://127.0.0.1:{port}/token", directory / "token-signer.pem"


def start_registry(directory: Path) -> tuple[devservers.Registry, multiprocessing.Process]:
    process, realm, certificate = start_token_process(directory / "tokens")
    token = devservers.TokenAuth(realm, certificate)
    return devservers.start_registry(directory / "registry", token=token), process


def seed(registry: devservers.Registry, repos: int, tags: int) -> float:
    """Push ``tags`` tags of one repository through the API (each tag its own manifest over
    one shared blob set), then replicate the repository's storage for the others."""
    started = time.monotonic()
    first = "bench/repo-000"
    auth = devservers.BearerAuth(USER, PASSWORD)
    with httpx.Client(auth=auth, timeout=30) as http:
        devservers.push_image(registry.url, first, "0.0.0", http=http)
        manifest = http.get(f"{registry.url}/v2/{first}/manifests/0.0.0",
                            headers={"Accept": devservers.DOCKER_MANIFEST}).json()

    names = [f"1.{minor}.{patch}" for minor in range(tags // 20 + 1) for patch in range(20)]
    with httpx.Client(auth=auth, timeout=30) as http:

        def put(tag: str) -> None:
            body = dict(manifest, annotations={"bench.tag": tag})  # a distinct digest per tag
            http.put(f"{registry.url}/v2/{first}/manifests/{tag}", content=json.dumps(body),
                     headers={"Content-Type": devservers.DOCKER_MANIFEST}).raise_for_status()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, names[1:tags]))
    storage = registry.directory / "data" / "docker" / "registry" / "v2" / "repositories"
    for index in range(1, repos):
        shutil.copytree(storage / first, storage / f"bench/repo-{index:03d}")
    return time.monotonic() - started


async def floor(registry: devservers.Registry, realm: str, names: list[str],
                concurrency: int) -> tuple[float, dict[str, list[str]]]:
    """The same requests with nothing but httpx: token, then tags, per repository."""
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(
            max_connections=concurrency + 4)) as http:

        async def one(name: str) -> list[str]:
            async with gate:
                token = (await http.get(realm, params={
                    "service": "image-bot-tests", "scope": f"repository:{name}:pull"},
                    auth=(USER, PASSWORD))).json()["token"]
                answer = await http.get(f"{registry.url}/v2/{name}/tags/list",
                                        headers={"Authorization": f"Bearer {token}"})
                answer.raise_for_status()
                return list(answer.json()["tags"])

        results = await asyncio.gather(*(one(name) for name in names))
    return time.monotonic() - started, dict(zip(names, results, strict=True))


async def scan(registry: devservers.Registry, names: list[str], concurrency: int
               ) -> tuple[float, dict[str, list[str]], registry_client.RegistryClient]:
    settings = models.RegistryConfig(host=registry.host, insecure=True, username_env="BENCH_USER",
                                     password_env="BENCH_PASSWORD", concurrency=concurrency)
    started = time.monotonic()
    async with registry_client.RegistryClient([settings]) as client:
        images = [refs.parse(f"{registry.host}/{name}") for name in names]
        results = await asyncio.gather(*(client.list_tags(image) for image in images))
    return time.monotonic() - started, dict(zip(names, results, strict=True)), client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--tags", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the seeded registry storage in DIR and reuse it next time")
    args = parser.parse_args()
    os.environ["BENCH_USER"], os.environ["BENCH_PASSWORD"] = USER, PASSWORD
    work = Path(tempfile.mkdtemp(prefix="image-bot-bench-"))
    seeded = args.keep / f"{args.repos}x{args.tags}" if args.keep else None
    if seeded and seeded.exists():
        shutil.copytree(seeded, work / "registry" / "data")
    registry, tokens = start_registry(work)
    try:
        if seeded and seeded.exists():
            print(f"reusing the seeded storage in {seeded}")
        else:
            seconds = seed(registry, args.repos, args.tags)
            print(f"seeded {args.repos} repositories × {args.tags} tags in {seconds:.1f}s")
            if seeded:
                shutil.copytree(registry.directory / "data", seeded)
        names = [f"bench/repo-{i:03d}" for i in range(args.repos)]
        realm = f"http://127.0.0.1:{tokens_port(registry)}/token"
        floors, ours, cpu_floor, cpu_ours = [], [], [], []
        for _ in range(args.rounds):
            cpu = time.process_time()
            took, expected = asyncio.run(floor(registry, realm, names, args.concurrency))
            floors.append(took)
            cpu_floor.append(time.process_time() - cpu)
            cpu = time.process_time()
            took, found, client = asyncio.run(scan(registry, names, args.concurrency))
            ours.append(took)
            cpu_ours.append(time.process_time() - cpu)
            assert {k: sorted(v) for k, v in found.items()} == {
                k: sorted(v) for k, v in expected.items()}, "the scans disagree"
            assert all(len(tags) == args.tags for tags in found.values())
            assert client.counts["tags"] == args.repos, client.counts
            assert client.counts["token"] <= args.repos, client.counts
        counts = dict(client.counts)
        ratio = statistics.median(ours) / statistics.median(floors)
        print(f"requests per scan (image-bot): {counts} for {args.repos} repositories "
              f"({counts['tags'] / args.repos:.0f} tags request per repository, "
              f"{counts['token']} token requests for {args.repos} scopes)")
        print(f"floor (bare httpx, same requests): median {statistics.median(floors):.3f}s "
              f"of {', '.join(f'{t:.3f}' for t in floors)}")
        print(f"image-bot RegistryClient:          median {statistics.median(ours):.3f}s "
              f"of {', '.join(f'{t:.3f}' for t in ours)}")
        print(f"ratio image-bot / floor: {ratio:.2f} (goal ≤ 1.5)")
        cpu_ratio = statistics.median(cpu_ours) / statistics.median(cpu_floor)
        print(f"client-side CPU per scan: floor {statistics.median(cpu_floor):.3f}s, image-bot "
              f"{statistics.median(cpu_ours):.3f}s (ratio {cpu_ratio:.2f}; the servers run in "
              f"other processes)")
        return 0 if ratio <= 1.5 else 1
    finally:
        registry.stop()
        tokens.terminate()
        shutil.rmtree(work, ignore_errors=True)


def tokens_port(registry: devservers.Registry) -> int:
    config = json.loads((registry.directory / "config.yml").read_text())
    return int(config["auth"]["token"]["realm"].split(":")[2].split("/")[0])


if __name__ == "__main__":
    sys.exit(main())
