"""The daemon's scheduler: when each policy is scanned, and how many scans run at once.

Sits above ``engine.cycle`` (it calls ``cycle.run_repository`` with the process's one
``Engine`` and a selection of policies, like ``run --once`` does) and below the server
(which only calls the non-blocking ``request_*`` methods). Rules:

- every policy is polled on its own ``interval``, spread by ± ``jitter`` so that a fleet of
  policies with the same interval does not hit a registry at the same second;
- a webhook event enqueues the policies of one image; events arriving within ``debounce``
  seconds of the first (or while that repository is busy) join the same scan;
- one scan per repository at a time (they share a clone), at most ``max_concurrent_scans``
  overall and ``registry_concurrency[host]`` per registry;
- the policy files are re-read every ``reload_interval`` (or on a forge push event); new or
  changed policies are scanned at once, removed ones are dropped;
- a scan that failed for a temporary reason with a ``retry_after`` (a registry's 429, a
  forge's rate limit) is retried after that delay instead of a whole interval;
- ``stop()`` starts no new scan; running ones get ``grace`` seconds to finish (a cycle
  edits only the cached clone until its push, and the clone is reset before every cycle,
  so an abandoned cycle leaves nothing half-written in Git).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from image_bot import logs
from image_bot.config import durations, loading
from image_bot.engine import cycle, reporting, selecting, waking
from image_bot.engine.context import Engine
from image_bot.engine.report import CycleReport, RepositoryReport
from image_bot.errors import ConfigError
from image_bot.publish import workspace as workspaces

log = logs.logger("scheduler")
_MAX_SLEEP = 30.0
MIN_INTERVAL = 1.0  # seconds; shorter intervals are raised to this


@dataclass(frozen=True, slots=True)
class Entry:
    """One scheduled policy."""

    repository: int  # index into config.repositories
    name: str
    image: str  # host/repository
    host: str
    interval: float  # seconds
    fingerprint: str  # changes when the policy document changes
    upstream: str | None = None  # select.promote.from: scanned when that stage deploys


class Scheduler:
    """Runs scans of a bot config's policies, on intervals and on request."""

    def __init__(self, engine: Engine, *, shard: selecting.Shard | None = None,
                 polling: bool = True, interval: float | None = None,
                 clock: Callable[[], float] | None = None,
                 rng: random.Random | None = None) -> None:
        self.engine = engine
        self.config = config = engine.config
        self.shard = shard
        self.polling = polling
        self._settings = config.daemon
        self._interval_override = interval
        self._clock, self._rng = clock or engine.clock.monotonic, rng or random.Random()
        indexes = range(len(config.repositories))
        self._entries: dict[int, dict[str, Entry]] = {i: {} for i in indexes}
        # by repository: the fingerprint of its policy files when last loaded, and what they
        # loaded to
        self._loaded: dict[int, tuple[str, loading.PolicySet]] = {}
        self._due: dict[tuple[int, str], float] = {}
        # promoting policies to look at then (a soak ends, the upstream deployed): in every
        # mode, also without interval polling (`image-bot webhook`)
        self._timers: dict[tuple[int, str], float] = {}
        self._requested: dict[int, set[str]] = {i: set() for i in indexes}
        self._ready_at: dict[int, float] = {}
        self._reload_at: dict[int, float] = dict.fromkeys(indexes, 0.0)
        self._busy: set[int] = set()
        # repositories of one URL (other branches) share one clone: never two jobs in it at
        # once (a fetch and reset under another's edit)
        self._clone = {i: workspaces.location(r.url, config.state_dir)
                       for i, r in enumerate(config.repositories)}
        self._track: set[int] = set()  # repositories an agent just reported on
        self._tasks: set[asyncio.Task[None]] = set()
        self._global = asyncio.Semaphore(self._settings.max_concurrent_scans)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._attempted: set[int] = set()
        self.scans = 0  # finished scans, for tests and benchmarks

    # --- requests from outside: never block, never touch a registry or Git ----------------

    @property
    def ready(self) -> bool:
        """Every repository's policies were read once (or failed to be: a broken repository
        is reported in logs, metrics and the status page, not by withholding readiness)."""
        return len(self._attempted) == len(self.config.repositories)

    @property
    def entries(self) -> list[Entry]:
        return [e for entries in self._entries.values() for e in entries.values()]

    def request_image(self, image: str) -> list[str]:
        """Enqueue a scan of the policies for ``image`` (``host/repository``); their names."""
        ready_at = self._clock() + self._settings.debounce
        names: list[str] = []
        for index, entries in self._entries.items():
            hits = [e.name for e in entries.values() if e.image == image]
            if hits:
                self._requested[index].update(hits)
                self._ready_at.setdefault(index, ready_at)
                names += hits
        if names:
            self.engine.metrics.queued.set(sum(map(len, self._requested.values())))
            self._wake.set()
        return names

    def request_tracking(self, repository: str, branch: str) -> bool:
        """Follow the bot's commits in ``repository`` (an agent reported on it): a scan of
        no policy, which judges deployments and rolls back degraded ones. False when no
        configured repository matches."""
        hits = [i for i, repo in enumerate(self.config.repositories)
                if repo.branch == branch
                and reporting.same_repository(workspaces.redact(repo.url), repository)]
        for index in hits:
            self._track.add(index)
        if hits:
            self._wake.set()
        return bool(hits)

    def request_reload(self) -> None:
        """Re-read every repository's policy files now, and wake the sync agents that
        share the state dir (a forge push event)."""
        for index in self._reload_at:
            self._reload_at[index] = 0.0
        self._wake.set()
        try:
            waking.request_sync(self.config.state_dir)
        except OSError as exc:  # the reload still happens; the agent keeps its interval
            log.warning("could not wake the sync agent: %s", exc)

    def stop(self) -> None:
        """Start nothing new; ``run`` returns once running scans finish (or grace ends)."""
        self._stopping = True
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                now = self._clock()
                self._launch(now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._next_wake(now))
        finally:
            await self._drain()

    def _occupied(self, index: int) -> bool:
        """A job runs on this repository, or on another one of its clone."""
        return any(self._clone[busy] == self._clone[index] for busy in self._busy)

    def _launch(self, now: float) -> None:
        for index in self._entries:
            if self._occupied(index):
                continue
            reload = self._reload_at[index] <= now
            names: set[str] = set()
            if self._ready_at.get(index, math.inf) <= now:
                names |= self._requested[index]
                self._requested[index] = set()
                del self._ready_at[index]
                trigger = "webhook"
            else:
                trigger = "interval"
            if self.polling:
                names |= {n for n in self._entries[index] if self._due[(index, n)] <= now}
            timed = {n for (i, n), at in self._timers.items() if i == index and at <= now}
            for name in timed:
                del self._timers[(index, name)]
            names |= timed & set(self._entries[index])
            track = index in self._track
            self._track.discard(index)
            if track and not names:
                trigger = "agent"
            if reload or names or track:
                self._busy.add(index)
                task = asyncio.create_task(self._job(index, names, reload=reload,
                                                     trigger=trigger, track=track))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self.engine.metrics.queued.set(sum(map(len, self._requested.values())))

    def _next_wake(self, now: float) -> float:
        times = list(self._ready_at.values())
        if any(not self._occupied(i) for i in self._track):
            times.append(now)
        idle = [i for i in self._entries if not self._occupied(i)]
        times += [self._reload_at[i] for i in idle]
        if self.polling:
            times += [self._due[(i, n)] for i in idle for n in self._entries[i]]
        times += [at for (i, _), at in self._timers.items() if i in idle]
        return min(max(min(times, default=now + _MAX_SLEEP) - now, 0.0), _MAX_SLEEP)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info("waiting for running scans to finish", extra={"count": len(self._tasks)})
        _, pending = await asyncio.wait(set(self._tasks), timeout=self._settings.grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("abandoned scans after the grace period; the next run redoes them",
                        extra={"count": len(pending)})
            await asyncio.wait(pending)

    # --- one job: reload and/or scan one repository ---------------------------------------

    async def _job(self, index: int, names: set[str], *, reload: bool, trigger: str,
                   track: bool = False) -> None:
        repository = workspaces.redact(self.config.repositories[index].url)
        checkout = None
        try:
            if reload:
                self._reload_at[index] = self._clock() + self._settings.reload_interval
                checkout, changed = await self._reload(index)
                if self.polling:
                    names |= changed
            names &= set(self._entries[index])
            if (names or track) and not self._stopping:
                await self._scan(index, names, trigger=trigger, checkout=checkout)
        except Exception as exc:  # one repository's failure never stops the others
            self.engine.record_failure(repository, exc)
        finally:
            if reload:
                self._attempted.add(index)
            self._busy.discard(index)
            self._wake.set()

    async def _scan(self, index: int, names: set[str], *, trigger: str,
                    checkout: cycle.Checkout | None = None) -> None:
        entries = [self._entries[index][n] for n in sorted(names)]
        retry_after = None
        rechecks: dict[str, float] = {}
        try:
            async with self._global, contextlib.AsyncExitStack() as stack:
                for host in sorted({e.host for e in entries}):
                    await stack.enter_async_context(self._host_limit(host))
                started = self._clock()
                requests = self.engine.client.requests
                report = await cycle.run_repository(
                    self.engine, self.config.repositories[index], checkout=checkout,
                    selection=selecting.Selection(policies=frozenset(names)))
                seconds = self._clock() - started
                retry_after = report.retry_after
            rechecks = {o.policy: o.recheck_after for o in report.outcomes
                        if o.recheck_after is not None}
        finally:
            now = self._clock()
            for entry in entries:
                wait = self._jittered(entry.interval)
                if retry_after is not None:  # a temporary failure said when to come back
                    wait = min(wait, max(retry_after, MIN_INTERVAL))
                self._due[(index, entry.name)] = now + wait
                if entry.name in rechecks:  # a promotion soak ends: look again then
                    self._timers[(index, entry.name)] = now + max(rechecks[entry.name],
                                                                  MIN_INTERVAL)
        self.scans += 1
        self._promote_after(report)
        if trigger == "agent" and not (report.outcomes or report.commits or report.errors
                                       or report.transitions):
            return  # an agent's report that changed nothing is not worth a history line
        self.engine.record(CycleReport((report,), registry_requests=(
            self.engine.client.requests - requests)), trigger=trigger, seconds=seconds)

    def _promote_after(self, report: RepositoryReport) -> None:
        """A stage that just deployed: the stages promoting from it look now (their scan
        says when the soak ends)."""
        deployed = {t.policy for t in report.transitions if t.state == "deployed"}
        if not deployed:
            return
        now = self._clock()
        for index, entries in self._entries.items():
            for entry in entries.values():
                if entry.upstream in deployed:
                    self._timers[(index, entry.name)] = now
        self._wake.set()

    def _host_limit(self, host: str) -> asyncio.Semaphore:
        if host not in self._hosts:
            limit = self._settings.registry_concurrency.get(
                host, self._settings.default_registry_concurrency)
            self._hosts[host] = asyncio.Semaphore(limit)
        return self._hosts[host]

    def _jittered(self, interval: float) -> float:
        spread = self._settings.jitter
        return interval * (1.0 + self._rng.uniform(-spread, spread))

    async def _reload(self, index: int) -> tuple[cycle.Checkout | None, set[str]]:
        """Re-read the policies of one repository (through the engine, with the repository's
        credentials): the checkout, for a scan in the same job (which then fetches nothing
        again), and the names that are new or changed. Unchanged policy files are not parsed
        again: the checkout holds the policies loaded from the same bytes before."""
        repo = self.config.repositories[index]
        repository = workspaces.redact(repo.url)
        ws = await asyncio.to_thread(self.engine.workspace, repo)
        source = ws.root / repo.policies
        limit = self.config.limits.max_file_bytes
        fingerprint = await asyncio.to_thread(loading.fingerprint, source, display_root=ws.root,
                                              max_file_bytes=limit)
        loaded = self._loaded.get(index)
        if loaded is not None and loaded[0] == fingerprint:
            return cycle.Checkout(ws, loaded[1]), set()
        policy_set = await asyncio.to_thread(loading.load_policies, source,
                                             display_root=ws.root, max_file_bytes=limit)
        fresh = {e.name: e for e in self._entries_of(index, repository, policy_set)}
        old = self._entries[index]
        changed = {name for name, entry in fresh.items() if old.get(name) != entry}
        now = self._clock()
        for name in set(old) - set(fresh):
            del self._due[(index, name)]
        for name in changed:
            self._due[(index, name)] = now + self._jittered(fresh[name].interval)
        self._entries[index], self._loaded[index] = fresh, (fingerprint, policy_set)
        self.engine.metrics.policies.set(len(self.entries))
        self.engine.record_reload(repository, policy_set, scheduled=len(fresh),
                                  changed=sorted(changed), removed=sorted(set(old) - set(fresh)))
        return cycle.Checkout(ws, policy_set), changed

    def _entries_of(self, index: int, repository: str,
                    policy_set: loading.PolicySet) -> Iterable[Entry]:
        for loaded in policy_set.policies:
            policy = loaded.policy
            if self.shard and not self.shard.owns(repository, policy.name):
                continue
            try:
                interval = self._interval_override or durations.parse(policy.spec.interval)
            except durations.InvalidDuration as exc:
                raise ConfigError(f"{loaded.where('spec.interval')}: {exc}") from None
            interval = max(interval, MIN_INTERVAL)  # "0s" must not become a busy loop
            image = policy.spec.image_ref
            fingerprint = hashlib.sha256(policy.model_dump_json().encode()).hexdigest()
            promote = policy.spec.select.promote
            yield Entry(index, policy.name, image.name, image.host, interval, fingerprint,
                        promote.from_ if promote else None)
