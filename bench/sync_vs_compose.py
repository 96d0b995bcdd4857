"""Sync agent vs docker-compose 1.29.2: same Compose file, same private dockerd.

Eight busybox httpd services with healthchecks (``network_mode: host``, one port each), as in
issue 15. Each tool does, in turn on a clean engine (bench images removed first, so both pull):
1. first deploy: from nothing until every service runs the wanted image and is healthy;
2. full update: every service to a new tag, until every one runs it and is healthy.
docker-compose is timed as ``docker-compose -p P -f FILE up -d`` plus polling until healthy
(``up -d`` does not wait); the agent as one pass (git fetch + apply; it waits for health
itself, since it rolls back what does not become healthy). Prints each time and the ratio
agent / docker-compose (≤ 1.0 means the agent is as fast). A PID-1 httpd ignores SIGTERM,
so each stop waits its grace period (10 s, both tools' default) — in parallel for both.

    .venv/bin/python bench/sync_vs_compose.py [--services 8] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
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

SERVICE = """\
  web{i}:
    image: {host}/bench/web{i}:{tag}
    command: ["httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"]
    network_mode: host
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{port}/"]
      interval: 1s
      timeout: 2s
      retries: 3
"""


def compose_file(host: str, ports: list[int], tag: str) -> str:
    return "services:\n" + "".join(SERVICE.format(i=i, host=host, port=port, tag=tag)
                                   for i, port in enumerate(ports))


def all_healthy(client: docker.DockerClient, label: str, value: str, tag: str,
                count: int) -> bool:
    containers = client.containers.list(filters={"label": f"{label}={value}"})
    ready = [c for c in containers if c.attrs["Config"]["Image"].endswith(f":{tag}")
             and (c.attrs["State"].get("Health") or {}).get("Status") == "healthy"]
    return len(ready) == count


def wait_healthy(client: docker.DockerClient, label: str, value: str, tag: str,
                 count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not all_healthy(client, label, value, tag, count):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {count} services healthy on {tag} after {timeout}s")
        time.sleep(0.05)


def remove_bench_images(client: docker.DockerClient, host: str) -> None:
    for image in client.images.list():
        if any(t.startswith(f"{host}/bench/") for t in image.tags):
            client.images.remove(image.id, force=True)


def run_compose(env: dict[str, str], directory: Path, text: str, project: str,
                client: docker.DockerClient, tag: str, count: int) -> float:
    (directory / "compose.yaml").write_text(text)
    started = time.perf_counter()
    subprocess.run(["docker-compose", "-p", project, "-f", str(directory / "compose.yaml"),
                    "up", "-d"], env=env, check=True, capture_output=True)
    wait_healthy(client, "com.docker.compose.project", project, tag, count)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("docker-compose"):
        print("docker-compose is not installed (apt-get install docker-compose)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="image-bot-bench-"))
    dockerd = devservers.start_dockerd()
    registry = devservers.start_registry(work / "registry")
    (work / "git").mkdir()
    git_server = devservers.start_git_server(work / "git")
    client = docker.DockerClient(base_url=dockerd.host)
    env = {**os.environ, "DOCKER_HOST": dockerd.host}
    times: dict[str, list[float]] = {k: [] for k in ("compose-deploy", "compose-update",
                                                     "agent-deploy", "agent-update")}
    try:
        for i in range(args.services):
            for tag in ("1.0.0", "1.1.0"):
                devservers.push_busybox_image(registry.url, f"bench/web{i}", tag)
        ports = [devservers.free_port() for _ in range(args.services)]
        v1, v2 = (compose_file(registry.host, ports, tag) for tag in ("1.0.0", "1.1.0"))
        for round_number in range(args.rounds):
            # docker-compose
            remove_bench_images(client, registry.host)
            project = f"cmp{round_number}"
            directory = work / project
            directory.mkdir()
            times["compose-deploy"].append(run_compose(env, directory, v1, project, client,
                                                       "1.0.0", args.services))
            times["compose-update"].append(run_compose(env, directory, v2, project, client,
                                                       "1.1.0", args.services))
            subprocess.run(["docker-compose", "-p", project, "-f",
                            str(directory / "compose.yaml"), "down", "-t", "0"], env=env,
                           check=True, capture_output=True)
            # the agent, from a Git repository
            remove_bench_images(client, registry.host)
            repo = f"agent{round_number}.git"
            devservers.create_repo(work / "git", repo, {"deploy/app/compose.yaml": v1})
            settings = AgentSettings(agent=f"bench{round_number}", docker_host=dockerd.host)
            job = syncing.SyncJob(git_server.url(repo), "main", "deploy",
                                  work / f"state{round_number}", settings)
            target = agent.build(settings)
            for tag, text, key in (("1.0.0", None, "agent-deploy"),
                                   ("1.1.0", v2, "agent-update")):
                if text is not None:
                    clone = work / f"clone{round_number}"
                    if not clone.exists():
                        subprocess.run(["git", "clone", "-q", git_server.url(repo),
                                        str(clone)], check=True)
                    (clone / "deploy/app/compose.yaml").write_text(text)
                    devservers.git("commit", "-q", "-am", "update", cwd=clone)
                    devservers.git("push", "-q", "origin", "main", cwd=clone)
                started = time.perf_counter()
                report = syncing.run_pass(job, target)
                elapsed = time.perf_counter() - started
                assert report.ok, report.to_dict()
                assert all_healthy(client, "io.image-bot.sync.agent", settings.agent, tag,
                                   args.services)
                times[key].append(elapsed)
            target.close()
            for container in client.containers.list(
                    all=True, filters={"label": f"io.image-bot.sync.agent={settings.agent}"}):
                container.remove(force=True)
        print(f"services: {args.services} (busybox httpd, healthcheck interval 1s, "
              f"network_mode: host), rounds: {args.rounds}")
        for phase in ("deploy", "update"):
            ours = statistics.median(times[f"agent-{phase}"])
            theirs = statistics.median(times[f"compose-{phase}"])
            label = "first deploy" if phase == "deploy" else "full update "
            print(f"{label}: agent {ours:6.2f}s  docker-compose {theirs:6.2f}s  "
                  f"ratio {ours / theirs:.2f}x")
        return 0
    finally:
        client.close()
        dockerd.stop()
        git_server.stop()
        registry.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
