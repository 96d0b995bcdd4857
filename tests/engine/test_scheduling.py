"""Scheduling: intervals with jitter, concurrency caps, shards, and a graceful stop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli, errors
from image_bot.config import durations, loading, models
from image_bot.engine import context, cycle, scheduling, selecting
from image_bot.engine.report import PolicyOutcome, RepositoryReport, Transition
from image_bot.publish import workspace as workspaces


def test_durations() -> None:
    assert [durations.parse(t) for t in ("500ms", "30s", "5m", "1.5h")] == [
        0.5, 30.0, 300.0, 5400.0]
    with pytest.raises(ValueError, match="'5 minutes' is not a duration"):
        durations.parse("5 minutes")


def test_shards_split_policies_exactly_once_and_stably() -> None:
    names = [f"policy-{n}" for n in range(300)]
    shards = [selecting.Shard(i, 3) for i in range(3)]
    owners = [[s for s in shards if s.owns("https://git/x.git", n)] for n in names]
    assert all(len(found) == 1 for found in owners)
    sizes = [sum(1 for found in owners if found[0] is s) for s in shards]
    assert min(sizes) > 70  # roughly even
    # the hash is fixed: the same policy lands on the same shard in every process/version
    # (documented in docs/operations.md: sha256 of "<repository>\0<policy>", first 8 bytes)
    digest = hashlib.sha256(b"https://git/x.git\0web").digest()
    assert selecting.shard_of("https://git/x.git", "web", 4) == int.from_bytes(
        digest[:8], "big") % 4
    assert selecting.parse_shard(" 1 / 4 ") == selecting.Shard(1, 4)
    assert selecting.shard_from_env({"JOB_COMPLETION_INDEX": "2",
                                     "JOB_COMPLETIONS": "5"}) == selecting.Shard(2, 5)
    assert selecting.shard_from_env({}) is None
    for bad, message in [("3/3", "need 0 <= I < N"), ("a/b", "expected I/N"),
                         ("0/0", "need 0 <= I < N")]:
        with pytest.raises(selecting.InvalidShard, match=message):
            selecting.parse_shard(bad)


def test_selection_reports_broken_files_only_once() -> None:
    assert selecting.Selection().reports_load_errors
    assert selecting.Selection(shard=selecting.Shard(0, 2)).reports_load_errors
    assert not selecting.Selection(shard=selecting.Shard(1, 2)).reports_load_errors
    assert not selecting.Selection(images=frozenset({"h.io/a"})).reports_load_errors


def _repo_config(urls: list[str], host: str, state_dir: Path, **daemon: Any) -> (
        models.BotConfig):
    return models.BotConfig.model_validate(testing.bot_config(
        urls, registries=[host], state_dir=state_dir, daemon=daemon))


def test_polling_picks_up_a_new_tag_on_the_policy_interval(
        registry: devservers.Registry, git_server: devservers.GitServer,
        config_repo: Callable[[dict[str, str]], str], tmp_path: Path) -> None:
    image = f"poll{time.monotonic_ns()}"
    devservers.push_image(registry.url, f"team/{image}", "1.0.0")
    url = config_repo({
        "deploy/a.yaml": f"image: {registry.host}/team/{image}:1.0.0\n",
        "policies/a.yaml": testing.policy("a", f"{registry.host}/team/{image}", interval="1s"),
    })
    bare = git_server.root / url.rsplit("/", 1)[1]
    config = _repo_config([url], registry.host, tmp_path, jitter=0.2)

    async def scenario() -> float:
        async with context.Engine.open(config) as engine:
            scheduler = scheduling.Scheduler(engine)
            running = asyncio.create_task(scheduler.run())
            await testing.until(lambda: scheduler.ready)
            [entry] = scheduler.entries
            assert entry.interval == 1.0
            await testing.until(lambda: scheduler.scans >= 1)  # the start-up scan: nothing new
            devservers.push_image(registry.url, f"team/{image}", "1.1.0")
            pushed = time.monotonic()
            await testing.until(lambda: "1.1.0" in devservers.git(
                "show", "main:deploy/a.yaml", cwd=bare))
            seconds = time.monotonic() - pushed
            scheduler.stop()
            await running
            return seconds

    assert asyncio.run(scenario()) < 1.2 + 1.0  # interval + jitter + one scan


def test_jitter_spreads_intervals_within_bounds(tmp_path: Path) -> None:
    config = _repo_config(["file:///x"], "h.io", tmp_path, jitter=0.1)

    async def spreads() -> list[float]:
        async with context.Engine.open(config) as engine:
            scheduler = scheduling.Scheduler(engine, rng=random.Random(7))
            return [scheduler._jittered(300.0) for _ in range(500)]

    values = asyncio.run(spreads())
    assert 270.0 <= min(values) < 275.0 and 325.0 < max(values) <= 330.0


class _SlowCycle:
    """Stands in for ``cycle.run_repository`` to observe how many scans overlap (no Git, no
    I/O)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.finished: list[frozenset[str]] = []

    async def __call__(self, engine: context.Engine, repo: models.RepositoryConfig,
                       **kwargs: Any) -> RepositoryReport:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(self.seconds)
        self.running -= 1
        policies = kwargs["selection"].policies
        self.finished.append(policies)
        return RepositoryReport(repo.url, "main")


def _scheduler_with(engine: context.Engine, entries: dict[int, list[str]],
                    host: str) -> scheduling.Scheduler:
    scheduler = scheduling.Scheduler(engine, polling=False)
    for index, names in entries.items():
        scheduler._entries[index] = {
            n: scheduling.Entry(index, n, f"{host}/{n}", host, 3600.0, "f") for n in names}
        scheduler._attempted.add(index)
        scheduler._reload_at[index] = float("inf")
    return scheduler


@pytest.mark.parametrize(("daemon", "most"), [
    ({"max_concurrent_scans": 1}, 1),
    ({"max_concurrent_scans": 4, "default_registry_concurrency": 2}, 2),
    ({"max_concurrent_scans": 4, "registry_concurrency": {"h.io": 3}}, 3),
])
def test_global_and_per_registry_caps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      daemon: dict[str, Any], most: int) -> None:
    slow = _SlowCycle(0.2)
    monkeypatch.setattr(cycle, "run_repository", slow)
    config = _repo_config([f"file:///repo{i}" for i in range(4)], "h.io", tmp_path,
                          debounce=0.0, **daemon)

    async def scenario() -> None:
        async with context.Engine.open(config) as engine:
            scheduler = _scheduler_with(engine, {i: [f"p{i}"] for i in range(4)},
                                        "h.io")
            running = asyncio.create_task(scheduler.run())
            for i in range(4):
                assert scheduler.request_image(f"h.io/p{i}") == [f"p{i}"]
            await testing.until(lambda: scheduler.scans == 4)
            scheduler.stop()
            await running

    asyncio.run(scenario())
    assert slow.most == most


def test_one_scan_per_repository_at_a_time_and_events_meanwhile_join_the_next(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    slow = _SlowCycle(0.3)
    monkeypatch.setattr(cycle, "run_repository", slow)
    config = _repo_config(["file:///repo"], "h.io", tmp_path, debounce=0.0)

    async def scenario() -> None:
        async with context.Engine.open(config) as engine:
            scheduler = _scheduler_with(engine, {0: ["a", "b", "c"]}, "h.io")
            running = asyncio.create_task(scheduler.run())
            scheduler.request_image("h.io/a")
            await testing.until(lambda: slow.running == 1)  # "a" runs; b and c wait for it
            scheduler.request_image("h.io/b")
            scheduler.request_image("h.io/c")
            await testing.until(lambda: scheduler.scans == 2)
            scheduler.stop()
            await running

    asyncio.run(scenario())
    assert slow.most == 1
    assert slow.finished == [frozenset({"a"}), frozenset({"b", "c"})]


def test_two_branches_of_one_url_share_a_clone_and_never_scan_at_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One clone per URL: its jobs wait for each other (a fetch or reset of one branch
    under the other's edit); another repository's job runs alongside."""
    slow = _SlowCycle(0.2)
    in_clone: dict[str, int] = {}
    most_in_clone: dict[str, int] = {}

    async def observed(engine: context.Engine, repo: models.RepositoryConfig,
                       **kwargs: Any) -> RepositoryReport:
        in_clone[repo.url] = in_clone.get(repo.url, 0) + 1
        most_in_clone[repo.url] = max(most_in_clone.get(repo.url, 0), in_clone[repo.url])
        try:
            return await slow(engine, repo, **kwargs)
        finally:
            in_clone[repo.url] -= 1

    monkeypatch.setattr(cycle, "run_repository", observed)
    config = _repo_config([{"url": "file:///shared", "branch": "main"},
                           {"url": "file:///shared", "branch": "staging"},
                           {"url": "file:///other"}], "h.io", tmp_path, debounce=0.0)

    async def scenario() -> None:
        async with context.Engine.open(config) as engine:
            scheduler = _scheduler_with(engine, {0: ["a"], 1: ["b"], 2: ["c"]}, "h.io")
            running = asyncio.create_task(scheduler.run())
            for name in ("a", "b", "c"):
                scheduler.request_image(f"h.io/{name}")
            await testing.until(lambda: scheduler.scans == 3)
            scheduler.stop()
            await running

    asyncio.run(scenario())
    assert sorted(sorted(names) for names in slow.finished) == [["a"], ["b"], ["c"]]
    assert most_in_clone == {"file:///shared": 1, "file:///other": 1}
    assert slow.most == 2  # the other repository's scan ran alongside


def test_stop_lets_a_running_scan_finish_within_the_grace_period(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    slow = _SlowCycle(0.5)
    monkeypatch.setattr(cycle, "run_repository", slow)
    config = _repo_config(["file:///repo"], "h.io", tmp_path, debounce=0.0, grace=5.0)

    async def scenario() -> None:
        async with context.Engine.open(config) as engine:
            scheduler = _scheduler_with(engine, {0: ["a"]}, "h.io")
            running = asyncio.create_task(scheduler.run())
            scheduler.request_image("h.io/a")
            await testing.until(lambda: slow.running == 1)
            scheduler.stop()
            scheduler.request_image("h.io/a")  # too late: nothing new starts
            await running
            assert scheduler.scans == 1

    asyncio.run(scenario())
    assert slow.finished == [frozenset({"a"})]


@pytest.mark.e2e
def test_run_once_shards_split_the_work_between_instances(
        registry: devservers.Registry, git_server: devservers.GitServer,
        config_repo: Callable[[dict[str, str]], str], bot_config: Callable[..., Path]) -> None:
    prefix = f"shard{time.monotonic_ns()}"
    files = {}
    names = [f"{prefix}-{n}" for n in range(8)]
    for name in names:
        for tag in ("1.0.0", "1.1.0"):
            devservers.push_image(registry.url, f"team/{name}", tag)
        files[f"deploy/{name}.yaml"] = f"image: {registry.host}/team/{name}:1.0.0\n"
        files[f"policies/{name}.yaml"] = testing.policy(name, f"{registry.host}/team/{name}",
                                                        interval="5m")
    url = config_repo(files)
    bare = git_server.root / url.rsplit("/", 1)[1]
    config = str(bot_config(url, registries=[{"host": registry.host, "insecure": True}]))
    repository = url  # no credentials in the URL: the shard key is the URL as written

    def updated() -> set[str]:
        return {n for n in names
                if ":1.1.0" in devservers.git("show", f"main:deploy/{n}.yaml", cwd=bare)}

    first = CliRunner().invoke(cli.main, ["run", "--once", "--json", "--shard", "0/2",
                                          "--config", config])
    assert first.exit_code == 0, first.output
    owned = {n for n in names if selecting.shard_of(repository, n, 2) == 0}
    assert updated() == owned
    second = CliRunner(env={"JOB_COMPLETION_INDEX": "1", "JOB_COMPLETIONS": "2"}).invoke(
        cli.main, ["run", "--once", "--json", "--config", config])
    assert second.exit_code == 0, second.output
    assert updated() == set(names)
    done = {o["policy"] for r in json.loads(second.output)["repositories"]
            for o in r["outcomes"]}
    assert done == set(names) - owned
    bad = CliRunner().invoke(cli.main, ["run", "--once", "--shard", "2/2", "--config", config])
    assert bad.exit_code == 2
    assert "shard 2/2: need 0 <= I < N" in bad.output


def test_a_broken_policy_file_is_skipped_and_a_zero_interval_is_not_a_busy_loop(
        registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
        tmp_path: Path) -> None:
    url = config_repo({
        "policies/fast.yaml": testing.policy("fast", f"{registry.host}/team/fast", interval="0s"),
        "policies/broken.yaml": "apiVersion: image-bot/v1\nkind: ImagePolicy\nmetadata: [\n",
    })
    config = _repo_config([url], registry.host, tmp_path)

    async def scenario() -> tuple[list[scheduling.Entry], str, list[dict[str, Any]]]:
        async with context.Engine.open(config) as engine:
            state, metrics = engine.state, engine.metrics
            scheduler = scheduling.Scheduler(engine, polling=False)
            running = asyncio.create_task(scheduler.run())
            await testing.until(lambda: scheduler.ready)
            scheduler.stop()
            await running
            events = [data for _, kind, data in state.events() if kind == "reload"]
            return scheduler.entries, metrics.exposition().decode(), events

    entries, text, [reload] = asyncio.run(scenario())
    assert [(e.name, e.interval) for e in entries] == [("fast", scheduling.MIN_INTERVAL)]
    assert 'image_bot_errors_total{kind="config"} 1.0' in text
    [error] = reload["errors"]
    assert error.startswith("==> File policies/broken.yaml: invalid YAML")


@pytest.mark.parametrize(("error", "due"), [
    (errors.RegistryUnavailable("registry h.io: HTTP 429", retry_after=7.0), 107.0),
    (errors.RegistryUnavailable("registry h.io: HTTP 503"), 3700.0),  # no hint: interval
    (errors.ConfigError("==> File p.yaml: bad"), 3700.0),  # permanent: nothing to retry
])
def test_a_temporary_failure_with_retry_after_is_scanned_again_sooner(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: errors.ImageBotError,
        due: float) -> None:
    async def failing(engine: context.Engine, repo: models.RepositoryConfig,
                      **kwargs: Any) -> RepositoryReport:
        return RepositoryReport(repo.url, "main", errors=(error,))

    monkeypatch.setattr(cycle, "run_repository", failing)
    config = _repo_config(["file:///repo"], "h.io", tmp_path, jitter=0.0)

    async def scenario() -> float:
        async with context.Engine.open(config) as engine:
            scheduler = scheduling.Scheduler(engine, polling=False, clock=lambda: 100.0)
            scheduler._entries[0] = {"a": scheduling.Entry(0, "a", "h.io/a", "h.io", 3600.0,
                                                           "f")}
            await scheduler._scan(0, {"a"}, trigger="interval")
            return scheduler._due[(0, "a")]

    assert asyncio.run(scenario()) == due


def test_a_promoting_stage_is_scanned_when_its_soak_ends_and_when_its_upstream_deploys(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    deployed = Transition("deployed", "file:///repo", "staging", "h.io/a", "1.0.0", "1.1.0",
                          "c0ffee", "stg-1")
    soaking = PolicyOutcome("prod", "p.yaml", "current", recheck_after=5.0)

    async def scanned(engine: context.Engine, repo: models.RepositoryConfig,
                      **kwargs: Any) -> RepositoryReport:
        staging = "staging" in kwargs["selection"].policies
        return RepositoryReport(repo.url, "main", outcomes=() if staging else (soaking,),
                                transitions=(deployed,) if staging else ())

    monkeypatch.setattr(cycle, "run_repository", scanned)
    config = _repo_config(["file:///repo"], "h.io", tmp_path, jitter=0.0)
    now = [100.0]

    async def scenario() -> dict[str, Any]:
        async with context.Engine.open(config) as engine:
            # webhook-only (no interval polling): the promotion still gets its scans
            scheduler = scheduling.Scheduler(engine, polling=False, clock=lambda: now[0])
            scheduler._entries[0] = {
                name: scheduling.Entry(0, name, "h.io/a", "h.io", 3600.0, "f", upstream)
                for name, upstream in [("staging", None), ("prod", "staging"),
                                       ("other", "dev")]}
            scheduler._reload_at[0] = 1e9
            # prod's own scan: its soak ends in 5 s, long before its interval
            await scheduler._scan(0, {"prod"}, trigger="interval")
            soak = dict(scheduler._timers)
            wake = scheduler._next_wake(now[0])
            # staging's scan saw it deployed: prod looks now, a policy of another stage not
            await scheduler._scan(0, {"staging"}, trigger="interval")
            deploy = dict(scheduler._timers)
            launched: list[set[str]] = []

            async def job(index: int, names: set[str], **kwargs: Any) -> None:
                launched.append(names)
            monkeypatch.setattr(scheduler, "_job", job)
            scheduler._launch(now[0])
            await asyncio.sleep(0)
            return {"soak": soak, "wake": wake, "deploy": deploy, "launched": launched,
                    "left": dict(scheduler._timers)}

    assert asyncio.run(scenario()) == {
        "soak": {(0, "prod"): 105.0}, "wake": 5.0,
        "deploy": {(0, "prod"): 100.0}, "launched": [{"prod"}], "left": {}}


def test_a_job_that_reloads_and_scans_fetches_once(
        registry: devservers.Registry, git_server: devservers.GitServer,
        config_repo: Callable[[dict[str, str]], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reload's checkout serves the scan of the same job, whether the policy files
    changed or not (unchanged: the policies loaded before from the same bytes); the scan
    does not fetch again, and still sees what the registry has now."""
    image = f"once{time.monotonic_ns()}"
    devservers.push_image(registry.url, f"team/{image}", "1.0.0")
    url = config_repo({
        "deploy/a.yaml": f"image: {registry.host}/team/{image}:1.0.0\n",
        "policies/a.yaml": testing.policy("a", f"{registry.host}/team/{image}"),
    })
    bare = git_server.root / url.rsplit("/", 1)[1]
    config = _repo_config([url], registry.host, tmp_path)
    opened = testing.recorded(monkeypatch, workspaces.Workspace, "open")
    parsed = testing.recorded(monkeypatch, loading, "_policies_in")

    async def jobs() -> None:
        async with context.Engine.open(config) as engine:
            scheduler = scheduling.Scheduler(engine)
            await scheduler._job(0, {"a"}, reload=True, trigger="test")  # loads, scans
            assert (len(opened), len(parsed), scheduler.scans) == (1, 1, 1)
            devservers.push_image(registry.url, f"team/{image}", "1.1.0")
            await scheduler._job(0, {"a"}, reload=True, trigger="test")  # same files
            assert (len(opened), len(parsed), scheduler.scans) == (2, 1, 2)

    asyncio.run(jobs())
    assert f"team/{image}:1.1.0" in devservers.git("show", "main:deploy/a.yaml", cwd=bare)
