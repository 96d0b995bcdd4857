"""One cycle: Git → policies → registry tags → decisions → file edits → commit and push.

This is the only module that composes the stages; each step below calls one of them.
A failure in one policy is recorded and the others go on; a failure of the repository
itself (cannot fetch, cannot push) fails that repository and changes nothing in Git.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from image_bot import refs
from image_bot.config import loading, models
from image_bot.engine import selecting
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport, Status
from image_bot.errors import ConfigError, ImageBotError, PushRejected
from image_bot.policy import strategies
from image_bot.publish import committing, messages
from image_bot.publish import workspace as workspaces
from image_bot.registry import client as registry
from image_bot.state import State
from image_bot.update import rewriting, scanning
from image_bot.update.result import Change, UpdateResult

PUSH_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class _Planned:
    """A policy that loaded and built, with the tags of its image (or why they are missing)."""

    loaded: loading.LoadedPolicy
    policy: strategies.Policy
    tags: list[str] | None
    error: str | None


async def run_once(config: models.BotConfig, *, dry_run: bool = False,
                   client: registry.RegistryClient | None = None,
                   selection: selecting.Selection = selecting.EVERYTHING) -> CycleReport:
    """Run every repository of ``config`` once; with ``dry_run`` nothing is written to Git.

    ``selection`` narrows the run to some policies (a webhook's image, a shard).
    """
    owned = client is None
    state = State.in_dir(config.state_dir) if owned else None
    client = client or registry.RegistryClient(config.registries, state=state)
    try:
        reports = [await _run_repository(config, repo, client, dry_run=dry_run,
                                         selection=selection)
                   for repo in config.repositories]
    finally:
        if owned:
            await client.aclose()
        if state:
            state.close()
    return CycleReport(tuple(reports), dry_run=dry_run, registry_requests=client.requests)


async def _run_repository(config: models.BotConfig, repo: models.RepositoryConfig,
                          client: registry.RegistryClient, *, dry_run: bool,
                          selection: selecting.Selection) -> RepositoryReport:
    name = workspaces.redact(repo.url)
    try:
        # 1. the config repository at its remote tip
        ws = await asyncio.to_thread(workspaces.Workspace.open, repo.url, repo.branch,
                                     config.state_dir)
        # 2. policies from Git; broken ones become failed outcomes
        policy_set = loading.load_policies(ws.root / repo.policies, display_root=ws.root)
        policy_set = _select(policy_set, name, selection)
        planned, failed = _build_policies(policy_set, repo.branch)
        # 3. tags, once per image, concurrently
        planned = await _fetch_tags(client, planned)
    except ImageBotError as exc:
        return RepositoryReport(name, repo.branch, error=str(exc))
    # 4-6. decide, edit, publish (retried on a moved branch: redo the edit on the new tip)
    author = workspaces.Author(config.git.author_name, config.git.author_email)
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        outcomes, result = await _update(ws.root, planned, client, dry_run=dry_run)
        try:
            commits = () if dry_run else await asyncio.to_thread(
                _publish, ws, result, planned, author)
        except PushRejected as exc:
            if attempt == PUSH_ATTEMPTS:
                return _report(name, repo, failed, outcomes, result, error=str(exc))
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
            filled.append(dataclasses.replace(p, tags=tags))
    return filled


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
    for reference in scan.references:
        decision = p.policy.select(p.tags, current=reference.ref.tag)
        reasons.append(decision.reason)
        tag = decision.tag or (reference.ref.tag if spec.pin_digest else None)
        if tag:  # the writer decides how the tag (and digest) is written into each reference
            edits.append(rewriting.Edit(reference, tag, name))
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
        if edit.tag is None or not (spec.pin_digest or rewriting.needs_digest(edit.reference)):
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
             author: workspaces.Author) -> tuple[str, ...]:
    if not result:
        return ()
    message = _commit_message(result, planned, repository=ws.url)
    sha = committing.commit(ws, result.files, message, author)
    if sha is None:
        return ()
    committing.push(ws)
    return (sha,)


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
            commits: tuple[str, ...] = (), error: str | None = None) -> RepositoryReport:
    if error:
        outcomes = [dataclasses.replace(o, status="failed", message=f"{o.message}; {error}")
                    if o.status == "updated" else o for o in outcomes]
    return RepositoryReport(
        repository=name, branch=repo.branch, outcomes=tuple(failed + outcomes), commits=commits,
        skipped=tuple({"file": s.file, "reason": s.reason} for s in result.skipped),
        diff="".join(result.diffs.values()), error=error)
