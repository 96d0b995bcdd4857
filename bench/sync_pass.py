"""Sync agent pass cost on a real dockerd: a no-op pass against the engine calls it needs.

Starts a private dockerd, a registry and a git server; deploys N services once; then times
no-op passes (fetch + compare, nothing to change) against a baseline measured in the same
run: one `git fetch` of the config repo plus one container listing, the least any pass must
do. Prints the ratio (lower is better; ~1 means the agent adds little over its I/O).

    .venv/bin/python bench/sync_pass.py [--services 20] [--passes 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import docker

import devservers
from image_bot.engine import syncing
from image_bot.sync import agent
from image_bot.sync.settings import AgentSettings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="image-bot-bench-"))
    dockerd = devservers.start_dockerd()
    registry = devservers.start_registry(work / "registry")
    (work / "git").mkdir()
    git_server = devservers.start_git_server(work / "git")
    try:
        devservers.push_busybox_image(registry.url, "bench/app", "1.0.0")
        services = "".join(
            f"  s{i}:\n    image: {registry.host}/bench/app:1.0.0\n"
            f"    command: sleep 3600\n    network_mode: none\n" for i in range(args.services))
        devservers.create_repo(work / "git", "c.git", {"deploy/bench.yaml":
                                                        f"services:\n{services}"})
        url = git_server.url("c.git")
        settings = AgentSettings(agent="bench", docker_host=dockerd.host, min_running=0.5,
                                 stop_timeout=1)
        job = syncing.SyncJob(url, "main", "deploy", work / "state", settings)
        target = agent.build(settings)
        started = time.perf_counter()
        first = syncing.run_pass(job, target)
        deploy = time.perf_counter() - started
        assert first.ok, first.to_dict()
        passes = []
        for _ in range(args.passes):
            started = time.perf_counter()
            report = syncing.run_pass(job, target)
            passes.append(time.perf_counter() - started)
            assert report.ok and {s.action for s in report.services} == {"none"}
        target.close()
        baseline = []
        client = docker.DockerClient(base_url=dockerd.host)
        clone = next((work / "state" / "sync" / "repos").iterdir())
        for _ in range(args.passes):
            started = time.perf_counter()
            subprocess.run(["git", "fetch", "-q", "origin"], cwd=clone, check=True)
            client.containers.list(all=True, filters={"label": "io.image-bot.sync.agent=bench"})
            baseline.append(time.perf_counter() - started)
        client.close()
        noop, floor = statistics.median(passes), statistics.median(baseline)
        print(f"services: {args.services}")
        print(f"first deploy (pull + create + health): {deploy:.2f}s")
        print(f"no-op pass, median of {args.passes}: {noop * 1000:.0f} ms")
        print(f"baseline (git fetch + container list): {floor * 1000:.0f} ms")
        print(f"ratio no-op pass / baseline: {noop / floor:.2f}")
        return 0
    finally:
        dockerd.stop()
        git_server.stop()
        registry.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
