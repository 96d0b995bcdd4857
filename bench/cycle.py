"""Benchmark: one cycle (`plan`, then `run --once`) over POLICIES policies × TAGS tags.
Not in make test.

Real services on loopback: the docker-registry (each repository pushed once, its other tags
added as links in the registry's storage, which is what a push of the same manifest under
more tags leaves there) and a git server (git http-backend). The config repository holds
POLICIES policies (semver ``^1.0``), each for its own image, and one Deployment per image.

* the **floor**, measured in the same run: one ``tags/list`` per repository (bare httpx,
  the faster of all at once and 8 at a time over kept-alive connections, as the engine
  fetches: all at once, httpx's default pool of 100 connections and 20 kept alive opens
  new connections and the registry serves 200 at once slower than 8 at a time), one ``git
  fetch`` of the config repository, and reading every file of the checkout once: the I/O
  any cycle needs;
* the **floor with a push**, also measured each round, for ``run --once``: the floor plus
  what publishing the same edit with plain git costs (a second clone: one line of each of
  the POLICIES manifests rewritten in place, ``git commit -a``, ``git push`` to a ref of
  its own that no fetch brings), the I/O a run that commits and pushes needs. The issue's
  target is the ratio to the floor; this one says how much of the rest is git's;
* **plan**: ``image-bot plan`` in this process (decides every policy, edits nothing),
  started cold: what the commands before left in the process's memos (composed
  documents, parsed tags, references) is forgotten first, as a new process would start
  (imports aside: ``bench/startup.py`` measures them);
* **run --once**: ``image-bot run --once`` (edits every file, commits, pushes), cold as
  well (the ``plan`` just before parsed the same files and tags). Between
  rounds (not timed), ``--between``:

  - ``new-tags`` (default, the bot's steady state): every repository gets a newer tag and
    loses its oldest but one (still TAGS tags), so each round updates every policy again
    from the tip the last round pushed: the fetch brings nothing, the checkout is where the
    bot left it. The floor's clone fetches that commit before its timed fetch, so both
    fetches find nothing new;
  - ``restore``: a separate clone force-pushes the branch back to where it started, so
    every round is the same first cycle, and the bot's checkout also moves every file
    back (a human's forced push, each round). (A revert would be a human rollback: the
    next round would decline 200 tags and measure that instead.)
  - ``idle``: nothing changes (one untimed run first updates every policy): every policy
    is current and ``run --once`` has nothing to publish, as in most scheduled runs.

Prints every round, the medians, the ratios to the floor (goal ≤ 1.5; also each round's
against the floor measured just before it, which a drifting host moves less) and how often
YAML was composed (each file at most once a cycle):

    .venv/bin/python bench/cycle.py [--policies 200] [--tags 60] [--rounds 5] [--parser c]
                                    [--between new-tags|restore|idle] [--history 0]
                                    [--latency 0]

``--latency MS``: the registry and the git server behind proxies (each in a process of its
own, ``tools/delayproxy.py``) that add MS to every round trip, floor and bot alike: servers
on other machines, where waiting rather than CPU is what overlapping work saves.

``--history N`` (with ``new-tags``): N cycles, not timed, before the first round, so the
timed ones run behind N bot commits of POLICIES updates each (the deploy loop follows the
bot's commits: what it reads of them must not grow with the history).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import devservers  # noqa: E402
import testing  # noqa: E402
from image_bot import cli, refs  # noqa: E402
from image_bot.config import yamlio  # noqa: E402
from image_bot.policy import ranges, strategies  # noqa: E402
from image_bot.update import yamlgraph  # noqa: E402


def seed_registry(registry: devservers.Registry, storage: Path, images: int, tags: int) -> None:
    """Push ``bench/app-N:1.0.0`` for each image, then link tags 1.0.1… to the same manifest."""
    with httpx.Client(timeout=30) as http:
        for i in range(images):
            devservers.push_image(registry.url, f"bench/app-{i}", "1.0.0", http=http)
    repositories = storage / "docker" / "registry" / "v2" / "repositories" / "bench"
    for i in range(images):
        manifests = repositories / f"app-{i}" / "_manifests" / "tags"
        first = manifests / "1.0.0"
        for t in range(1, tags):
            shutil.copytree(first, manifests / f"1.0.{t}")
    with httpx.Client(timeout=30) as http:
        listed = http.get(f"{registry.url}/v2/bench/app-0/tags/list").json()["tags"]
    assert len(listed) == tags, len(listed)


def newer_tags(storage: Path, images: int, tags: int, round_: int) -> None:
    """Round ``round_`` (1, 2, …): every repository gains tag 1.0.<tags - 1 + round_> and
    loses 1.0.<round_> (1.0.0, the pushed one, stays): still ``tags`` tags, a newer best."""
    repositories = storage / "docker" / "registry" / "v2" / "repositories" / "bench"
    for i in range(images):
        manifests = repositories / f"app-{i}" / "_manifests" / "tags"
        shutil.copytree(manifests / "1.0.0", manifests / f"1.0.{tags - 1 + round_}")
        shutil.rmtree(manifests / f"1.0.{round_}")


def seed_repo(git: devservers.GitServer, host: str, policies: int) -> str:
    files: dict[str, str | bytes] = {}
    for i in range(policies):
        image = f"{host}/bench/app-{i}"
        files[f"policies/p{i}.yaml"] = testing.policy(
            f"p{i}", image, publish={"mode": "commit", "branch": "main"})
        files[f"deploy/app-{i}.yaml"] = testing.deployment(
            f"app-{i}", {"app": f"{image}:1.0.0", "sidecar": "nginx:1.25"})
    devservers.create_repo(git.root, "config.git", files)
    return git.url("config.git")


async def _list_all(registry: devservers.Registry, images: int, at_once: int | None) -> int:
    """Every repository's tag list; ``at_once``: that many requests in flight (None: all)."""
    room = asyncio.Semaphore(at_once or images)
    limits = httpx.Limits(max_connections=at_once, max_keepalive_connections=at_once) \
        if at_once else httpx.Limits()  # httpx's defaults: 100 connections, 20 kept

    async def one(http: httpx.AsyncClient, i: int) -> int:
        async with room:
            answer = await http.get(f"{registry.url}/v2/bench/app-{i}/tags/list")
        return len(answer.json()["tags"])

    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        return sum(await asyncio.gather(*(one(http, i) for i in range(images))))


def floor(registry: devservers.Registry, clone: Path, images: int) -> float:
    listing = []
    for at_once in (None, 8):  # whichever is faster here
        started = time.perf_counter()
        asyncio.run(_list_all(registry, images, at_once))
        listing.append(time.perf_counter() - started)
    started = time.perf_counter() - min(listing)
    subprocess.run(["git", "fetch", "-q", "origin"], cwd=clone, check=True)
    for folder, _, names in os.walk(clone):
        if ".git" not in Path(folder).parts:
            for name in names:
                (Path(folder) / name).read_bytes()
    return time.perf_counter() - started


_FLOOR_REF = "refs/bench/floor"  # not a branch: no clone's fetch brings it


def publish_floor(clone: Path, images: int, round_: int) -> float:
    """Rewrite one line of each manifest in ``clone`` (in place, as the bot does), commit
    them and push the commit to a ref of its own (a fast-forward; outside ``refs/heads``,
    so the floor's own ``git fetch`` never brings it); the seconds."""
    started = time.perf_counter()
    for i in range(images):
        path = clone / f"deploy/app-{i}.yaml"
        text = path.read_text()
        head, _, _ = text.rpartition("# round")
        with path.open("r+") as handle:  # one line changes, like a tag
            handle.write(f"{head or text}# round {round_}\n")
            handle.truncate()
    subprocess.run(["git", "commit", "-qa", "-m", f"round {round_}"], cwd=clone, check=True)
    subprocess.run(["git", "push", "-q", "origin", f"HEAD:{_FLOOR_REF}"], cwd=clone,
                   check=True)
    return time.perf_counter() - started


def _per_round(times: list[float], floors: list[float]) -> str:
    """Each round against the floor measured just before it (a host whose speed drifts
    during a run moves both): the median and range of those ratios."""
    ratios = sorted(t / f for t, f in zip(times, floors, strict=True))
    return (f"  (per round: median {statistics.median(ratios):.2f}, "
            f"{ratios[0]:.2f}–{ratios[-1]:.2f})")


def cold() -> None:
    """Forget what this process remembers from the commands before: each command starts as
    a new process would (the CLI runs here, so imports are not counted: `bench/startup.py`
    measures them). The plan before a `run --once` parsed the same files and tags."""
    yamlgraph.trees.cache_clear()  # composed documents, by text
    strategies.forget()  # tag readings and parses
    refs._parse_short.cache_clear()  # image references
    ranges._parse_short.cache_clear()  # semver ranges
    yamlgraph.plain_tag.cache_clear()  # the types of plain scalars
    yamlio._PLAIN_TAGS.clear()  # the resolver's memo
    yamlio._TABLES.clear()  # the resolver's patterns, per YAML version


def _delayed(port: int, latency_ms: float, proxies: list[subprocess.Popen[str]]) -> int:
    """The port of a proxy to ``port`` that adds ``latency_ms`` to each round trip."""
    proxy = subprocess.Popen([sys.executable, str(ROOT / "tools" / "delayproxy.py"), str(port),
                              str(latency_ms / 2000)], stdout=subprocess.PIPE, text=True)
    proxies.append(proxy)
    assert proxy.stdout is not None
    return int(proxy.stdout.readline())


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--tags", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parser", choices=yamlgraph.PARSERS, default=yamlgraph.parser())
    parser.add_argument("--between", choices=["new-tags", "restore", "idle"],
                        default="new-tags",
                        help="what happens between rounds (see above)")
    parser.add_argument("--history", type=int, default=0,
                        help="cycles before the timed rounds (new-tags): bot commits behind")
    parser.add_argument("--latency", type=float, default=0.0, metavar="MS",
                        help="a round trip's time added to every exchange with the registry "
                             "and the git server (half each way, by a proxy in a process of "
                             "its own): servers on other machines")
    parser.add_argument("--profile", nargs="?", const="plan", choices=["plan", "run"],
                        help="profile one more plan (or run --once) and print where its "
                             "time goes")
    args = parser.parse_args()
    if args.history and args.between != "new-tags":
        parser.error("--history needs --between new-tags")
    yamlgraph.use_parser(args.parser)
    work = Path(tempfile.mkdtemp(prefix="image-bot-bench-cycle-"))
    registry = devservers.start_registry(work / "registry")
    (work / "git").mkdir()
    git = devservers.start_git_server(work / "git")
    proxies: list[subprocess.Popen[str]] = []
    try:
        seed_registry(registry, work / "registry" / "data", args.policies, args.tags)
        served = registry  # what the floor and the bot talk to
        if args.latency:
            served = dataclasses.replace(registry, port=_delayed(registry.port, args.latency,
                                                                 proxies))
        url = seed_repo(git, served.host, args.policies)
        if args.latency:
            url = url.replace(f":{git.port}/",
                              f":{_delayed(git.port, args.latency, proxies)}/")
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
        pusher = work / "pusher"  # publishes the floor's edit on a ref of its own
        subprocess.run(["git", "clone", "-q", url, str(pusher)], check=True)
        for key, value in (("user.name", "human"), ("user.email", "human@localhost")):
            for folder in (clone, pusher):
                subprocess.run(["git", "config", key, value], cwd=folder, check=True)
        config = testing.write_json(work / "bot.yaml", testing.bot_config(
            [{"url": url, "branch": "main", "policies": "policies/"}],
            registries=[served.host], state_dir=work / "state",
            git={"author_name": "image-bot", "author_email": "image-bot@localhost"}))
        runner = CliRunner()
        composed: list[str] = []
        compose_all = yamlgraph.compose_all

        def counting(text: str) -> list[object]:
            composed.append(text)
            return compose_all(text)  # type: ignore[return-value]

        yamlgraph.compose_all = counting  # type: ignore[assignment]

        def invoke(*words: str, code: int = 0) -> None:
            result = runner.invoke(cli.main, [*words, "--config", str(config)],
                                   catch_exceptions=False)
            assert result.exit_code == code, result.output

        start = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True,
                               capture_output=True, text=True).stdout.strip()

        def between(round_: int) -> None:
            if args.between == "idle":
                subprocess.run(["git", "fetch", "-q", "origin"], cwd=clone, check=True)
                return
            if args.between == "restore":
                subprocess.run(["git", "push", "-q", "--force", "origin", f"{start}:main"],
                               cwd=clone, check=True)
                return
            newer_tags(work / "registry" / "data", args.policies, args.tags, round_)
            subprocess.run(["git", "fetch", "-q", "origin"], cwd=clone, check=True)

        invoke("plan")  # warm: the first clone of the workspace is not a cycle's cost
        if args.between == "idle":  # every policy current from the first timed round on
            invoke("run", "--once")
            between(0)
        for round_ in range(1, args.history + 1):
            invoke("run", "--once")
            between(round_)
        floors, pushing, plans, runs, parses = [], [], [], [], []
        publish_floor(pusher, args.policies, 0)  # the ref exists: later pushes add a commit
        for round_ in range(args.history + 1, args.history + args.rounds + 1):
            floors.append(floor(served, clone, args.policies))
            pushing.append(floors[-1] + publish_floor(pusher, args.policies, round_))
            cold()
            composed.clear()
            plans.append(timed(lambda: invoke("plan")))
            parses.append((len(composed), len(set(composed))))
            cold()
            runs.append(timed(lambda: invoke("run", "--once")))
            between(round_)
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(invoke, *(["plan"] if args.profile == "plan" else
                                      ["run", "--once"]))
            pstats.Stats(profile).sort_stats("cumulative").print_stats("image_bot|git", 60)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        base, pushed, plan, run = (statistics.median(x) for x in (floors, pushing, plans, runs))
        for name, times in (("floor", floors), ("floor with a push", pushing), ("plan", plans),
                            ("run --once", runs)):
            print(f"{name} rounds (ms): {', '.join(f'{t * 1000:.0f}' for t in times)}")
        print(f"policies: {args.policies}, tags each: {args.tags}, rounds: {args.rounds}, "
              f"YAML parser: {args.parser}, between rounds: {args.between}, bot commits "
              f"before: {args.history}, latency added: {args.latency:g} ms")
        print(f"floor (concurrent tags/list + git fetch + read every file), median: "
              f"{base * 1000:.0f} ms")
        print(f"plan, median: {plan * 1000:.0f} ms  ratio to floor: {plan / base:.2f}"
              f"{_per_round(plans, floors)}")
        print(f"run --once (edit, commit, push), median: {run * 1000:.0f} ms  "
              f"ratio to floor: {run / base:.2f}{_per_round(runs, floors)}")
        print(f"floor with a push (+ rewrite {args.policies} files, git commit -a, git push), "
              f"median: {pushed * 1000:.0f} ms  run --once to it: {run / pushed:.2f}"
              f"{_per_round(runs, pushing)}")
        total, distinct = parses[-1]
        print(f"YAML texts composed in one plan: {total} ({distinct} distinct)")
        return 0
    finally:
        for proxy in proxies:
            proxy.terminate()
        git.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
