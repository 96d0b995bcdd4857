"""Benchmark: push a tag to a real registry → the commit is on the git remote. Not in make test.

Two daemons in one run, on the same machine, against Debian's docker-registry and the git
smart-HTTP server of tools/devservers.py:

1. webhooks: the registry notifies the daemon (`distribution` receiver); PUSHES tags are
   pushed one after the other to one image, each time waiting for its commit;
2. polling (the baseline): no webhooks, PUSHES policies at the default interval (5m); one new
   tag per image, the pushes spread evenly over one interval (so this phase takes about one
   interval plus a little).

Prints p50/p95/max per phase and the ratio polling/webhooks. Goal: webhooks p50 < 1 s,
p95 < 2 s on this machine.

    .venv/bin/python bench/push_to_commit.py [--pushes 20] [--poll-interval 5m] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import devservers

SECRET = "bench-webhook-secret"
PYTHON = sys.executable


def _policy(name: str, host: str, image: str, interval: str) -> str:
    return (f"apiVersion: image-bot/v1\nkind: ImagePolicy\nmetadata: {{name: {name}}}\n"
            f"spec:\n  image: {host}/bench/{image}\n  select: {{semver: {{range: '^1.0'}}}}\n"
            f"  paths: ['deploy/**']\n  interval: {interval}\n")


def _deployment(host: str, image: str) -> str:
    return f"spec:\n  containers:\n    - image: {host}/bench/{image}:1.0.0\n"


def _start_daemon(work: Path, name: str, url: str, registry: devservers.Registry, port: int,
                  *, receivers: bool) -> subprocess.Popen[bytes]:
    config = work / f"{name}.yaml"
    config.write_text(json.dumps({
        "repositories": [{"url": url}],
        "registries": [{"host": registry.host, "insecure": True}],
        "state_dir": str(work / f"state-{name}"),
        "receivers": [{"name": "registry", "kind": "distribution",
                       "secret_env": "BENCH_SECRET"}] if receivers else [],
        "daemon": {"listen": f"127.0.0.1:{port}"},
    }))
    log = (work / f"{name}.log").open("wb")
    process = subprocess.Popen([PYTHON, "-m", "image_bot", "run", "--config", str(config),
                                "--log-format", "json"], stderr=log,
                               env={**os.environ, "BENCH_SECRET": SECRET})
    return process


def _wait_scanned(port: int, count: int, timeout: float = 120) -> None:
    """Until the daemon is ready and its start-up scan recorded ``count`` policies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"http://127.0.0.1:{port}/api/status").json()
            if status["ready"] and len(status["policies"]) >= count:
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError("the daemon did not finish its start-up scan")


def _tag_on_remote(bare: Path, image: str, tag: str) -> bool:
    shown = subprocess.run(["git", "show", f"main:deploy/{image}.yaml"], cwd=bare,
                           capture_output=True, text=True, check=False).stdout
    return f"/bench/{image}:{tag}\n" in shown


def _wait_commit(bare: Path, image: str, tag: str, since: float, timeout: float) -> float:
    while time.monotonic() - since < timeout:
        if _tag_on_remote(bare, image, tag):
            return time.monotonic() - since
        time.sleep(0.01)
    raise TimeoutError(f"{image}:{tag} was not committed within {timeout}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def webhook_phase(work: Path, git_root: Path, git: devservers.GitServer,
                  pushes: int) -> list[float]:
    port = devservers.free_port()
    endpoint = {"name": "bot", "url": f"http://127.0.0.1:{port}/webhook/registry",
                "headers": {"Authorization": [f"Bearer {SECRET}"]},
                "timeout": "2s", "threshold": 3, "backoff": "1s"}
    registry = devservers.start_registry(work / "registry-hooks",
                                         extra={"notifications": {"endpoints": [endpoint]}})
    try:
        devservers.push_image(registry.url, "bench/hooked", "1.0.0")
        devservers.create_repo(git_root, "hooks.git", {
            "deploy/hooked.yaml": _deployment(registry.host, "hooked"),
            "policies/hooked.yaml": _policy("hooked", registry.host, "hooked", "1h"),
        })
        daemon = _start_daemon(work, "hooks", git.url("hooks.git"), registry, port,
                               receivers=True)
        try:
            _wait_scanned(port, 1)
            latencies = []
            for number in range(1, pushes + 1):
                tag = f"1.0.{number}"
                started = time.monotonic()
                devservers.push_image(registry.url, "bench/hooked", tag)
                latencies.append(_wait_commit(git_root / "hooks.git", "hooked", tag,
                                              started, timeout=30))
            return latencies
        finally:
            _stop(daemon)
    finally:
        registry.stop()


def polling_phase(work: Path, git_root: Path, git: devservers.GitServer, pushes: int,
                  interval: str, seconds: float) -> list[float]:
    port = devservers.free_port()
    registry = devservers.start_registry(work / "registry-poll")
    try:
        images = [f"polled{n:02d}" for n in range(pushes)]
        files: dict[str, str | bytes] = {}
        for image in images:
            devservers.push_image(registry.url, f"bench/{image}", "1.0.0")
            files[f"deploy/{image}.yaml"] = _deployment(registry.host, image)
            files[f"policies/{image}.yaml"] = _policy(image, registry.host, image, interval)
        devservers.create_repo(git_root, "poll.git", files)
        daemon = _start_daemon(work, "poll", git.url("poll.git"), registry, port,
                               receivers=False)
        try:
            _wait_scanned(port, pushes)
            start = time.monotonic()
            pushed: dict[str, float] = {}
            waiting = set(images)
            latencies = []
            while waiting:
                now = time.monotonic()
                for number, image in enumerate(images):  # evenly over one interval
                    if image not in pushed and now >= start + number * seconds / pushes:
                        devservers.push_image(registry.url, f"bench/{image}", "1.1.0")
                        pushed[image] = time.monotonic()
                for image in sorted(waiting & set(pushed)):
                    if _tag_on_remote(git_root / "poll.git", image, "1.1.0"):
                        latencies.append(time.monotonic() - pushed[image])
                        waiting.discard(image)
                if time.monotonic() - start > 3 * seconds + 60:
                    raise TimeoutError(f"not committed: {sorted(waiting)}")
                time.sleep(0.05)
            return latencies
        finally:
            _stop(daemon)
    finally:
        registry.stop()


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return {"n": len(ordered), "p50": statistics.median(ordered), "p95": p95,
            "max": ordered[-1], "min": ordered[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--poll-interval", default="5m",
                        help="the policies' interval in the polling phase (default: the "
                             "ImagePolicy default, 5m)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from image_bot.engine import scheduling
    seconds = scheduling.parse_duration(args.poll_interval)
    work = Path(tempfile.mkdtemp(prefix="image-bot-bench-"))
    (work / "git").mkdir()
    git = devservers.start_git_server(work / "git")
    try:
        hooks = _summary(webhook_phase(work, work / "git", git, args.pushes))
        poll = _summary(polling_phase(work, work / "git", git, args.pushes,
                                      args.poll_interval, seconds))
    finally:
        git.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {"webhooks": hooks, "polling": poll, "poll_interval": args.poll_interval,
              "ratio_p50": poll["p50"] / hooks["p50"],
              "goal_met": hooks["p50"] < 1.0 and hooks["p95"] < 2.0}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"push → commit on the git remote, {args.pushes} pushes per phase")
    for name, row in (("webhooks", hooks), (f"polling {args.poll_interval}", poll)):
        print(f"  {name:<14} p50 {row['p50']:7.3f}s  p95 {row['p95']:7.3f}s  "
              f"min {row['min']:7.3f}s  max {row['max']:7.3f}s")
    print(f"  polling/webhooks p50 ratio: {result['ratio_p50']:.0f}x; goal (webhooks p50 < 1 s, "
          f"p95 < 2 s): {'met' if result['goal_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
