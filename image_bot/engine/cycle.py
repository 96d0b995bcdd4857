"""One cycle: Git → policies → registry tags → decisions → file edits → commit, push or PR.

This is the only module that composes the stages; each step below calls one of them.
A failure in one policy is recorded and the others go on; a failure of the repository
itself (cannot fetch, cannot push) fails that repository and changes nothing in Git.
Declined versions (PRs closed unmerged, human rollbacks) are kept in ``image_bot.state``
and kept out of the policy's choice.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from image_bot import refs
from image_bot.config import loading, models
from image_bot.engine import history, ranking, selecting
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport, Status
from image_bot.errors import ConfigError, ImageBotError, PushRejected
from image_bot.policy import strategies
from image_bot.publish import committing, forges, messages, proposing
from image_bot.publish import workspace as workspaces
from image_bot.registry import client as registry
from image_bot.state import State
from image_bot.update import rewriting, scanning
from image_bot.update.result import Change, UpdateResult


@dataclass(frozen=True, slots=True)
class _Planned:
    """A policy that loaded and built, with the tags of its image (or why they are missing)."""

    loaded: loading.LoadedPolicy
    policy: strategies.Policy
    tags: list[str | strategies.Candidate] | None
    error: str | None
    declined: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return self.loaded.policy.name

    @property
    def publish(self) -> models.Publish:
        return self.loaded.policy.spec.publish


async def run_once(config: models.BotConfig, *, dry_run: bool = False,
                   client: registry.RegistryClient | None = None,
                   selection: selecting.Selection = selecting.EVERYTHING) -> CycleReport:
    """Run every repository of ``config`` once; with ``dry_run`` nothing is written to Git.

    ``selection`` narrows the run to some policies (a webhook's image, a shard).
    """
    owned = client is None
    state = history.open_state(config)
    client = client or registry.RegistryClient(config.registries, state=state)
    try:
        reports = [await _run_repository(config, repo, client, state, dry_run=dry_run,
                                         selection=selection)
                   for repo in config.repositories]
    finally:
        if owned:
            await client.aclose()
        state.close()
    return CycleReport(tuple(reports), dry_run=dry_run, registry_requests=client.requests)


async def _run_repository(config: models.BotConfig, repo: models.RepositoryConfig,
                          client: registry.RegistryClient, state: State, *, dry_run: bool,
                          selection: selecting.Selection) -> RepositoryReport:
    name = workspaces.redact(repo.url)
    try:
        # 1. the config repository at its remote tip
        ws = await asyncio.to_thread(workspaces.Workspace.open, repo.url, repo.branch,
                                     config.state_dir, _credentials(repo))
        # 2. policies from Git; broken ones become failed outcomes
        policy_set = loading.load_policies(ws.root / repo.policies, display_root=ws.root)
        policy_set = _select(policy_set, name, selection)
        planned, failed = _build_policies(policy_set, repo.branch)
        # 3. tags, once per image, concurrently
        planned = await _fetch_tags(client, planned)
        # 4. versions humans declined by rolling back on the target branch
        planned = await asyncio.to_thread(_with_rollbacks, ws, planned, state,
                                          _identity(config.git))
        # 4b. image metadata, only for policies whose `needs` ask for it
        planned = await _fetch_metadata(client, planned)
    except ImageBotError as exc:
        return RepositoryReport(name, repo.branch, error=str(exc))
    # 5-7. decide, edit, publish: direct commits first, then one PR per bot branch
    direct = [p for p in planned if p.publish.mode == "commit"]
    report = await _commit_mode(ws, repo, config, client, direct, failed, dry_run=dry_run)
    groups = _pr_groups(_pr_policies(planned))
    forge: forges.Forge | str | None = None  # the client, or why there is none
    if groups and not dry_run:
        try:
            forge = _forge(repo)
        except ImageBotError as exc:
            forge = str(exc)
    for key, members in groups.items():
        report = _combine(report, await _pull_request_mode(
            ws, repo, config, client, forge, key, members, state=state, dry_run=dry_run))
    return report


async def _commit_mode(ws: workspaces.Workspace, repo: models.RepositoryConfig,
                       config: models.BotConfig, client: registry.RegistryClient,
                       planned: Sequence[_Planned], failed: list[PolicyOutcome], *,
                       dry_run: bool) -> RepositoryReport:
    """Edit and push; a moved branch means: refresh, redo the edit on the new tip, back off."""
    name = workspaces.redact(repo.url)
    identity = _identity(config.git)
    for attempt in range(1, repo.push_attempts + 1):
        outcomes, result = await _update(ws.root, planned, client, dry_run=dry_run)
        try:
            commits = () if dry_run else await asyncio.to_thread(
                _publish, ws, result, planned, identity)
        except PushRejected as exc:
            if attempt == repo.push_attempts:
                message = f"{exc}; gave up after {attempt} attempts"
                return _report(name, repo, failed, outcomes, result, error=message)
            await asyncio.sleep(repo.push_backoff * 2 ** (attempt - 1))
            await asyncio.to_thread(ws.refresh)
            continue
        except ImageBotError as exc:
            return _report(name, repo, failed, outcomes, result, error=str(exc))
        return _report(name, repo, failed, outcomes, result, commits=commits)
    raise AssertionError("unreachable")  # pragma: no cover


def _select(policy_set: loading.PolicySet, repository: str,
            selection: selecting.Selection) -> loading.PolicySet:
    if selection == selecting.EVERYTHING:
        return policy_set
    chosen = tuple(p for p in policy_set.policies
                   if selection.covers(repository, p.policy.name, p.policy.spec.image_ref.name))
    return loading.PolicySet(chosen, policy_set.errors if selection.reports_load_errors else ())


def _build_policies(policy_set: loading.PolicySet,
                    branch: str) -> tuple[list[_Planned], list[PolicyOutcome]]:
    failed = [PolicyOutcome(policy="?", file="", status="failed", message=str(error))
              for error in policy_set.errors]
    planned = []
    for loaded in policy_set.policies:
        try:
            built = build_policy(loaded, branch)
        except ConfigError as exc:
            failed.append(PolicyOutcome(loaded.policy.name, loaded.file, "failed", str(exc)))
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
    try:
        return strategies.build(loaded.policy.spec)
    except strategies.InvalidSpec as exc:
        raise ConfigError(f"{loaded.where(exc.key)}: {exc}") from None


async def _fetch_tags(client: registry.RegistryClient,
                      planned: Sequence[_Planned]) -> list[_Planned]:
    images = {p.loaded.policy.spec.image_ref for p in planned}
    results = await asyncio.gather(*(client.list_tags(image) for image in images),
                                   return_exceptions=True)
    by_image = dict(zip(images, results, strict=True))
    filled = []
    for p in planned:
        tags = by_image[p.loaded.policy.spec.image_ref]
        if isinstance(tags, ImageBotError):
            filled.append(dataclasses.replace(p, error=str(tags)))
        elif isinstance(tags, BaseException):
            raise tags
        else:
            filled.append(dataclasses.replace(p, tags=list(tags)))
    return filled


async def _fetch_metadata(client: registry.RegistryClient,
                          planned: Sequence[_Planned]) -> list[_Planned]:
    return [await _with_metadata(client, p) if p.tags and p.policy.needs else p
            for p in planned]


async def _with_metadata(client: registry.RegistryClient, p: _Planned) -> _Planned:
    image = p.loaded.policy.spec.image_ref
    names = [t for t in p.tags or () if isinstance(t, str)]
    try:
        tags = await ranking.with_metadata(client, image, p.policy, names)
    except ImageBotError as exc:
        return dataclasses.replace(p, tags=None, error=str(exc))
    return dataclasses.replace(p, tags=tags)


async def _update(root: Path, planned: Sequence[_Planned], client: registry.RegistryClient, *,
                  dry_run: bool) -> tuple[list[PolicyOutcome], UpdateResult]:
    outcomes: list[PolicyOutcome] = []
    edits: list[rewriting.Edit] = []
    index = scanning.Index(root)  # list and read the checkout once for all policies
    for p in planned:
        outcome, policy_edits = _decide(root, p, index)
        outcomes.append(outcome)
        edits.extend(policy_edits)
    edits, unpinned = await _pin_digests(client, planned, edits)
    # a policy whose edit is unsafe in one file is not applied in any file
    trial = rewriting.apply(root, edits, write=False)
    unsafe = {s.file: s.reason for s in trial.skipped} | unpinned
    blocked = {e.policy: e.reference.file for e in edits if e.reference.file in unsafe}
    edits = [e for e in edits if e.policy not in blocked]
    result = rewriting.apply(root, edits, write=not dry_run) if edits else UpdateResult()
    outcomes = [dataclasses.replace(o, status="failed", message=f"{blocked[o.policy]}: "
                                    f"{unsafe[blocked[o.policy]]}")
                if o.policy in blocked else o for o in outcomes]
    return [_settle(o, result, dry_run=dry_run) for o in outcomes], result


def _decide(root: Path, p: _Planned,
            index: scanning.Index | None = None) -> tuple[PolicyOutcome, list[rewriting.Edit]]:
    spec, name = p.loaded.policy.spec, p.loaded.policy.name
    image = spec.image_ref
    base = PolicyOutcome(name, p.loaded.file, "current", "", image=image.name)
    if p.tags is None:
        return dataclasses.replace(base, status="failed", message=p.error or "no tags"), []
    scan = scanning.find(root, image, spec.paths, policy=name, index=index)
    if scan.skipped:  # never update half of a policy's files
        problems = "; ".join(f"{s.file}: {s.reason}" for s in scan.skipped)
        return dataclasses.replace(base, status="failed", message=problems), []
    if not scan.references:
        where = ", ".join(spec.paths)
        return dataclasses.replace(base, message=f"no references to {image.name} in {where}"), []
    edits, reasons = [], []
    now = datetime.now(UTC)  # the one clock read; the policy itself is pure
    for reference in scan.references:
        decision = p.policy.select(p.tags or (), current=reference.ref.tag,
                                   current_digest=reference.ref.digest, now=now,
                                   declined=p.declined)
        reasons.append(decision.reason)
        tag = decision.tag or (reference.ref.tag if spec.pin_digest else None)
        if tag:  # the writer decides how the tag (and digest) is written into each reference
            edits.append(rewriting.Edit(reference, tag, name, digest=decision.digest))
    current = scan.references[0].ref.tag
    latest = next((e.tag for e in edits if e.tag), current)
    return dataclasses.replace(base, message="; ".join(dict.fromkeys(reasons)),
                               current=current, latest=latest), edits


async def _pin_digests(client: registry.RegistryClient, planned: Sequence[_Planned],
                       edits: list[rewriting.Edit]) -> tuple[list[rewriting.Edit],
                                                             dict[str, str]]:
    """Add the digest of the chosen tag where pin-digest (or a :digest marker) asks for it.

    Returns the edits and, for a digest that could not be fetched, file → reason.
    """
    pinned = {p.loaded.policy.name: p.loaded.policy.spec for p in planned}
    digests: dict[tuple[refs.ImageRef, str], str | ImageBotError] = {}
    done: list[rewriting.Edit] = []
    failed: dict[str, str] = {}
    for edit in edits:
        spec = pinned[edit.policy]
        if edit.tag is None or edit.digest is not None or not (
                spec.pin_digest or rewriting.needs_digest(edit.reference)):
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
            failed[edit.reference.file] = f"cannot pin the digest of {edit.tag}: {digest}"
        done.append(edit)
    return done, failed


def _settle(outcome: PolicyOutcome, result: UpdateResult, *, dry_run: bool) -> PolicyOutcome:
    changes = tuple(dataclasses.asdict(c) for c in result.changes if c.policy == outcome.policy)
    if not changes:
        return outcome
    status: Status = "planned" if dry_run else "updated"
    tags = ", ".join(sorted({f"{c['old_tag']} → {c['new_tag']}" for c in changes}))
    return dataclasses.replace(outcome, status=status, changes=changes,
                               message=f"{tags} in {len(changes)} place(s)")


def _publish(ws: workspaces.Workspace, result: UpdateResult, planned: Sequence[_Planned],
             identity: committing.Identity) -> tuple[str, ...]:
    """One commit per cycle, plus one per policy that asks for its own; then one push."""
    if not result:
        return ()
    shas = []
    for group in _commit_groups(result, planned):
        part = UpdateResult(tuple(c for c in result.changes if c.policy in group))
        message = _with_trailers(_commit_message(part, planned, repository=ws.url), part)
        sha = committing.commit(ws, part.files, message, identity)
        if sha is not None:
            shas.append(sha)
    if shas:
        committing.push(ws)
    return tuple(shas)


def _commit_message(result: UpdateResult, planned: Sequence[_Planned], *,
                    repository: str) -> str:
    by_policy = {p.loaded.policy.name: p.loaded for p in planned}
    changed = list(dict.fromkeys(c.policy for c in result.changes))
    if len(changed) == 1:
        loaded = by_policy[changed[0]]
        return messages.render(loaded.policy.spec.publish.message,
                               _context(loaded, result, repository),
                               where=loaded.where("spec.publish.message"))
    lines = [f"chore: update {len(changed)} images", ""]
    lines += [f"- {c.image}: {c.old_tag} → {c.new_tag} ({c.file})"
              for c in _unique_changes(result.changes)]
    return "\n".join(lines) + "\n"


def _context(loaded: loading.LoadedPolicy, result: UpdateResult, repository: str) -> dict[
        str, object]:
    changes = [c for c in result.changes if c.policy == loaded.policy.name]
    return {
        "image": loaded.policy.spec.image, "policy": loaded.policy.name,
        "old_tag": changes[0].old_tag, "new_tag": changes[0].new_tag,
        "changes": [dataclasses.asdict(c) for c in changes],
        "files": list(dict.fromkeys(c.file for c in changes)),
        "repository": workspaces.redact(repository),
    }


def _unique_changes(changes: Iterable[Change]) -> list[Change]:
    return list({(c.image, c.old_tag, c.new_tag, c.file): c for c in changes}.values())


def _report(name: str, repo: models.RepositoryConfig, failed: list[PolicyOutcome],
            outcomes: list[PolicyOutcome], result: UpdateResult, *,
            commits: tuple[str, ...] = (), error: str | None = None,
            pull_requests: tuple[dict[str, Any], ...] = ()) -> RepositoryReport:
    if error:
        outcomes = [dataclasses.replace(o, status="failed", message=f"{o.message}; {error}")
                    if o.status == "updated" else o for o in outcomes]
    return RepositoryReport(
        repository=name, branch=repo.branch, outcomes=tuple(failed + outcomes), commits=commits,
        skipped=tuple({"file": s.file, "reason": s.reason} for s in result.skipped),
        diff="".join(result.diffs.values()), error=error, pull_requests=pull_requests)


# --- publishing: identities, declined versions, commit groups, pull requests --------------


def _credentials(repo: models.RepositoryConfig) -> workspaces.Credentials:
    password = forges.read_secret(repo.password_env, repo.password_file,
                                  key="repositories[].password")
    return workspaces.Credentials(username=repo.username, password=password,
                                  ssh_key_file=repo.ssh_key_file,
                                  ssh_known_hosts_file=repo.ssh_known_hosts_file)


def _identity(git: models.GitConfig) -> committing.Identity:
    committer = (workspaces.Author(git.committer_name or git.author_name,
                                   git.committer_email or git.author_email)
                 if git.committer_name or git.committer_email else None)
    return committing.Identity(workspaces.Author(git.author_name, git.author_email),
                               committer, git.sign, git.signing_key)


def _forge(repo: models.RepositoryConfig) -> forges.Forge:
    if repo.forge is None:
        raise ConfigError(f"repository {workspaces.redact(repo.url)}: policies use "
                          f"publish.mode: pull-request but repositories[].forge is not set")
    try:
        return forges.connect(repo.forge)
    except ConfigError as exc:
        raise ConfigError(f"repository {workspaces.redact(repo.url)}: {exc}") from None


def _pr_policies(planned: Iterable[_Planned]) -> list[_Planned]:
    return [p for p in planned if p.publish.mode == "pull-request"]


def _pr_groups(planned: Iterable[_Planned]) -> dict[str, list[_Planned]]:
    groups: dict[str, list[_Planned]] = {}
    for p in planned:
        groups.setdefault(p.publish.group or p.name, []).append(p)
    return dict(sorted(groups.items()))


def _with_rollbacks(ws: workspaces.Workspace, planned: Sequence[_Planned], state: State,
                    identity: committing.Identity) -> list[_Planned]:
    """Decline versions a human rolled back, then attach each policy's declined set."""
    writes = {(w.policy, w.image): w for w in committing.bot_writes(ws, identity.author.email)}
    for p in planned:
        write = writes.get((p.name, p.loaded.policy.spec.image_ref.name))
        if write and p.tags is not None and _rolled_back(ws.root, p, write.tag):
            state.decline(p.name, write.image, write.tag,
                          f"rolled back on {ws.branch} after {write.commit[:12]}")
    return _attach_declined(planned, state)


def _attach_declined(planned: Sequence[_Planned], state: State) -> list[_Planned]:
    return [dataclasses.replace(p, declined=frozenset(
        state.declined(p.name, p.loaded.policy.spec.image_ref.name))) for p in planned]


def _record_closed_prs(forge: forges.Forge, branch: str, base: str, state: State) -> None:
    """PRs of ``branch`` a human closed without merging decline what they proposed."""
    for d in proposing.declined(forge, branch, base):
        state.decline(d.policy, d.image, d.tag, d.reason)


def _rolled_back(root: Path, p: _Planned, written: str) -> bool:
    """A human set a reference back below the tag the bot wrote (the policy ranks them)."""
    spec = p.loaded.policy.spec
    scan = scanning.find(root, spec.image_ref, spec.paths, policy=p.name)
    current = {r.ref.tag for r in scan.references if r.ref.tag}
    if not current or written in current:
        return False
    now = datetime.now(UTC)
    return any(p.policy.select([written], current=tag, now=now).tag == written
               for tag in current)


def _commit_groups(result: UpdateResult, planned: Sequence[_Planned]) -> list[set[str]]:
    """Policies committed together; ``commit: per-policy`` ones alone, unless they share a
    file with another group (one file cannot be split between two commits)."""
    own = {p.name for p in planned if p.publish.commit == "per-policy"}
    groups: list[set[str]] = []
    for policy in dict.fromkeys(c.policy for c in result.changes):
        files = {c.file for c in result.changes if c.policy == policy}
        joined = {policy}
        for group in list(groups):
            shares = any(c.file in files for c in result.changes if c.policy in group)
            if shares or (policy not in own and not group & own):
                joined |= group
                groups.remove(group)
        groups.append(joined)
    return groups


def _with_trailers(message: str, result: UpdateResult) -> str:
    lines = committing.trailers([(c.policy, c.image, c.new_tag) for c in result.changes])
    return f"{message.rstrip()}\n\n{lines}\n"


def _combine(first: RepositoryReport, second: RepositoryReport) -> RepositoryReport:
    return dataclasses.replace(
        first, outcomes=first.outcomes + second.outcomes, commits=first.commits + second.commits,
        skipped=first.skipped + second.skipped, diff=first.diff + second.diff,
        pull_requests=first.pull_requests + second.pull_requests,
        error="; ".join(e for e in (first.error, second.error) if e) or None)


async def _pull_request_mode(ws: workspaces.Workspace, repo: models.RepositoryConfig,
                             config: models.BotConfig, client: registry.RegistryClient,
                             forge: forges.Forge | str | None, key: str,
                             members: Sequence[_Planned], *, state: State,
                             dry_run: bool) -> RepositoryReport:
    """One bot branch: edit on the target tip, then propose, update or withdraw its PR."""
    name = workspaces.redact(repo.url)
    branch = proposing.branch_name(key)
    try:
        if isinstance(forge, str):
            raise ConfigError(forge)
        if forge is not None:
            await asyncio.to_thread(_record_closed_prs, forge, branch, ws.branch, state)
            members = _attach_declined(members, state)
        await asyncio.to_thread(ws.reset)
        outcomes, result = await _update(ws.root, members, client, dry_run=dry_run)
        if dry_run or forge is None or any(o.status == "failed" for o in outcomes):
            return _report(name, repo, [], outcomes, result)
        done = await _propose_or_withdraw(ws, client, forge, branch, members, result,
                                          _identity(config.git))
    except ImageBotError as exc:
        failed = [PolicyOutcome(p.name, p.loaded.file, "failed", f"{branch}: {exc}",
                                image=p.loaded.policy.spec.image_ref.name) for p in members]
        return _report(name, repo, [], failed, UpdateResult(), error=f"{branch}: {exc}")
    finally:
        await asyncio.to_thread(ws.reset)
    return _report(name, repo, [], [_proposed(o, done) for o in outcomes], result,
                   pull_requests=({"branch": branch, "action": done.action,
                                   "number": done.number, "url": done.url,
                                   "message": done.message, "pushed": done.pushed},))


async def _propose_or_withdraw(ws: workspaces.Workspace, client: registry.RegistryClient,
                               forge: forges.Forge, branch: str, members: Sequence[_Planned],
                               result: UpdateResult,
                               identity: committing.Identity) -> proposing.Outcome:
    if not result:  # every member is current: a PR still open is no longer needed
        return await asyncio.to_thread(
            proposing.withdraw, ws, forge, branch, ws.branch, bot_email=identity.author.email,
            reason=f"{ws.branch} already has what this proposed")
    proposal = await _proposal(ws, client, branch, members, result)
    return await asyncio.to_thread(proposing.propose, ws, forge, proposal, identity)


def _proposed(outcome: PolicyOutcome, done: proposing.Outcome) -> PolicyOutcome:
    if outcome.status != "updated":
        return outcome
    status: Status = "blocked" if done.action == "blocked" else "proposed"
    return dataclasses.replace(outcome, status=status,
                               message=f"{outcome.message}; {done.message}")


async def _proposal(ws: workspaces.Workspace, client: registry.RegistryClient, branch: str,
                    members: Sequence[_Planned], result: UpdateResult) -> proposing.Proposal:
    message = _commit_message(result, members, repository=ws.url)
    changed = {c.policy for c in result.changes}
    publish = [p.publish for p in members if p.name in changed]
    title = message.splitlines()[0]
    if len(publish) == 1 and publish[0].title:
        loaded = next(p.loaded for p in members if p.name in changed)
        title = messages.render(publish[0].title, _context(loaded, result, ws.url),
                                where=loaded.where("spec.publish.title")).strip()
    rows = [await _row(client, c, result) for c in _unique_rows(result.changes)]
    spec = forges.PullRequestSpec(
        head=branch, base=ws.branch, title=title,
        body=messages.pr_body(rows, now=datetime.now(UTC)),
        labels=tuple(dict.fromkeys(label for p in publish for label in p.labels)),
        reviewers=tuple(dict.fromkeys(r for p in publish for r in p.reviewers)),
        assignees=tuple(dict.fromkeys(a for p in publish for a in p.assignees)),
        draft=any(p.draft for p in publish), auto_merge=any(p.auto_merge for p in publish))
    return proposing.Proposal(branch, result.files, _with_trailers(message, result), spec)


def _unique_rows(changes: Iterable[Change]) -> list[Change]:
    return list({(c.policy, c.image, c.old_tag, c.new_tag): c for c in changes}.values())


async def _row(client: registry.RegistryClient, change: Change,
               result: UpdateResult) -> messages.Row:
    files = tuple(dict.fromkeys(c.file for c in result.changes
                                if (c.policy, c.image) == (change.policy, change.image)))
    row = messages.Row(change.policy, change.image, change.old_tag, change.new_tag, files=files)
    try:
        info = await client.image_info(refs.parse(change.image), change.new_tag)
    except ImageBotError:
        return row  # the table says "–"; not worth failing the proposal for
    return dataclasses.replace(row, digest=info.digest, created=info.created,
                               source=info.labels.get("org.opencontainers.image.source"))
