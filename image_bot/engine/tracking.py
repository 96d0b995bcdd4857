"""Engine, deploy loop: the bot's commits × the agents' reports → committed, deployed, degraded,
and a degraded update rolled back in Git.

For every bot commit on the target branch (its ``Image-Bot-Update`` trailers; merged bot
PRs keep them) the state DB holds one *update* per (policy, image): the files and tags it
changed, when the tag was pushed (webhook time, else the image's creation time) and when
it was committed. An agent whose path covers a changed file and whose report is at a
revision descending from the commit (``git merge-base --is-ancestor``) judges it:
*deployed* (every service of the image Synced + Healthy on the new tag) or *degraded*
(Degraded, rolled back by the agent, or running another tag).

A degraded update of a policy with ``rollback.on: degraded`` is written back to the
previous tag: the same splice and verification as any update (``update.rewriting``),
only on the lines that commit wrote and nobody changed since, published as a commit (or a
PR in pull-request mode) with an ``Image-Bot-Rollback:`` trailer. The tag is declined
(never proposed again), and each update is rolled back at most once: no loops.

Nothing here writes history, metrics or logs: it returns :class:`Transition` values that
``Engine.record`` turns into them (and into notifications).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime
from typing import Any

from image_bot import checkout, refs
from image_bot.config import loading, models
from image_bot.engine import overrides, reporting
from image_bot.engine.context import Engine
from image_bot.engine.report import Transition
from image_bot.errors import ImageBotError
from image_bot.publish import committing, forges, proposing
from image_bot.publish import workspace as workspaces
from image_bot.state import encode_updates
from image_bot.sync import status
from image_bot.update import rewriting, scanning

ROLLBACK_TRAILER = "Image-Bot-Rollback"
HISTORY = 50  # bot commits read back per run
_OPEN = ("committed", "deployed", "degraded")  # states an agent can still move


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    commit: str
    committed_at: float
    policy: str
    image: str
    tag: str
    override: overrides.Override | None = None  # an operator wrote this tag (its trailers)


@dataclasses.dataclass(frozen=True, slots=True)
class Before:
    """A commit this run pushed: the files it changed, and an index of the checkout that
    read them as they were before it (the edit's: the scans its stages made are reused)."""

    files: tuple[str, ...]
    index: checkout.Index


def key(repository: str, commit: str, policy: str, image: str) -> str:
    return f"{repository}#{commit}#{policy}#{image}"


Forge = Callable[[], forges.Forge | None]


def _no_forge() -> forges.Forge | None:
    return None


async def register(engine: Engine, repo: models.RepositoryConfig, ws: workspaces.Workspace,
                   policies: loading.PolicySet, *, pushed: Sequence[str] = (),
                   parents: Mapping[str, Before] | None = None) -> None:
    """Record the bot's commits on the target branch not seen yet (newest per policy:
    *committed*, older ones: *superseded*). ``pushed``: commits this run just pushed, timed
    now (Git's commit times have whole seconds); ``parents``: for some of them, what each
    changed and the edit's reading of it before (neither read nor scanned again).

    Only the commits since the tip the last registration of this branch saw are read (at
    that tip: nothing to read); the first one, or one whose tip Git no longer knows, reads
    the last ``HISTORY`` commits."""
    await Registration(engine, repo, ws, policies).finish(pushed=pushed, parents=parents)


class Registration:
    """:func:`register`, whose reading can be done ahead: while git pushes the bot's commit
    (:meth:`prepare`, in the pushing thread), so that once the push is through only the
    storing is left (:meth:`finish`)."""

    def __init__(self, engine: Engine, repo: models.RepositoryConfig,
                 ws: workspaces.Workspace, policies: loading.PolicySet) -> None:
        self._engine, self._ws = engine, ws
        self._repository = workspaces.redact(repo.url)
        self._by_policy = {p.policy.name: p for p in policies.policies}
        self._ready: _Registered | None = None

    def prepare(self, pushed: Sequence[str], parents: Mapping[str, Before]) -> None:
        """Read what registering would store if the target branch's tip became
        ``pushed[-1]`` (the commits being pushed, the last one on top). Only a head start:
        :meth:`finish` uses it only if the push moved the tip there and nothing was
        registered meanwhile; whatever fails here is done again, and reported, there."""
        try:
            since = self._engine.state.registered(self._repository, self._ws.branch)
            self._ready = self._read(pushed[-1], since, pushed, parents)
        except Exception:  # a head start only: finish reads again, and reports what fails
            self._ready = None

    async def finish(self, *, pushed: Sequence[str] = (),
                     parents: Mapping[str, Before] | None = None) -> None:
        """Register up to the target branch's tip: what :meth:`prepare` read, if it read
        for this tip from the same start; else read now."""
        tip = await asyncio.to_thread(self._ws.target_sha)
        since = self._engine.state.registered(self._repository, self._ws.branch)
        if tip is None or tip == since:
            return
        ready = self._ready
        if ready is None or (ready.tip, ready.since) != (tip, since):
            ready = await asyncio.to_thread(self._read, tip, since, pushed, parents or {})
        for policy, image, tag, reason in ready.declines:
            self._engine.state.decline(policy, image, tag, reason)
        self._engine.state.put_updates(ready.updates,
                                       registered=(self._repository, self._ws.branch, tip))

    def _read(self, tip: str, since: str | None, pushed: Sequence[str],
              parents: Mapping[str, Before]) -> _Registered:
        """The updates to store for the bot's writes in ``since..tip`` (blocking)."""
        engine, ws, repository = self._engine, self._ws, self._repository
        now = engine.clock.now().timestamp()
        writes = [dataclasses.replace(w, committed_at=now) if w.commit in pushed else w
                  for w in _bot_writes(ws, engine.identity.author.email, tip, since=since)]
        keys = {w: key(repository, w.commit, w.policy, w.image) for w in writes}
        # looked up by key: the most recent updates (``updates()``) may not reach back to
        # every commit of the log (other repositories, per-cycle commits of many policies)
        known = engine.state.updates_at(keys.values())
        fresh = [w for w in writes if keys[w] not in known]
        changed = _what_changed(ws, fresh, self._by_policy, parents)
        newest: dict[tuple[str, str], str] = {}  # (policy, image) → its newest write's key
        for write in writes:  # newest first
            newest.setdefault((write.policy, write.image), keys[write])
        put: list[tuple[str, dict[str, Any]]] = []  # stored at the end, in one transaction
        declines: list[tuple[str, str, str, str]] = []
        # a newer commit took over from the latest update known of its policy and image
        # (read before, or now in an older commit of these)
        for update_key, seen in engine.state.latest_updates(repository, ws.branch).items():
            if newest.get((seen["policy"], seen["image"]), update_key) != update_key:
                state = seen["state"] if seen["state"] not in ("committed", "degraded") \
                    else "superseded"
                put.append((update_key, {**seen, "state": state, "latest": False}))
        for write in fresh:  # newest first
            update_key = keys[write]
            latest = newest[(write.policy, write.image)] == update_key
            files, old = changed[write]
            rollback = write.override
            if rollback and (rollback.action, rollback.policy) == ("rollback", write.policy) \
                    and old and old[0] and old[0] != write.tag:
                # `image-bot rollback`, run anywhere: its "no" reaches every state from Git
                declines.append((write.policy, write.image, old[0], rollback.decline_reason))
            put.append((update_key, {
                "repository": repository, "branch": ws.branch, "commit": write.commit,
                "policy": write.policy, "image": write.image, "tag": write.tag,
                "old_tag": old[0] if old else None, "old_digest": old[1] if old else None,
                "files": files, "committed_at": write.committed_at,
                # a webhook's time, if one came; else the image's creation time, asked for
                # when an agent deploys it (a cycle may commit hundreds of updates)
                "pushed_at": engine.state.pushed_at(write.image, write.tag),
                "state": "committed" if latest else "superseded", "latest": latest,
                "agents": {}, "reason": "", "rollback": None, "degraded_by": None}))
        return _Registered(tip, since, tuple(encode_updates(put)), tuple(declines))


@dataclasses.dataclass(frozen=True, slots=True)
class _Registered:
    """What registering the bot's writes in ``since..tip`` stores."""

    tip: str
    since: str | None
    updates: tuple[tuple[str, str], ...]  # key, data: encoded (encode_updates)
    declines: tuple[tuple[str, str, str, str], ...]  # policy, image, tag, reason


async def follow(engine: Engine, repo: models.RepositoryConfig, ws: workspaces.Workspace,
                 policies: loading.PolicySet, *,
                 forge: Forge = _no_forge) -> tuple[list[Transition], list[str],
                                                    list[ImageBotError]]:
    """Register new bot commits, judge open updates against the agents' last reports, and
    roll back degraded ones. Returns the transitions, the rollback commits pushed and the
    errors (a failed rollback is retried on the next run)."""
    name = workspaces.redact(repo.url)
    by_policy = {p.policy.name: p for p in policies.policies}
    # 1. the bot's commits, newest first, and what each one changed
    await register(engine, repo, ws, policies)
    # 2. the agents' reports on this repository and branch: posted over HTTP, or status
    # files of agents sharing the state dir (a posted report wins for the same name)
    stale_after = engine.config.agents.stale_after if engine.config.agents else 3
    heard = reporting.agents(engine.state.agent_reports(), now=engine.clock.now().timestamp(),
                             stale_after=stale_after)
    posted = {a.report.agent: a.report for a in heard}
    local = {r.agent: r for r in status.read_all(status.folder(engine.config.state_dir))}
    reports = [r for r in {**local, **posted}.values()
               if reporting.same_repository(r.repository, name) and r.branch == repo.branch]
    # agents that went silent are not waited for (a decommissioned host)
    live = {*local, *(a.report.agent for a in heard if not a.stale)}
    transitions: list[Transition] = []
    # the latest update of each policy and image on this branch, however many others
    # (other repositories, older commits) were tracked after it; judged only by reports
    latest = engine.state.latest_updates(name, ws.branch)
    judging = {key: update for key, update in latest.items()
               if update["state"] in _OPEN} if reports else {}
    judged = await asyncio.to_thread(  # one hop to the git thread, not one per update
        lambda: {key: _judge(ws, update, reports, live) for key, update in judging.items()}
    ) if judging else {}
    for update_key, changed in judged.items():
        if changed is not None:
            update, new = await _with_push_time(engine, *changed)
            engine.state.put_update(update_key, update)
            transitions += new
    if any(changed is not None for changed in judged.values()):
        latest = engine.state.latest_updates(name, ws.branch)  # as judged now
    # 3. roll back what is degraded and asks for it
    commits: list[str] = []
    errors: list[ImageBotError] = []
    for update_key, update in latest.items():
        loaded = by_policy.get(update["policy"])
        if (update["state"] != "degraded"
                or loaded is None or loaded.policy.spec.rollback.on != "degraded"
                or loaded.policy.spec.suspend):  # frozen: judged, never rolled back
            continue
        try:
            done = await asyncio.to_thread(_roll_back, engine, ws, loaded, update,
                                           forge=forge)
        except ImageBotError as exc:
            errors.append(exc)
            continue
        finally:
            await asyncio.to_thread(ws.reset)
        engine.state.put_update(update_key, done)
        transitions.append(_transition(done, "rolled-back", done["degraded_by"]))
        if done["rollback"].get("commit") and done["rollback"].get("pushed"):
            commits.append(done["rollback"]["commit"])
    return transitions, commits, errors


# --- 1. register --------------------------------------------------------------------------


def _bot_writes(ws: workspaces.Workspace, email: str, tip: str, *,
                since: str | None = None) -> list[_Write]:
    """The writes of the bot's commits up to ``tip`` (newest first): those after ``since``
    when Git still knows it, else those of the last ``HISTORY`` commits."""
    try:
        commits = committing.bot_commits(ws, email, f"{since}..{tip}" if since else tip,
                                         count=HISTORY)
    except ImageBotError:
        if since is None:
            raise
        # `since` is gone (a new clone, history rewritten)
        commits = committing.bot_commits(ws, email, tip, count=HISTORY)
    found = []
    for sha, committed, body in commits:
        override = overrides.from_message(body)  # once per commit, not per update in it
        found += [_Write(sha, committed, policy, image, tag, override)
                  for policy, image, tag in committing.written(body)]
    return found


_Changed = tuple[list[str], tuple[str | None, str | None] | None]


def _what_changed(ws: workspaces.Workspace, writes: Sequence[_Write],
                  by_policy: dict[str, loading.LoadedPolicy],
                  parents: Mapping[str, Before]) -> dict[_Write, _Changed]:
    """Per write: the files the commit changed under its policy's paths that held its image
    (a per-cycle commit also changes other policies' files: an agent covering only those
    must not judge it), and the tag (and digest) they had before — read from the parent
    commit with the update stage's own scanner. Each commit's files are read once (one
    ``git show`` for their names, ``Workspace.files_at`` for their texts), unless this run
    made the commit and ``parents`` has the edit's index of them: then the scans the edit
    made of each policy's files are the answer (nothing is read or scanned again)."""
    found: dict[_Write, _Changed] = {}
    by_commit: dict[str, list[_Write]] = {}
    for write in writes:
        by_commit.setdefault(write.commit, []).append(write)
    for commit, group in by_commit.items():
        known = parents.get(commit)
        if known is not None:
            files, before = sorted(known.files), known.index
        else:
            files = [f for f in ws.run("show", "--no-renames", "--name-only", "--format=",
                                       commit).splitlines() if f.strip()]
            before = checkout.Index.of(ws.root, ws.files_at(  # read once for all its writes
                f"{commit}^", files, max_bytes=checkout.DEFAULT_MAX_FILE_BYTES))
        for write in group:
            found[write] = _changed_by(write, by_policy.get(write.policy), files,
                                       before=before)
    return found


def _changed_by(write: _Write, loaded: loading.LoadedPolicy | None, files: list[str], *,
                before: checkout.Index) -> _Changed:
    """``before`` holds (at least) the commit's ``files`` as they were before it."""
    if loaded is None or not files:
        return files, None
    spec, changed = loaded.policy.spec, set(files)
    then = scanning.find(before.root, spec.image_ref, spec.paths, policy=write.policy,
                         index=before, namespace=loaded.policy.metadata.namespace)
    held = [r for r in then.references if r.file in changed]
    mine = sorted({r.file for r in held}) or [
        name for name in map(before.shown, before.files(spec.paths)) if name in changed]
    tags = [(r.ref.tag, r.ref.digest) for r in held if r.ref.tag]
    return mine or files, (tags[0] if tags else None)


async def _with_push_time(engine: Engine, update: dict[str, Any],
                          transitions: list[Transition]) -> tuple[dict[str, Any],
                                                                  list[Transition]]:
    """A deployed update without a webhook's push time takes the image's creation time (one
    manifest and config request, only now that a transition reports it)."""
    if update.get("pushed_at") is not None or not any(t.state == "deployed"
                                                      for t in transitions):
        return update, transitions
    at = await _created_at(engine, update["image"], update["tag"])
    committed = update.get("committed_at")
    if at is None or not committed:
        return update, transitions
    return {**update, "pushed_at": at}, [dataclasses.replace(t, push_to_commit=committed - at)
                                         for t in transitions]


async def _created_at(engine: Engine, image: str, tag: str) -> float | None:
    try:
        info = await engine.client.image_info(refs.parse(image), tag)
    except (ImageBotError, refs.InvalidReference):
        return None
    created = info.created
    return created.timestamp() if isinstance(created, datetime) else None


# --- 2. judge -----------------------------------------------------------------------------


def _judge(ws: workspaces.Workspace, update: dict[str, Any],
           reports: Sequence[status.SyncReport],
           live: Set[str] = frozenset()) -> tuple[dict[str, Any], list[Transition]] | None:
    """The update with each covering agent's verdict, and the transitions; None: no news.

    A live agent running the image at a revision before the commit is *pending* (on its
    way): listed, so that "every agent of the stage" (promotion) waits for it; no transition.
    """
    agents = dict(update["agents"])
    transitions = []
    changed = False
    for report in reports:
        if not reporting.covers(report.path, update["files"]) or not report.revision:
            continue
        if not _is_ancestor(ws, update["commit"], report.revision):
            if report.agent in live and report.agent not in agents \
                    and _runs_image(report, update["image"]):
                agents[report.agent] = {"state": "pending", "service": None, "reason": "",
                                        "revision": report.revision, "at": None}
                changed = True
            continue
        verdict = _verdict(report, update)
        if verdict is None:
            continue
        state, service, reason = verdict
        before = agents.get(report.agent, {}).get("state")
        if before == state:
            continue
        at = report.finished_at or report.started_at
        agents[report.agent] = {"state": state, "service": service, "reason": reason,
                                "revision": report.revision, "at": at}
        transitions.append(_transition({**update, "agents": agents}, state, report.agent))
    if not transitions and not changed:
        return None
    states = {a["state"] for a in agents.values()}
    overall = "degraded" if "degraded" in states else "deployed" if "deployed" in states \
        else update["state"]
    degraded = next((n for n, a in agents.items() if a["state"] == "degraded"), None)
    reason = agents[degraded]["reason"] if degraded else ""
    return {**update, "agents": agents, "state": overall, "reason": reason,
            "degraded_by": degraded}, transitions


def _is_ancestor(ws: workspaces.Workspace, commit: str, revision: str) -> bool:
    try:
        ws.run("merge-base", "--is-ancestor", commit, revision)
    except ImageBotError:  # exit 1 (not an ancestor) or an unknown revision
        return False
    return True


def _verdict(report: status.SyncReport,
             update: dict[str, Any]) -> tuple[str, str | None, str] | None:
    """deployed / degraded / None (still on its way) for the services running the image."""
    running = [(s, tag) for s in report.services for name, tag in reporting.images(s.image)
               if name == update["image"]]
    if not running:
        return None
    for s, _ in running:
        if s.health == "Degraded" or s.action in ("rolled-back", "failed"):
            return "degraded", s.service, s.error or f"{s.service} is {s.health}"
    if all(s.sync == "Synced" and s.health == "Healthy" and tag == update["tag"]
           for s, tag in running):
        return "deployed", running[0][0].service, ""
    for s, tag in running:
        if s.sync == "OutOfSync" and s.health == "Healthy" and tag != update["tag"]:
            return "degraded", s.service, f"{s.service} runs {tag} instead of {update['tag']}"
    return None


def _runs_image(report: status.SyncReport, image: str) -> bool:
    return any(name == image for s in report.services
               for name, _ in reporting.images(s.image))


def _transition(update: dict[str, Any], state: str, agent: str | None) -> Transition:
    seen = update["agents"].get(agent or "", {})
    pushed, committed = update.get("pushed_at"), update.get("committed_at")
    at = seen.get("at")
    rollback = update.get("rollback") or {}
    return Transition(
        state=state,  # type: ignore[arg-type]
        repository=update["repository"], policy=update["policy"], image=update["image"],
        old_tag=update.get("old_tag"), tag=update["tag"], commit=update["commit"],
        agent=agent or "", service=seen.get("service"),
        reason=str((rollback if state == "rolled-back" else seen).get("reason") or ""),
        push_to_commit=(committed - pushed) if pushed and committed else None,
        commit_to_deployed=(at - committed) if state == "deployed" and at and committed
        else None,
        rollback_commit=rollback.get("commit"), rollback_url=rollback.get("url"))


# --- 3. roll back -------------------------------------------------------------------------


def _roll_back(engine: Engine, ws: workspaces.Workspace, loaded: loading.LoadedPolicy,
               update: dict[str, Any], *, forge: Forge) -> dict[str, Any]:
    """Write the previous tag back where this update wrote the new one; the update, marked."""
    agent = update["degraded_by"] or "?"
    seen = update["agents"].get(agent, {})
    why = (f"agent {agent} reported {seen.get('service') or update['image']} degraded: "
           f"{seen.get('reason') or 'no reason given'}")
    # 1. never again: the tag is declined before anything else can fail
    engine.state.decline(update["policy"], update["image"], update["tag"],
                         f"rolled back: {why}"[:500])
    old = update.get("old_tag")
    if not old:
        return _marked(update, "skipped", "the previous tag is unknown")
    # 2. the same splice as any update, only on lines that commit wrote and nobody changed
    ws.reset()
    edits = _edits(ws, loaded, update)
    if not edits:
        return _marked(update, "skipped", f"nothing to roll back: {update['tag']} is no "
                       f"longer written where {update['commit'][:12]} wrote it")
    result = rewriting.apply(ws.root, edits, write=True, in_place=True)
    if not result:
        reasons = "; ".join(f"{s.file}: {s.reason}" for s in result.skipped)
        return _marked(update, "skipped", f"cannot write {old} back: {reasons}")
    # 3. published like any update: a commit, or a pull request in pull-request mode
    message = _message(update, old, why, result.files)
    if loaded.policy.spec.publish.mode == "pull-request":
        return _propose(engine, ws, update, message, result.files, forge=forge, why=why)
    sha = committing.commit(ws, result.files, message, engine.identity)
    if sha is None:
        return _marked(update, "skipped", "the rollback changed nothing")
    committing.push(ws)  # a moved branch: PushRejected, retried on the next run
    return _marked(update, "committed", why, commit=sha, pushed=True)


def _edits(ws: workspaces.Workspace, loaded: loading.LoadedPolicy,
           update: dict[str, Any]) -> list[rewriting.Edit]:
    spec = loaded.policy.spec
    written = _written_lines(ws, update["commit"], update["files"])
    scan = scanning.find(ws.root, spec.image_ref, update["files"], policy=update["policy"])
    edits = []
    for reference in scan.references:
        if reference.ref.tag != update["tag"] or reference.file not in update["files"]:
            continue
        lines = (ws.root / reference.file).read_text(encoding="utf-8").splitlines()
        touched = {f.line for f in reference.fields if f.role in ("image", "tag")}
        if all(0 < n <= len(lines) and lines[n - 1] in written.get(reference.file, set())
               for n in touched):
            edits.append(rewriting.Edit(reference, update["old_tag"], update["policy"],
                                        digest=update.get("old_digest")))
    return edits


def _written_lines(ws: workspaces.Workspace, commit: str,
                   files: Sequence[str]) -> dict[str, set[str]]:
    """The lines ``commit`` added, per file (a human's later edit no longer matches)."""
    diff = ws.run("diff", "--no-renames", "-U0", f"{commit}^", commit, "--", *files)
    lines: dict[str, set[str]] = {}
    current = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else None
        elif line.startswith("+") and current is not None:
            lines.setdefault(current, set()).add(line[1:])
    return lines


def _message(update: dict[str, Any], old: str, why: str, files: Sequence[str]) -> str:
    return (f"revert: roll {update['image']} back to {old}\n\n"
            f"{update['tag']} was committed in {update['commit'][:12]}; {why}.\n"
            f"image-bot wrote {old} back into {', '.join(files)} and will not propose "
            f"{update['tag']} again.\n\n"
            f"{ROLLBACK_TRAILER}: {update['policy']} {update['image']} {update['tag']} "
            f"{old} {update['commit']}\n")


def _propose(engine: Engine, ws: workspaces.Workspace, update: dict[str, Any], message: str,
             files: Sequence[str], *, forge: Forge, why: str) -> dict[str, Any]:
    client = forge()
    if client is None:
        return _marked(update, "skipped", "pull-request mode without a forge")
    branch = proposing.branch_name(f"rollback-{update['policy']}")
    title = message.splitlines()[0]
    spec = forges.PullRequestSpec(head=branch, base=ws.branch, title=title,
                                  body=message.split("\n", 2)[2])
    done = proposing.propose(ws, client, proposing.Proposal(branch, tuple(files), message, spec),
                             engine.identity)
    return _marked(update, done.action, why, url=done.url, commit=done.pushed)


def _marked(update: dict[str, Any], action: str, reason: str, *, commit: str | None = None,
            url: str | None = None, pushed: bool = False) -> dict[str, Any]:
    return {**update, "state": "rolled-back" if action != "skipped" else "degraded-kept",
            "rollback": {"action": action, "reason": reason, "commit": commit, "url": url,
                         "pushed": pushed}}

