"""One cycle: Git → policies → registry tags → decisions → file edits → commit, push or PR.

This is the only module that composes the stages; each step below calls one of them.
Every mode runs through :func:`run_repository` with the process's one
:class:`~image_bot.engine.context.Engine`: ``run --once`` and ``plan`` loop over the
repositories (:func:`run_once`), the daemon's scheduler calls it per repository.
A failure in one policy is recorded and the others go on; a failure of the repository
itself (cannot fetch, cannot push) fails that repository and changes nothing in Git.
Declined versions (PRs closed unmerged, human rollbacks) are kept in ``image_bot.state``
and kept out of the policy's choice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import functools
import itertools
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar, overload

from image_bot import refs
from image_bot.config import durations, loading, models, schedules
from image_bot.engine import dashboarding, promotion, ranking, selecting, tracking
from image_bot.engine.context import Engine
from image_bot.engine.overrides import Override
from image_bot.engine.report import (
    CycleReport,
    PolicyOutcome,
    PullRequestResult,
    RepositoryReport,
    Status,
)
from image_bot.errors import (
    ConfigError,
    ImageBotError,
    PushRejected,
    RegistryError,
    UpdateError,
    UsageError,
)
from image_bot.policy import strategies, versions
from image_bot.publish import committing, forges, messages, proposing, publishing
from image_bot.publish import workspace as workspaces
from image_bot.registry import client as registry
from image_bot.update import rewriting, scanning
from image_bot.update.result import Change, Skipped, UpdateResult

E = TypeVar("E", bound=ImageBotError)
_TAG_LISTS_AT_ONCE = 32  # images whose tags are fetched concurrently


@dataclass(frozen=True, slots=True)
class _Planned:
    """A policy that loaded and built, with the tags of its image (or why they are missing)."""

    loaded: loading.LoadedPolicy
    policy: strategies.Policy
    tags: Sequence[str | strategies.Candidate] | None
    error: ImageBotError | None
    declined: frozenset[str] = field(default_factory=frozenset)
    promotion: promotion.Promotion | None = None  # select.promote: what upstream allows
    override: Override | None = None  # an operator's tag, written instead of the choice
    streamed: bool = False  # its tags are listed when it is decided, then dropped (_update)
    bot_write: committing.Write | None = None  # the bot's last write, not yet checked for
    # a human's rollback (:func:`_with_rollback`, when the policy is decided)

    @property
    def name(self) -> str:
        return self.loaded.policy.name

    @property
    def publish(self) -> models.Publish:
        return self.loaded.policy.spec.publish


@dataclass(frozen=True, slots=True)
class Checkout:
    """A config repository's clone at its remote tip and the policies read from it (once)."""

    workspace: workspaces.Workspace
    policies: loading.PolicySet


async def run_once(engine: Engine, *, dry_run: bool = False,
                   selection: selecting.Selection = selecting.EVERYTHING) -> CycleReport:
    """Run every repository of the engine's config once; ``dry_run`` writes nothing to Git.

    ``selection`` narrows the run to some policies (a webhook's image, a shard).
    """
    before = engine.client.requests
    reports = [await run_repository(engine, repo, dry_run=dry_run, selection=selection)
               for repo in engine.config.repositories]
    return CycleReport(tuple(reports), dry_run=dry_run,
                       registry_requests=engine.client.requests - before)


async def open_repository(
        engine: Engine, repo: models.RepositoryConfig, *,
        ahead: Callable[[loading.PolicySet], None] | None = None) -> Checkout:
    """Fetch the repository (with its credentials) and read its policies.

    While the fetch waits on the network, the policies of the clone as the last cycle left
    it are parsed (read ahead) and given to ``ahead`` (which may start work they will
    likely need); once fetched, every policy file is read again and only one whose text
    changed is parsed again."""
    parsed: loading.Parsed = {}
    limit = engine.config.limits.max_file_bytes
    clone = workspaces.location(repo.url, engine.config.state_dir)
    documents = loading.Documents(clone.with_name(f"{clone.name}.policies.json"))
    # the fetch's thread first: git's wait is the longest
    fetching = asyncio.create_task(asyncio.to_thread(engine.workspace, repo))
    reading = asyncio.create_task(asyncio.to_thread(
        _read_ahead, clone, repo.policies, parsed, documents, limit))
    try:
        early = await reading
        if early is not None and ahead is not None:
            ahead(early)
    finally:
        ws = await fetching
    policies = await asyncio.to_thread(_load, ws.root, repo.policies, parsed, documents,
                                       limit)
    return Checkout(ws, policies)


def _read_ahead(clone: Path, policies: str, parsed: loading.Parsed,
                documents: loading.Documents, limit: int) -> loading.PolicySet | None:
    """Fill ``parsed`` from the policy files of an existing clone, before its fetch; its
    policies (None without a clone). Only a head start: whatever goes wrong here (no clone
    yet, a file being replaced) is found again, and reported, when the fetched files are
    loaded."""
    if (clone / ".git").is_dir():
        with contextlib.suppress(ImageBotError, OSError):
            return loading.load_policies(clone / policies, display_root=clone,
                                         max_file_bytes=limit, parsed=parsed,
                                         documents=documents)
    return None


def _images_ahead(policy_set: loading.PolicySet) -> list[refs.ImageRef]:
    """The images whose tags are listed while the repository is fetched: those of the first
    policies as the clone had them (suspended ones list nothing), as many as are listed at
    once. A fetch rarely changes them; a policy it removed costs one list for nothing."""
    images = dict.fromkeys(p.policy.spec.image_ref for p in policy_set.policies
                           if not p.policy.spec.suspend)
    return list(itertools.islice(images, _TAG_LISTS_AT_ONCE))


def _load(clone: Path, policies: str, parsed: loading.Parsed, documents: loading.Documents,
          limit: int) -> loading.PolicySet:
    """The policies of the fetched clone (files read ahead with the same text are not
    parsed again); their documents are kept for the next run."""
    documents.next_load()
    loaded = loading.load_policies(clone / policies, display_root=clone, max_file_bytes=limit,
                                   parsed=parsed, documents=documents)
    with contextlib.suppress(OSError):  # a cache: a run that cannot keep it loses nothing
        documents.save()
    return loaded


async def run_repository(engine: Engine, repo: models.RepositoryConfig, *,
                         selection: selecting.Selection = selecting.EVERYTHING,
                         dry_run: bool = False,
                         checkout: Checkout | None = None,
                         overrides: Mapping[str, Override] | None = None) -> RepositoryReport:
    """One scan of one repository: the whole pipeline, for the policies ``selection`` covers.

    ``checkout`` reuses a clone and policies the caller just read (the daemon's reload).
    ``overrides``: policy name → the tag an operator writes instead of the policy's choice
    (``image-bot promote``/``rollback``); it publishes now, even for a suspended policy.
    Without ``checkout``, the tags of the first images are listed while the repository is
    fetched (:func:`_images_ahead`).
    """
    name = workspaces.redact(repo.url)
    async with engine.client.listing_ahead() as start:
        def ahead(early: loading.PolicySet) -> None:
            start(_images_ahead(_select(early, name, selection)))

        if checkout is None:  # 1. the config repository at its remote tip, and its policies
            try:
                checkout = await open_repository(engine, repo, ahead=ahead)
            except ImageBotError as exc:
                return RepositoryReport(name, repo.branch, errors=(exc,))
        return await _scan(engine, repo, checkout, selection=selection, dry_run=dry_run,
                           overrides=overrides or {})


async def _scan(engine: Engine, repo: models.RepositoryConfig, checkout: Checkout, *,
                selection: selecting.Selection, dry_run: bool,
                overrides: Mapping[str, Override]) -> RepositoryReport:
    """:func:`run_repository` once the repository is open."""
    name = workspaces.redact(repo.url)
    forge = _Forge(repo, enabled=not dry_run)
    followed = RepositoryReport(name, repo.branch)
    last_writes: asyncio.Task[dict[tuple[str, str], committing.Write]] | None = None
    try:
        ws = checkout.workspace
        # 2. the selected policies; broken ones become failed outcomes
        planned, failed = _build_policies(_select(checkout.policies, name, selection),
                                          repo.branch)
        planned, suspended = _operated(planned, overrides)
        # 5 (asked now, used below). the bot's last writes: one `git log`, run meanwhile
        last_writes = asyncio.create_task(asyncio.to_thread(_bot_writes, engine, ws, planned))
        # 1b. the deploy loop: agents' reports judge earlier commits; degraded ones are
        # rolled back in Git and declined (before the policies below choose)
        if not dry_run:
            followed = await _follow(engine, repo, checkout, forge)
        async with registry.scan_deadline(repo.registry_deadline, repository=name):
            # 3. tags, once per image, concurrently: here for the policies that need them
            # before deciding (publish rules, metadata, promotions, operators); the others'
            # are listed as they are decided (8), each list dropped once decided
            planned = await _fetch_tags(engine.client, planned)
            # 3b. stages: a promoting policy keeps the tags its upstream ran healthy
            planned = _with_promotions(engine, planned, frozenset(
                p.policy.name for p in checkout.policies.policies))
            # 4. image metadata, only for policies whose `needs` ask for it
            planned = await _fetch_metadata(engine.client, planned)
        # 5. versions humans declined: the bot's last writes, each checked for a human's
        # rollback when its policy is decided (the deploy loop's rollbacks are no writes:
        # they decline what they roll back themselves)
        planned = _with_bot_writes(engine, planned, await last_writes)
    except ImageBotError as exc:
        return followed.combined(RepositoryReport(name, repo.branch, errors=(exc,)))
    finally:  # after a failure before it was waited for: its git log is left to finish
        if last_writes is not None and not last_writes.cancel() \
                and not last_writes.cancelled():
            last_writes.exception()  # done: what it raised is not "never retrieved"
    report = followed.combined(RepositoryReport(name, repo.branch,
                                                outcomes=(*failed, *suspended)))
    # 6. the dashboard (opt-in) is read first (its ticked boxes) and written last; a cleared
    # decline counts from this scan on
    board = None
    if repo.dashboard and not dry_run:
        try:
            board = await asyncio.to_thread(dashboarding.read, engine, _required(forge.get()),
                                            checkout.policies.policies)
        except ImageBotError as exc:
            report = report.combined(RepositoryReport(
                name, repo.branch, errors=(_prefixed(exc, prefix="dashboard"),)))
        planned = _attach_declined(planned, engine)
    approved = (board.approved if board else frozenset()) | frozenset(overrides)
    # the checkout as opened and followed, listed and read once for the rules and the first
    # batch (which finds it unchanged): each policy is scanned once
    index = _index(engine, ws)
    # 7. publish settings by update type (publish.rules): decide first, then batch
    try:
        planned = await asyncio.to_thread(_with_rules, engine, planned, index, repo.branch)
    except ImageBotError as exc:
        return report.combined(RepositoryReport(name, repo.branch, errors=(exc,)))
    # 8-10. decide, edit, publish: each mode in turn, one batch at a time; the checkout is
    # as opened (and followed) for the first batch, reset before each later one (a dry run
    # never changes it: every batch reads it through the same index)
    first = True
    parents: dict[str, tracking.Before] = {}  # commit pushed → its files before it
    registration = tracking.Registration(engine, repo, ws, checkout.policies)
    for mode_name, mode in publishing.MODES.items():
        members = [p for p in planned if p.publish.mode == mode_name]
        for key, names in mode.batches([p.loaded for p in members]).items():
            batch = [p for p in members if p.name in names]
            key = _operator_key(key, batch) if mode.uses_forge else key
            report = report.combined(await _publish_batch(
                engine, ws, repo, mode, key, batch, forge=forge, dry_run=dry_run,
                approved=approved, reset=not first,
                index=index if first or dry_run else None, parents=parents,
                registration=registration))
            first = False
    if report.commits and not dry_run:  # followed from now on (committed)
        await registration.finish(pushed=report.commits, parents=parents)
    if board is not None:  # its failure is reported; it undoes nothing that was published
        try:
            done = await asyncio.to_thread(
                dashboarding.write, engine, _required(forge.get()), board, report,
                checkout.policies.policies, {p.name for p in planned})
            report = dataclasses.replace(report, dashboard=done)
        except ImageBotError as exc:
            report = report.combined(RepositoryReport(
                name, repo.branch, errors=(_prefixed(exc, prefix="dashboard"),)))
    return report


def _required(client: forges.Forge | None) -> forges.Forge:
    assert client is not None, "the forge is enabled outside dry runs"
    return client


async def _follow(engine: Engine, repo: models.RepositoryConfig, checkout: Checkout,
                  forge: _Forge) -> RepositoryReport:
    """Judge the bot's earlier commits by the agents' reports, roll back degraded ones, and
    decline what was rolled back (so the policies below see it)."""
    name = workspaces.redact(repo.url)
    try:
        transitions, commits, errors = await tracking.follow(
            engine, repo, checkout.workspace, checkout.policies, forge=forge.get)
        if commits:
            await asyncio.to_thread(checkout.workspace.refresh)
    except ImageBotError as exc:
        return RepositoryReport(name, repo.branch, errors=(exc,))
    return RepositoryReport(name, repo.branch, commits=tuple(commits), errors=tuple(errors),
                            transitions=tuple(transitions))


class _Forge:
    """The forge client, connected on first use (commit-only repositories never need one)."""

    def __init__(self, repo: models.RepositoryConfig, *, enabled: bool) -> None:
        self._repo, self._enabled = repo, enabled
        self._client: forges.Forge | ImageBotError | None = None

    def get(self) -> forges.Forge | None:
        """The client, None in dry runs, or the configuration error (raised)."""
        if not self._enabled:
            return None
        if self._client is None:
            try:
                self._client = publishing.forge(self._repo)
            except ImageBotError as exc:
                self._client = exc
        if isinstance(self._client, ImageBotError):
            raise self._client
        return self._client


async def _publish_batch(engine: Engine, ws: workspaces.Workspace,
                         repo: models.RepositoryConfig, mode: publishing.Mode, key: str,
                         batch: list[_Planned], *, forge: _Forge, dry_run: bool,
                         approved: frozenset[str] = frozenset(),
                         reset: bool = True,
                         index: scanning.Index | None = None,
                         parents: dict[str, tracking.Before] | None = None,
                         registration: tracking.Registration,
                         ) -> RepositoryReport:
    """Edit on the target tip and publish one batch; a moved branch means: refresh, redo the
    edit on the new tip, back off (modes that allow it). ``reset``: the checkout may hold
    an earlier batch's edits (false for the first batch after opening: it is the tip,
    checked with :meth:`Workspace.on_reset_tip`). ``index``: the checkout as it is now, read
    by the stages before; the edit reads it anew after a reset or refresh. ``parents`` is
    given, for each commit pushed to the target branch, the files it changed as they were
    before it (as the edit read them), when the batch's earlier commits left them alone;
    ``registration`` reads ahead, while they are pushed, what registering them will store."""
    name = workspaces.redact(repo.url)
    label = proposing.branch_name(key) if mode.uses_forge else None
    outcomes: list[PolicyOutcome] = []
    result = UpdateResult()
    try:
        for attempt in range(1, repo.push_attempts + 1):
            try:
                client = forge.get() if mode.uses_forge else None
                batch = await _with_declines(engine, mode, client, key, ws.branch, batch)
                # a dry run writes nothing; a retry comes after a refresh (a reset) already;
                # the first batch finds the checkout as opened unless another workspace of
                # the same clone (another branch of the same URL) moved it since
                if not dry_run and attempt == 1 and (reset or not ws.on_reset_tip()):
                    await asyncio.to_thread(ws.reset)
                    index = None
                index = index or _index(engine, ws)
                closed = _closed_windows(batch, engine.clock.now(), approved)
                if closed and not dry_run:  # plan, do not publish
                    outcomes, result = await _update(engine, ws.root, batch, dry_run=True,
                                                     repo=repo, index=index)
                    return _report(name, repo, [_waiting(o, closed) for o in outcomes], result)
                decision = await _decided(engine, ws.root, batch, repo=repo, index=index)
                # the files are written before their last check (each new text read again),
                # which runs while the mode commits them and passes before any push
                outcomes, result, trial = _edited(engine, ws.root, batch, decision,
                                                  dry_run=dry_run, index=index, reread=False)
                if dry_run or _held(mode, outcomes):
                    return _report(name, repo, outcomes, result)
                pushing = functools.partial(_registering, registration, index)
                try:
                    done = await _publish(engine, ws, mode, key, batch, result, client,
                                          owed=trial, while_pushing=pushing)
                except _Unverified as exc:  # nothing was pushed: edit again without them
                    await asyncio.to_thread(ws.reset)
                    outcomes, result, _ = _edited(
                        engine, ws.root, batch, decision, dry_run=False, index=index,
                        unsafe={f: UpdateError(s.reason) for f, s in exc.failed.items()})
                    if _held(mode, outcomes):
                        return _report(name, repo, outcomes, result)
                    done = await _publish(engine, ws, mode, key, batch, result, client,
                                          while_pushing=pushing)
                if parents is not None and done.branch is None:
                    parents.update(_parents(done, index))
            except PushRejected as exc:
                if not mode.retries_moved_branch:
                    raise
                if attempt == repo.push_attempts:
                    raise _prefixed(exc, suffix=f"gave up after {attempt} attempts") from exc
                await asyncio.sleep(repo.push_backoff * 2 ** (attempt - 1))
                await asyncio.to_thread(ws.refresh)
                index = None
                continue
            return _published(name, repo, outcomes, result, done)
    except ImageBotError as exc:
        if label is None:
            return _report(name, repo, outcomes, result, error=exc)
        error = _prefixed(exc, prefix=label)
        failed = [PolicyOutcome(p.name, p.loaded.file, "failed", error=error,
                                image=p.loaded.policy.spec.image_ref.name) for p in batch]
        return _report(name, repo, failed, UpdateResult(), error=error)
    finally:
        if mode.uses_forge and not dry_run:
            await asyncio.to_thread(ws.reset)
    raise AssertionError("unreachable")  # pragma: no cover


def _held(mode: publishing.Mode, outcomes: Sequence[PolicyOutcome]) -> bool:
    """Whether the batch is not published: one PR proposes all or nothing."""
    return mode.atomic and any(o.status == "failed" for o in outcomes)


async def _publish(engine: Engine, ws: workspaces.Workspace, mode: publishing.Mode, key: str,
                   batch: list[_Planned], result: UpdateResult, forge: forges.Forge | None,
                   *, owed: Mapping[str, rewriting.Prepared] | None = None,
                   while_pushing: Callable[[publishing.Published], None],
                   ) -> publishing.Published:
    """Publish the edited batch through ``mode``; the re-read ``owed`` (the preparation of
    an edit written before it) is the mode's ``before_push``: it runs while the mode's
    first commit is made and raises :class:`_Unverified` before any push. The mode calls
    ``while_pushing`` while git pushes commits to the target branch."""
    rows = _noted(_promoted(batch, await _rows(engine.client, result,
                                               metadata=mode.uses_forge)), batch)
    return await asyncio.to_thread(
        mode.publish, ws, key, result, policies=[p.loaded for p in batch],
        identity=engine.identity, forge=forge, rows=rows, now=engine.clock.now(),
        before_push=functools.partial(_reread, owed or {}, result),
        while_pushing=while_pushing)


def _registering(registration: tracking.Registration, index: scanning.Index,
                 done: publishing.Published) -> None:
    """While ``done``'s commits are pushed: what registering them will store, read ahead."""
    registration.prepare(done.commits, _parents(done, index))


def _index(engine: Engine, ws: workspaces.Workspace) -> scanning.Index:
    """A fresh index of the checkout as it is now (listed and read on first use)."""
    return scanning.Index(ws.root, max_file_bytes=engine.config.limits.max_file_bytes)


def _parents(done: publishing.Published, index: scanning.Index) -> dict[str, tracking.Before]:
    """Each commit's files as they were before it, from the edit's reading of the checkout:
    for a commit whose files no earlier commit of the batch changed (and the edit read)."""
    found: dict[str, tracking.Before] = {}
    touched: set[str] = set()
    for commit, files in zip(done.commits, done.files, strict=True):
        if not touched & set(files) and index.has_read(files):
            found[commit] = tracking.Before(tuple(files), index)
        touched |= set(files)
    return found


async def _with_declines(engine: Engine, mode: publishing.Mode, forge: forges.Forge | None,
                         key: str, base: str, batch: list[_Planned]) -> list[_Planned]:
    """Record what humans turned down for this batch (closed PRs), then attach declines."""
    declined = await asyncio.to_thread(mode.declined, forge, key, base)
    if not declined:
        return batch
    for d in declined:
        engine.state.decline(d.policy, d.image, d.tag, d.reason)
    return _attach_declined(batch, engine)


def _published(name: str, repo: models.RepositoryConfig, outcomes: list[PolicyOutcome],
               result: UpdateResult, done: publishing.Published) -> RepositoryReport:
    if done.already and done.branch:  # push-branch: rebuilt, and it already held this
        outcomes = [dataclasses.replace(o, status="current", note=f"{o.note}; already on "
                                        f"{done.branch}") if o.status == "updated" else o
                    for o in outcomes]
        return _report(name, repo, outcomes, result)
    if done.proposal is None or done.branch is None:
        report = _report(name, repo, outcomes, result, commits=done.commits)
        if done.branch:  # push-branch: the commits are on that branch, not the target
            report = dataclasses.replace(report, pushed_to=tuple(
                (commit, done.branch) for commit in done.commits))
        return report
    pr = PullRequestResult(done.branch, done.proposal.action, done.proposal.message,
                           done.proposal.number, done.proposal.url, done.proposal.pushed,
                           policies=tuple(o.policy for o in outcomes))
    return _report(name, repo, [_proposed(o, done.proposal) for o in outcomes], result,
                   pull_requests=(pr,))


def _prefixed(exc: E, *, prefix: str = "", suffix: str = "") -> E:
    """The same error (class, ``kind``, ``retry_after``) with words added to its message."""
    text = f"{prefix}: {exc}" if prefix else str(exc)
    new = copy.copy(exc)
    new.args = (f"{text}; {suffix}" if suffix else text,)
    return new


def _select(policy_set: loading.PolicySet, repository: str,
            selection: selecting.Selection) -> loading.PolicySet:
    if selection == selecting.EVERYTHING:
        return policy_set
    chosen = tuple(p for p in policy_set.policies
                   if selection.covers(repository, p.policy.name, p.policy.spec.image_ref.name))
    return loading.PolicySet(chosen, policy_set.errors if selection.reports_load_errors else ())


def _operated(planned: Sequence[_Planned], overrides: Mapping[str, Override]
              ) -> tuple[list[_Planned], list[PolicyOutcome]]:
    """Attach the operators' overrides; suspended policies (not overridden) leave the run
    here, before any registry request, edit or rollback."""
    kept, suspended = [], []
    for p in planned:
        override = overrides.get(p.name)
        if p.loaded.policy.spec.suspend and override is None:
            suspended.append(PolicyOutcome(p.name, p.loaded.file, "suspended",
                                           note="spec.suspend: true",
                                           image=p.loaded.policy.spec.image_ref.name))
        else:
            kept.append(dataclasses.replace(p, override=override))
    return kept, suspended


def _operator_key(key: str, batch: Sequence[_Planned]) -> str:
    """An operator's pull request gets its own branch: the policy's usual one is rebuilt
    from the policy's own choice on the next run, which would undo it."""
    chosen = next((p.override for p in batch if p.override), None)
    return f"{chosen.action}-{chosen.policy}" if chosen else key


def _noted(rows: list[messages.Row], batch: Sequence[_Planned]) -> list[messages.Row]:
    """The rows of overridden policies carry who chose the update and why."""
    chosen = {p.name: p.override for p in batch if p.override}
    return [dataclasses.replace(r, note=o.note, trailers=o.trailers)
            if (o := chosen.get(r.policy)) else r for r in rows]


def _build_policies(policy_set: loading.PolicySet,
                    branch: str) -> tuple[list[_Planned], list[PolicyOutcome]]:
    failed = [PolicyOutcome(policy=getattr(error, "policy", "?"), file=getattr(error, "file", ""),
                            status="failed", error=error)
              for error in policy_set.errors]
    planned = []
    for loaded in policy_set.policies:
        try:
            built = build_policy(loaded, branch)
        except ConfigError as exc:
            failed.append(PolicyOutcome(loaded.policy.name, loaded.file, "failed", error=exc))
            continue
        planned.append(_Planned(loaded, built, None, None))
    return planned, failed


def build_policy(loaded: loading.LoadedPolicy, branch: str) -> strategies.Policy:
    """The policy object for a loaded document, or a :class:`ConfigError` with a breadcrumb."""
    target = loaded.policy.spec.publish.branch
    if target and target != branch:
        raise ConfigError(f"{loaded.where('spec.publish.branch')}: {target!r} differs from the "
                          f"repository branch {branch!r}; commit mode pushes to the branch "
                          f"the policies are read from")
    return strategies.build_document(loaded)


async def _fetch_tags(client: registry.RegistryClient,
                      planned: Sequence[_Planned]) -> list[_Planned]:
    """The tags of the policies that need them before they are decided; the others are
    marked ``streamed`` (see :func:`_streamed`)."""
    streamed = _streamed(planned)
    images = {p.loaded.policy.spec.image_ref for p in planned if p.name not in streamed}
    room = asyncio.Semaphore(_TAG_LISTS_AT_ONCE)
    results = await asyncio.gather(*(_packed_tags(client, image, room) for image in images),
                                   return_exceptions=True)
    by_image = dict(zip(images, results, strict=True))
    filled = []
    for p in planned:
        if p.name in streamed:
            filled.append(dataclasses.replace(p, streamed=True))
            continue
        tags = by_image[p.loaded.policy.spec.image_ref]
        if isinstance(tags, ImageBotError):
            filled.append(dataclasses.replace(p, error=tags))
        elif isinstance(tags, BaseException):
            raise tags
        else:
            filled.append(dataclasses.replace(p, tags=tags))
    return filled


def _streamed(planned: Sequence[_Planned]) -> set[str]:
    """The policies whose tags are listed only when they are decided (:func:`_update`), and
    dropped then: each the only policy of its image here (its one batch lists them once),
    without publish rules, metadata checks (``needs``), promotion or an operator's tag,
    which use the tags before the decision. The tags of the others wait, deflated."""
    per_image = collections.Counter(p.loaded.policy.spec.image_ref for p in planned)
    return {p.name for p in planned
            if per_image[p.loaded.policy.spec.image_ref] == 1 and not (
                p.publish.rules or p.policy.needs or p.override
                or p.loaded.policy.spec.select.promote)}


async def _packed_tags(client: registry.RegistryClient, image: refs.ImageRef,
                       room: asyncio.Semaphore) -> Sequence[str]:
    """The image's tags, held as one string until a policy decides (a list of 5,000 tags
    costs ~300 KB, the packed text ~30 KB): only the lists being fetched exist at once."""
    async with room:
        return _Packed.of(await client.list_tags(image))


class _Packed(strategies.Ordered):
    """A registry's tags (sorted, each once: ``list_tags``) joined by newlines (a tag never
    holds one) and deflated: a fleet's lists wait for their policies' decisions at ~1.5
    bytes a tag; each use inflates and splits them."""

    __slots__ = ("_count", "_data")

    def __init__(self, data: bytes, count: int) -> None:
        self._data, self._count = data, count

    @classmethod
    def of(cls, tags: list[str]) -> Sequence[str]:
        text = "\n".join(tags)
        if text.count("\n") != len(tags) - 1:
            return tags
        return cls(zlib.compress(text.encode("utf-8"), 1), len(tags))

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        if not self._count:
            return iter(())
        return iter(zlib.decompress(self._data).decode("utf-8").split("\n"))

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return list(self)[index]


def _with_promotions(engine: Engine, planned: Sequence[_Planned],
                     here: frozenset[str]) -> list[_Planned]:
    """Narrow each promoting policy's tags to those its upstream stage ran healthy for
    ``healthy-for`` (from the deploy loop's tracking, across repositories). ``here``: the
    repository's policy names (an upstream neither here nor tracked is reported)."""
    upstreams = {promote.from_ for p in planned
                 if (promote := p.loaded.policy.spec.select.promote)}
    if not upstreams:
        return list(planned)
    updates = list(engine.state.updates_of(upstreams).values())  # however old
    declines = engine.state.declines()
    now = engine.clock.now().timestamp()
    done = []
    for p in planned:
        promote = p.loaded.policy.spec.select.promote
        if promote is None or p.override is not None:  # an operator skips the soak
            done.append(p)
            continue
        upstream = promote.from_
        known = upstream in here or any(u.get("policy") == upstream for u in updates)
        allowed = promotion.of(upstream, durations.parse(promote.healthy_for), updates,
                               declined=[tag for policy, _, tag, _, _ in declines
                                         if policy == upstream], now=now, known=known)
        tags = promotion.narrowed(p.tags, allowed.eligible) if p.tags is not None else None
        done.append(dataclasses.replace(p, tags=tags, promotion=allowed))
    return done


async def _fetch_metadata(client: registry.RegistryClient,
                          planned: Sequence[_Planned]) -> list[_Planned]:
    return [await _with_metadata(client, p) if p.tags and p.policy.needs and not p.override
            else p for p in planned]  # an operator's tag skips the policy's checks


async def _with_metadata(client: registry.RegistryClient, p: _Planned) -> _Planned:
    image = p.loaded.policy.spec.image_ref
    names = [t for t in p.tags or () if isinstance(t, str)]
    try:
        tags = await ranking.with_metadata(client, image, p.policy, names)
    except ImageBotError as exc:
        return dataclasses.replace(p, tags=None, error=exc)
    return dataclasses.replace(p, tags=tags)


async def _update(engine: Engine, root: Path, planned: Sequence[_Planned], *,
                  dry_run: bool, repo: models.RepositoryConfig, index: scanning.Index,
                  ) -> tuple[list[PolicyOutcome], UpdateResult]:
    """Decide ``planned`` and edit the checkout at ``root`` (the bot's clone, reset before
    the edit: files are written in place); ``index`` lists and reads it as it is now, once
    for this edit and the stages before it."""
    decided = await _decided(engine, root, planned, repo=repo, index=index)
    outcomes, result, _ = _edited(engine, root, planned, decided, dry_run=dry_run,
                                  index=index)
    return outcomes, result


@dataclass(frozen=True, slots=True)
class _Decision:
    """What the policies of a batch decided: their outcomes before the edit, the edits, and
    the files whose edit lacks a digest that could not be pinned (file → why)."""

    outcomes: list[PolicyOutcome]
    edits: list[rewriting.Edit]
    unpinned: dict[str, ImageBotError]


async def _decided(engine: Engine, root: Path, planned: Sequence[_Planned], *,
                   repo: models.RepositoryConfig, index: scanning.Index) -> _Decision:
    outcomes: list[PolicyOutcome] = []
    edits: list[rewriting.Edit] = []
    now = engine.clock.now()  # the one clock read; the policy itself is pure

    def decide(p: _Planned) -> tuple[PolicyOutcome, list[rewriting.Edit]]:
        return _decide(root, _with_rollback(engine, index, p, branch=repo.branch, now=now),
                       index, now=now)

    decided = await _decide_streamed(engine.client, [p for p in planned if p.streamed], repo,
                                     decide)
    for p in planned:
        outcome, policy_edits = decided.get(p.name) or decide(p)
        outcomes.append(outcome)
        edits.extend(policy_edits)
    edits, unpinned = await _pin_digests(engine.client, planned, edits)
    return _Decision(outcomes, edits, unpinned)


def _edited(engine: Engine, root: Path, planned: Sequence[_Planned], decision: _Decision, *,
            dry_run: bool, index: scanning.Index, reread: bool = True,
            unsafe: Mapping[str, ImageBotError] | None = None,
            ) -> tuple[list[PolicyOutcome], UpdateResult, dict[str, rewriting.Prepared]]:
    """Edit the checkout as decided; a policy whose edit is unsafe in one file (or in one of
    ``unsafe``) is applied in no file. ``reread=False`` (files written, not a dry run):
    the files' re-read is left owed (:func:`rewriting.reread` of the returned preparation,
    before anything is pushed)."""
    limit = engine.config.limits.max_file_bytes
    edits, known = decision.edits, {**(unsafe or {}), **decision.unpinned}
    trial = rewriting.prepare(root, [e for e in edits if e.reference.file not in known],
                              max_file_bytes=limit, index=index,  # each file edited once
                              reread=reread or dry_run)
    unsafe = {f: UpdateError(p.skipped.reason) for f, p in trial.items() if p.skipped}
    unsafe |= known
    blocked = {e.policy: e.reference.file for e in edits if e.reference.file in unsafe}
    edits = [e for e in edits if e.policy not in blocked]
    result = rewriting.apply(root, edits, write=not dry_run, in_place=True,  # the clone
                             max_file_bytes=limit, prepared=trial,
                             index=index) if edits else UpdateResult()
    result = result.merged(scanning.refused(  # links and devices: reported once
        index, [path for p in planned for path in p.loaded.policy.spec.paths]))
    outcomes = [dataclasses.replace(o, status="failed", note="", error=_prefixed(
                    unsafe[blocked[o.policy]], prefix=blocked[o.policy]))
                if o.policy in blocked else o for o in decision.outcomes]
    changes: dict[str, list[Change]] = {}
    for change in result.changes:
        changes.setdefault(change.policy, []).append(change)
    return [_settle(o, tuple(changes.get(o.policy, ())), dry_run=dry_run)
            for o in outcomes], result, trial


def _reread(trial: Mapping[str, rewriting.Prepared], result: UpdateResult) -> None:
    """The re-read an edit written before it owes (:func:`rewriting.reread`), for each file
    written; raises :class:`_Unverified` naming those that failed it."""
    failed = {edited.file: skipped for edited in result.edited
              if (skipped := rewriting.reread(trial, edited)) is not None}
    if failed:
        raise _Unverified(failed)


class _Unverified(Exception):  # not an ImageBotError: caught by the engine, never reported
    """Files whose written edit did not read as intended: the batch is edited again without
    their policies, before anything was pushed."""

    def __init__(self, failed: dict[str, Skipped]) -> None:
        super().__init__(", ".join(failed))
        self.failed = failed


async def _decide_streamed(
        client: registry.RegistryClient, planned: Sequence[_Planned],
        repo: models.RepositoryConfig,
        decide: Callable[[_Planned], tuple[PolicyOutcome, list[rewriting.Edit]]],
) -> dict[str, tuple[PolicyOutcome, list[rewriting.Edit]]]:
    """Fetch → decide → drop: each streamed policy's tags listed (``_TAG_LISTS_AT_ONCE``
    at a time, within a ``registry_deadline`` of their own) and decided as soon as they
    arrive, so a fleet's lists never exist at once. A publish retried after its branch
    moved lists them again (they may have changed too)."""
    room = asyncio.Semaphore(_TAG_LISTS_AT_ONCE)

    async def one(p: _Planned) -> tuple[str, tuple[PolicyOutcome, list[rewriting.Edit]]]:
        try:
            async with room:
                tags = await client.list_tags(p.loaded.policy.spec.image_ref)
        except ImageBotError as exc:
            return p.name, decide(dataclasses.replace(p, error=exc))
        return p.name, decide(dataclasses.replace(p, tags=strategies.Listed(tags)))

    if not planned:
        return {}
    async with registry.scan_deadline(repo.registry_deadline,
                                      repository=workspaces.redact(repo.url)):
        return dict(await asyncio.gather(*(one(p) for p in planned)))


def _decide(root: Path, p: _Planned, index: scanning.Index | None = None, *,
            now: datetime) -> tuple[PolicyOutcome, list[rewriting.Edit]]:
    spec, name = p.loaded.policy.spec, p.loaded.policy.name
    image = spec.image_ref
    promote = spec.select.promote
    base = PolicyOutcome(name, p.loaded.file, "current", image=image.name,
                         upstream=promote.from_ if promote else None,
                         healthy_for=durations.parse(promote.healthy_for) if promote else None)
    if p.tags is None:
        error = p.error or RegistryError(f"registry {image.host}: no tags for {image.name}")
        return dataclasses.replace(base, status="failed", error=error), []
    if p.override and p.override.tag not in {getattr(t, "tag", t) for t in p.tags}:
        error = UsageError(f"{p.override.action} {name}: the registry has no tag "
                           f"{p.override.tag!r} for {image.name}")
        return dataclasses.replace(base, status="failed", error=error), []
    scan = scanning.find(root, image, spec.paths, policy=name, index=index,
                         namespace=p.loaded.policy.metadata.namespace)
    if scan.skipped:  # never update half of a policy's files
        problems = "; ".join(f"{s.file}: {s.reason}" for s in scan.skipped)
        return dataclasses.replace(base, status="failed", error=UpdateError(problems)), []
    if not scan.references:
        where = ", ".join(spec.paths)
        return dataclasses.replace(base, status="unmatched",
                                   note=f"no references to {image.name} in {where}"), []
    edits, reasons = [], [p.promotion.note()] if p.promotion and not p.override else []
    for reference in scan.references:
        decision = strategies.Decision(p.override.tag, p.override.note) if p.override \
            else p.policy.select(p.tags or (), current=reference.ref.tag,
                                 current_digest=reference.ref.digest, now=now,
                                 declined=p.declined, explain=False)
        if p.tags or p.promotion is None:  # else the promotion note says why
            reasons.append(decision.reason)
        tag = decision.tag or (reference.ref.tag if spec.pin_digest else None)
        if tag:  # the writer decides how the tag (and digest) is written into each reference
            edits.append(rewriting.Edit(reference, tag, name, digest=decision.digest))
    current = scan.references[0].ref.tag
    latest = next((e.tag for e in edits if e.tag), current)
    return dataclasses.replace(base, note="; ".join(dict.fromkeys(reasons)),
                               current=current, latest=latest,
                               recheck_after=p.promotion.next_change() if p.promotion
                               else None,
                               files=tuple(sorted({r.file for r in scan.references}))), edits


async def _pin_digests(client: registry.RegistryClient, planned: Sequence[_Planned],
                       edits: list[rewriting.Edit]) -> tuple[list[rewriting.Edit],
                                                             dict[str, ImageBotError]]:
    """Add the digest of the chosen tag where pin-digest, a :digest marker or a reference
    already pinned (``tag@digest``) asks for it.

    Returns the edits and, for a digest that could not be fetched, file → why.
    """
    pinned = {p.loaded.policy.name: p.loaded.policy.spec for p in planned}
    digests: dict[tuple[refs.ImageRef, str], str | ImageBotError] = {}
    done: list[rewriting.Edit] = []
    failed: dict[str, ImageBotError] = {}
    for edit in edits:
        spec = pinned[edit.policy]
        if edit.tag is None or edit.digest is not None or not (
                spec.pin_digest or rewriting.needs_digest(edit.reference)
                or rewriting.pinned(edit.reference)):
            done.append(edit)
            continue
        key = (spec.image_ref, edit.tag)
        if key not in digests:
            try:
                digests[key] = await client.digest(spec.image_ref, edit.tag)
            except ImageBotError as exc:
                digests[key] = exc
        digest = digests[key]
        if isinstance(digest, str):
            edit = dataclasses.replace(edit, digest=digest)
        elif edit.tag == edit.reference.ref.tag:
            continue  # only re-pinning the current tag (gone from the registry?): leave it
        else:
            failed[edit.reference.file] = _prefixed(
                digest, prefix=f"cannot pin the digest of {edit.tag}")
        done.append(edit)
    return done, failed


def _settle(outcome: PolicyOutcome, changes: tuple[Change, ...], *,
            dry_run: bool) -> PolicyOutcome:
    """The outcome of a policy whose ``changes`` were made (or planned)."""
    if not changes:
        return outcome
    status: Status = "planned" if dry_run else "updated"
    tags = ", ".join(sorted({f"{c.old_tag} → {c.new_tag}" for c in changes}))
    return dataclasses.replace(outcome, status=status, changes=changes,
                               note=f"{tags} in {len(changes)} place(s)")


def _report(name: str, repo: models.RepositoryConfig, outcomes: list[PolicyOutcome],
            result: UpdateResult, *, commits: tuple[str, ...] = (),
            error: ImageBotError | None = None,
            pull_requests: tuple[PullRequestResult, ...] = ()) -> RepositoryReport:
    if error:  # edits that were made but not published did not happen
        outcomes = [dataclasses.replace(o, status="failed", error=error)
                    if o.status == "updated" else o for o in outcomes]
    return RepositoryReport(
        repository=name, branch=repo.branch, outcomes=tuple(outcomes), commits=commits,
        skipped=result.skipped, edited=result.edited,
        errors=(error,) if error else (), pull_requests=pull_requests)


# --- declined versions: human rollbacks on the target branch ------------------------------


def _bot_writes(engine: Engine, ws: workspaces.Workspace, planned: Sequence[_Planned],
                ) -> dict[tuple[str, str], committing.Write]:
    """Each policy's last write by the bot on the target branch (one ``git log``), by
    (policy, image)."""
    wanted = {(p.name, p.loaded.policy.spec.image_ref.name) for p in planned}
    return {(w.policy, w.image): w for w in committing.bot_writes(
        ws, engine.identity.author.email, wanted=wanted)}


def _with_bot_writes(engine: Engine, planned: Sequence[_Planned],
                     writes: Mapping[tuple[str, str], committing.Write]) -> list[_Planned]:
    """Each policy with its last write by the bot (:func:`_bot_writes`), to be checked for a
    human's rollback when the policy is decided (:func:`_with_rollback`: from the scan its
    decision reads anyway), and its declined set."""
    return _attach_declined([dataclasses.replace(p, bot_write=writes.get(
        (p.name, p.loaded.policy.spec.image_ref.name))) for p in planned], engine)


def _with_rollback(engine: Engine, index: scanning.Index, p: _Planned, *, branch: str,
                   now: datetime) -> _Planned:
    """``p`` with the tag the bot last wrote declined if a human has set its references
    back below it since (the policy ranks them), before the policy chooses again."""
    write = p.bot_write
    if write is None:
        return p
    p = dataclasses.replace(p, bot_write=None)  # checked: once a pass
    if p.error is None and write.tag not in p.declined and _rolled_back(
            index, p, write.tag, now=now):
        engine.state.decline(p.name, write.image, write.tag,
                             f"rolled back on {branch} after {write.commit[:12]}")
        p = dataclasses.replace(p, declined=p.declined | {write.tag})
    return p


def _attach_declined(planned: Sequence[_Planned], engine: Engine) -> list[_Planned]:
    """Each policy's declined tags for its image, from one read of the declines."""
    declined: dict[tuple[str, str], set[str]] = {}
    for policy, image, tag, _, _ in engine.state.declines():
        declined.setdefault((policy, image), set()).add(tag)
    return [dataclasses.replace(p, declined=frozenset(declined.get(
        (p.name, p.loaded.policy.spec.image_ref.name), ()))) for p in planned]


def _rolled_back(index: scanning.Index, p: _Planned, written: str, *, now: datetime) -> bool:
    """A human set a reference back below the tag the bot wrote (the policy ranks them)."""
    spec = p.loaded.policy.spec
    scan = scanning.find(index.root, spec.image_ref, spec.paths, policy=p.name, index=index,
                         namespace=p.loaded.policy.metadata.namespace)
    current = {r.ref.tag for r in scan.references if r.ref.tag}
    if not current or written in current:
        return False
    return any(p.policy.select([written], current=tag, now=now).tag == written
               for tag in current)


# --- publish rules (by update type) and schedules ----------------------------------------


def _with_rules(engine: Engine, planned: Sequence[_Planned], index: scanning.Index,
                branch: str) -> list[_Planned]:
    """Each policy with ``publish.rules`` gets the settings of the update it will make.

    The decision is the one ``_update`` makes again later on the same tip (pure, same
    inputs); with no update, a policy that can open PRs stays in pull-request mode so an
    open PR it no longer needs is still withdrawn.
    """
    if not any(p.publish.rules for p in planned):
        return list(planned)
    now = engine.clock.now()
    done = []
    for p in planned:
        if not p.publish.rules or p.tags is None:
            done.append(p)
            continue
        p = _with_rollback(engine, index, p, branch=branch, now=now)
        _, edits = _decide(index.root, p, index, now=now)
        kind = _update_type(edits)
        publish = p.publish.for_update(kind) if kind else _idle(p.publish)
        spec = p.loaded.policy.spec.model_copy(update={"publish": publish})
        loaded = dataclasses.replace(p.loaded, policy=p.loaded.policy.model_copy(
            update={"spec": spec}))
        done.append(dataclasses.replace(p, loaded=loaded))
    return done


def _update_type(edits: Sequence[rewriting.Edit]) -> str | None:
    """The update type of a policy's edits (the first moved tag), None when nothing moves."""
    for edit in edits:
        if edit.tag and edit.tag != edit.reference.ref.tag:
            return versions.update_type(edit.reference.ref.tag, edit.tag)
    if any(e.digest and e.digest != e.reference.ref.digest for e in edits):
        return "digest"
    return None


def _idle(publish: models.Publish) -> models.Publish:
    modes = [publish.mode, *(r.mode for r in publish.rules if r.mode)]
    mode = "pull-request" if "pull-request" in modes else publish.mode
    return publish.model_copy(update={"mode": mode, "rules": []})


def _closed_windows(batch: Sequence[_Planned], now: datetime,
                    approved: frozenset[str] = frozenset()) -> list[str]:
    """The schedules of batch members whose window is closed at ``now`` (one closed window
    holds back the whole batch: one PR proposes all or nothing); ``approved`` policies (a
    ticked dashboard box) publish now."""
    return [f"{'; '.join(p.publish.schedule)} ({p.publish.timezone})" for p in batch
            if p.name not in approved
            and not schedules.is_open(p.publish.schedule, p.publish.timezone, now)]


def _waiting(outcome: PolicyOutcome, closed: Sequence[str]) -> PolicyOutcome:
    if outcome.status != "planned":
        return outcome
    window = ", ".join(dict.fromkeys(closed))
    return dataclasses.replace(outcome, status="waiting",
                               note=f"{outcome.note}; waiting for window: {window}")


# --- pull requests: outcomes and the registry's part of the PR table ----------------------


def _proposed(outcome: PolicyOutcome, done: proposing.Outcome) -> PolicyOutcome:
    if outcome.status != "updated":
        return outcome
    status: Status = "blocked" if done.action == "blocked" else "proposed"
    return dataclasses.replace(outcome, status=status, note=f"{outcome.note}; {done.message}")


def _promoted(batch: Sequence[_Planned], rows: list[messages.Row]) -> list[messages.Row]:
    """Rows of promoted tags say how long they ran healthy upstream."""
    promotions = {p.name: p.promotion for p in batch if p.promotion}
    return [dataclasses.replace(r, promotion=promotions[r.policy].explain(r.new))
            if r.policy in promotions else r for r in rows]


async def _rows(client: registry.RegistryClient, result: UpdateResult, *,
                metadata: bool) -> list[messages.Row]:
    """What publishing says about each update: its type, and (``metadata``: for PRs) what
    the registry knows of the new image and the old one's revision."""
    return [await _row(client, row, metadata=metadata) for row in publishing.rows(result)]


async def _row(client: registry.RegistryClient, row: messages.Row, *,
               metadata: bool) -> messages.Row:
    row = dataclasses.replace(row, update_type=versions.update_type(row.old, row.new))
    if not metadata:
        return row
    image = refs.parse(row.image)
    try:
        info = await client.image_info(image, row.new)
    except ImageBotError:
        return row  # the table says "–"; not worth failing the proposal for
    labels = info.labels
    row = dataclasses.replace(row, digest=info.digest, created=info.created,
                              platforms=info.platforms,
                              source=labels.get("org.opencontainers.image.source"),
                              revision=labels.get("org.opencontainers.image.revision"),
                              version=labels.get("org.opencontainers.image.version"))
    if row.revision and row.old and row.old != row.new:
        try:
            old = await client.image_info(image, row.old)
        except ImageBotError:
            return row  # the old tag is gone: no compare link
        if old.labels.get("org.opencontainers.image.source") == row.source:
            row = dataclasses.replace(
                row, old_revision=old.labels.get("org.opencontainers.image.revision"))
    return row
