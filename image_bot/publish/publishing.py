"""Publishing modes behind one interface: commit to the branch, or propose a pull request.

Sits at the end of the pipeline: it receives an ``UpdateResult`` already written into the
working tree and turns it into commits, pushes and pull requests. It renders messages,
groups commits, builds pull-request specs and adapts the bot config (identity,
credentials, forge) to Git. It never reads a registry or edits YAML; the engine gives it
what the registry said (``messages.Row``) and redoes the edit when a branch moved.

Adding a mode is one class and one line in :data:`MODES`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import textwrap
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from image_bot.config import loading, models, secrets
from image_bot.errors import ConfigError, ImageBotError
from image_bot.publish import committing, forges, messages, proposing
from image_bot.publish import workspace as workspaces
from image_bot.update.result import Change, UpdateResult


@dataclass(frozen=True, slots=True)
class Published:
    """What a mode did with one batch: commits pushed to the branch, or a PR outcome."""

    commits: tuple[str, ...] = ()
    files: tuple[tuple[str, ...], ...] = ()  # what each of ``commits`` changed
    branch: str | None = None  # the bot branch (pull-request mode), or the push-branch
    proposal: proposing.Outcome | None = None
    already: bool = False  # push-branch: it held this very change already (nothing pushed)


def _nothing() -> None:
    pass


def _unheeded(done: Published) -> None:
    pass


def _once(function: Callable[[], None]) -> Callable[[], None]:
    """``function``, called at most once however often it is asked for (a second call after
    it raised calls it again)."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            function()
            done = True

    return call


class Mode(Protocol):
    """One way of publishing; the engine runs each batch through ``declined`` then ``publish``."""

    #: a moved target branch is retried (redo the edit on the new tip), not reported
    retries_moved_branch: bool
    #: the mode talks to GitHub/GitLab (the engine connects the forge client for it)
    uses_forge: bool
    #: one failed member holds back the whole batch (one PR proposes all or nothing)
    atomic: bool

    def batches(self, policies: Sequence[loading.LoadedPolicy]) -> dict[str, list[str]]:
        """Batch key → the names of the policies published together (one commit set, one PR)."""

    def declined(self, forge: forges.Forge | None, key: str,
                 base: str) -> list[proposing.Declined]:
        """Versions a human turned down for this batch since the last run."""

    def publish(self, ws: workspaces.Workspace, key: str, result: UpdateResult, *,
                policies: Sequence[loading.LoadedPolicy], identity: committing.Identity,
                forge: forges.Forge | None, rows: Sequence[messages.Row],
                now: datetime, before_push: Callable[[], None] = _nothing,
                while_pushing: Callable[[Published], None] = _unheeded) -> Published:
        """Turn the edits in the working tree into commits or a pull request.
        ``before_push`` is called once before anything leaves the clone (a push, a
        forge call); what it raises ends the publish there. ``while_pushing`` is given
        what the publish returns if commits are pushed to the target branch, while git
        pushes them (it must not raise; the push may still fail)."""


class CommitMode:
    """Commit on the target branch and push (never forced): one commit per cycle, plus one
    per policy that asks for its own."""

    retries_moved_branch = True
    uses_forge = False
    atomic = False

    def batches(self, policies: Sequence[loading.LoadedPolicy]) -> dict[str, list[str]]:
        """``commit`` for the target branch; ``commit:BRANCH`` per ``push-branch``."""
        batches: dict[str, list[str]] = {}
        for p in policies:
            push_branch = p.policy.spec.publish.push_branch
            key = f"commit:{push_branch}" if push_branch else "commit"
            batches.setdefault(key, []).append(p.policy.name)
        return batches

    def declined(self, forge: forges.Forge | None, key: str,
                 base: str) -> list[proposing.Declined]:
        return []

    def publish(self, ws: workspaces.Workspace, key: str, result: UpdateResult, *,
                policies: Sequence[loading.LoadedPolicy], identity: committing.Identity,
                forge: forges.Forge | None, rows: Sequence[messages.Row],
                now: datetime, before_push: Callable[[], None] = _nothing,
                while_pushing: Callable[[Published], None] = _unheeded) -> Published:
        if not result:
            return Published()
        push_branch = key.partition(":")[2] or None
        if push_branch is not None:
            ws.run("checkout", "-q", "--detach")  # the target branch itself never moves
        shas, files = [], []
        check = _once(before_push)  # while the first commit is made; nothing is pushed
        # before it passed
        for group in commit_groups(result, policies):
            part = UpdateResult(tuple(c for c in result.changes if c.policy in group))
            message = with_trailers(commit_message(part, policies, repository=ws.url,
                                                   rows=rows), part, rows)
            sha = committing.commit(ws, part.files, message, identity, meanwhile=check)
            if sha is not None:
                shas.append(sha)
                files.append(part.files)
        check()
        if shas and push_branch is not None:
            if not proposing.replace_branch(ws, push_branch, shas[-1], identity.author.email):
                return Published(branch=push_branch, already=True)  # rebuilt, the same
            return Published(commits=tuple(shas), branch=push_branch)
        done = Published(commits=tuple(shas), files=tuple(files))
        if shas:
            committing.push(ws, meanwhile=functools.partial(while_pushing, done))
        return done


class PullRequestMode:
    """One deterministic bot branch per policy (or ``group``), and one PR per branch that is
    opened, updated in place, or withdrawn when the target already has what it proposed."""

    retries_moved_branch = False
    uses_forge = True
    atomic = True

    def batches(self, policies: Sequence[loading.LoadedPolicy]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for p in policies:
            groups.setdefault(p.policy.spec.publish.group or p.policy.name, []).append(
                p.policy.name)
        return dict(sorted(groups.items()))

    def declined(self, forge: forges.Forge | None, key: str,
                 base: str) -> list[proposing.Declined]:
        if forge is None:
            return []
        return proposing.declined(forge, proposing.branch_name(key), base)

    def publish(self, ws: workspaces.Workspace, key: str, result: UpdateResult, *,
                policies: Sequence[loading.LoadedPolicy], identity: committing.Identity,
                forge: forges.Forge | None, rows: Sequence[messages.Row],
                now: datetime, before_push: Callable[[], None] = _nothing,
                while_pushing: Callable[[Published], None] = _unheeded) -> Published:
        before_push()  # nothing is pushed to the target branch: while_pushing unused
        branch = proposing.branch_name(key)
        if forge is None:
            return Published(branch=branch)
        if not result:  # every member is current: a PR still open is no longer needed
            done = proposing.withdraw(ws, forge, branch, ws.branch,
                                      bot_email=identity.author.email,
                                      reason=f"{ws.branch} already has what this proposed")
        else:
            done = proposing.propose(ws, forge, proposal(ws, branch, policies, result,
                                                         rows=rows, now=now, forge=forge),
                                     identity)
        return Published(branch=branch, proposal=done)


MODES: dict[str, Mode] = {"commit": CommitMode(), "pull-request": PullRequestMode()}
"""Every publishing mode, by its ``spec.publish.mode`` name, in the order they run."""


# --- adapters from the bot config ---------------------------------------------------------


def credentials(repo: models.RepositoryConfig) -> workspaces.Credentials:
    """How git authenticates to ``repo`` (the password read from its env var or file)."""
    password = secrets.read(repo.password_env, repo.password_file,
                            key="repositories[].password")
    return workspaces.Credentials(username=repo.username, password=password,
                                  ssh_key_file=repo.ssh_key_file,
                                  ssh_known_hosts_file=repo.ssh_known_hosts_file)


def identity(git: models.GitConfig) -> committing.Identity:
    """The author, committer and signature of the bot's commits."""
    committer = (workspaces.Author(git.committer_name or git.author_name,
                                   git.committer_email or git.author_email)
                 if git.committer_name or git.committer_email else None)
    return committing.Identity(workspaces.Author(git.author_name, git.author_email),
                               committer, git.sign, git.signing_key)


def forge(repo: models.RepositoryConfig) -> forges.Forge:
    """The forge client of a repository whose policies open pull requests."""
    if repo.forge is None:
        raise ConfigError(f"repository {workspaces.redact(repo.url)}: policies use "
                          f"publish.mode: pull-request but repositories[].forge is not set")
    try:
        return forges.connect(repo.forge)
    except ConfigError as exc:
        raise ConfigError(f"repository {workspaces.redact(repo.url)}: {exc}") from None


# --- messages -----------------------------------------------------------------------------


def commit_message(result: UpdateResult, policies: Sequence[loading.LoadedPolicy], *,
                   repository: str, rows: Sequence[messages.Row] = ()) -> str:
    """The policy's own template for one policy; a list of every update for several.

    ``rows`` carry the update types the engine worked out (``update_type`` in templates).
    """
    by_policy = {p.policy.name: p for p in policies}
    changed = list(dict.fromkeys(c.policy for c in result.changes))
    if len(changed) == 1:
        loaded = by_policy[changed[0]]
        return messages.render(loaded.policy.spec.publish.message,
                               _context(loaded, result, repository, rows),
                               where=loaded.where("spec.publish.message"))
    kinds = _kinds(rows)
    lines = [f"chore(deps): update {len(changed)} images", ""]
    for c in _unique(result.changes, lambda c: (c.image, c.old_tag, c.new_tag, c.file)):
        kind = kinds.get((c.policy, c.image, c.old_tag, c.new_tag))
        lines.append(f"- {c.image}: {c.old_tag} → {c.new_tag}{f' ({kind})' if kind else ''} "
                     f"({c.file})")
    return "\n".join(lines) + "\n"


def update_type(change: Change, rows: Sequence[messages.Row]) -> str:
    """The engine's update type of ``change`` (from its row), or "" when not told."""
    return _kinds(rows).get((change.policy, change.image, change.old_tag, change.new_tag), "")


def _kinds(rows: Sequence[messages.Row]) -> dict[tuple[str, str, str | None, str], str]:
    """Each row's update type by (policy, image, old, new); the first row of each wins."""
    kinds: dict[tuple[str, str, str | None, str], str] = {}
    for r in rows:
        kinds.setdefault((r.policy, r.image, r.old, r.new), r.update_type)
    return kinds


def with_trailers(message: str, result: UpdateResult,
                  rows: Sequence[messages.Row] = ()) -> str:
    """The message with one trailer per update, which later runs read back; an update a
    person chose (its row's ``note``) says so in a paragraph, and its trailers follow."""
    lines = committing.trailers([(c.policy, c.image, c.new_tag) for c in result.changes])
    policies = {c.policy for c in result.changes}
    chosen = [r for r in rows if r.policy in policies]
    notes = "\n\n".join(textwrap.fill(n, 72) for n in dict.fromkeys(r.note for r in chosen
                                                                      if r.note))
    extra = dict.fromkeys(t for r in chosen for t in r.trailers)
    paragraphs = [message.rstrip(), *([notes] if notes else []), "\n".join([lines, *extra])]
    return "\n\n".join(paragraphs) + "\n"


def commit_groups(result: UpdateResult,
                  policies: Sequence[loading.LoadedPolicy]) -> list[set[str]]:
    """Policies committed together; ``commit: per-policy`` ones alone, unless they share a
    file with another group (one file cannot be split between two commits)."""
    own = {p.policy.name for p in policies if p.policy.spec.publish.commit == "per-policy"}
    files: dict[str, set[str]] = {}  # each policy's files, in the order of its first change
    for c in result.changes:
        files.setdefault(c.policy, set()).add(c.file)
    groups: list[tuple[set[str], set[str]]] = []  # (policies, their files)
    for policy, mine in files.items():
        joined, held, kept = {policy}, set(mine), []
        for names, touched in groups:
            if touched & mine or (policy not in own and not names & own):
                joined |= names
                held |= touched
            else:
                kept.append((names, touched))
        groups = [*kept, (joined, held)]
    return [names for names, _ in groups]


def rows(result: UpdateResult) -> list[messages.Row]:
    """The rows of the PR table, one per (policy, image, old, new), each with the files its
    policy changed for its image; without registry metadata (the engine adds it)."""
    files: dict[tuple[str, str], dict[str, None]] = {}
    for c in result.changes:
        files.setdefault((c.policy, c.image), {})[c.file] = None
    return [messages.Row(c.policy, c.image, c.old_tag, c.new_tag,
                         files=tuple(files[(c.policy, c.image)]))
            for c in _unique(result.changes, lambda c: (c.policy, c.image, c.old_tag,
                                                        c.new_tag))]


def proposal(ws: workspaces.Workspace, branch: str, policies: Sequence[loading.LoadedPolicy],
             result: UpdateResult, *, rows: Sequence[messages.Row], now: datetime,
             forge: forges.Forge | None = None) -> proposing.Proposal:
    """The bot branch's commit and its pull request: title, table, what changed upstream
    (compare links; release notes, fetched only when the PR is written), labels, reviewers."""
    message = commit_message(result, policies, repository=ws.url, rows=rows)
    changed = {c.policy for c in result.changes}
    members = [p for p in policies if p.policy.name in changed]
    publish = [p.policy.spec.publish for p in members]
    title = message.splitlines()[0]
    if len(publish) == 1 and publish[0].title:
        title = messages.render(publish[0].title, _context(members[0], result, ws.url, rows),
                                where=members[0].where("spec.publish.title")).strip()
    files = {p.policy.name: p.file for p in policies}
    rows = [_described(row, forge, files.get(row.policy), ws.branch) for row in rows]
    stats = _stats(result)
    spec = forges.PullRequestSpec(
        head=branch, base=ws.branch, title=title,
        body=messages.pr_body(rows, now=now, stats=stats),
        labels=_merged(p.labels for p in publish),
        reviewers=_merged(p.reviewers for p in publish),
        assignees=_merged(p.assignees for p in publish),
        draft=any(p.draft for p in publish), auto_merge=any(p.auto_merge for p in publish))

    def complete() -> forges.PullRequestSpec:
        noted = [_with_notes(row, forge) for row in rows]
        return dataclasses.replace(spec, body=messages.pr_body(noted, now=now, stats=stats))

    return proposing.Proposal(branch, result.files, with_trailers(message, result, rows), spec,
                              complete if forge is not None else None)


# --- what changed upstream: OCI labels → compare links and release notes ------------------

_SOURCE = re.compile(r"(?P<origin>https?://[A-Za-z0-9.-]+(?::\d+)?)/(?P<path>[A-Za-z0-9_.-]+"
                     r"(?:/[A-Za-z0-9_.-]+){1,5})")
_REVISION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._/-]{0,99}")
_KNOWN = {"https://github.com": "github", "https://gitlab.com": "gitlab"}
MAX_NOTES = 3  # release tags tried for one row


def source_project(source: str | None) -> tuple[str, str] | None:
    """``(origin, owner/name)`` of an ``org.opencontainers.image.source`` URL, or None."""
    match = _SOURCE.fullmatch((source or "").strip().removesuffix("/").removesuffix(".git"))
    if not match:
        return None
    return match["origin"].lower(), match["path"]


def compare_url(source: str | None, old: str | None, new: str | None,
                forge: forges.Forge | None = None) -> str | None:
    """The page comparing revisions ``old`` and ``new`` of ``source`` on GitHub or GitLab
    (github.com, gitlab.com or the configured forge's own address), or None."""
    project = source_project(source)
    if project is None or not old or not new or old == new:
        return None
    if not (_REVISION.fullmatch(old) and _REVISION.fullmatch(new)):
        return None
    origin, path = project
    kind = _KNOWN.get(origin)
    if forge is not None and origin == _origin(forge.web):
        kind = forge.kind
    if kind == "github":
        return f"{origin}/{path}/compare/{old}...{new}"
    if kind == "gitlab":
        return f"{origin}/{path}/-/compare/{old}...{new}"
    return None


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}".lower()


def _described(row: messages.Row, forge: forges.Forge | None, policy_file: str | None,
               branch: str) -> messages.Row:
    compare = compare_url(row.source, row.old_revision, row.revision, forge)
    link = forge.file_url(policy_file, branch) if forge and policy_file else None
    return dataclasses.replace(row, compare=compare, policy_file=link)


def _with_notes(row: messages.Row, forge: forges.Forge | None) -> messages.Row:
    """``row`` with the notes of its release, when its source lives on ``forge``."""
    project = source_project(row.source)
    if forge is None or project is None or project[0] != _origin(forge.web):
        return row
    version = row.version or row.new
    for tag in list(dict.fromkeys([version, row.new, f"v{version}"]))[:MAX_NOTES]:
        try:
            text = forge.release_notes(project[1], tag)
        except ImageBotError:
            return row  # notes are a courtesy: the proposal goes on without them
        if text is not None:
            notes = messages.sanitised_notes(text, origin=project[0])
            return dataclasses.replace(row, notes=notes or None)
    return row


def _stats(result: UpdateResult) -> messages.Stats:
    added = removed = 0
    for diff in result.diffs.values():
        for line in diff.splitlines():
            if line.startswith("+") and not line.startswith("+++"):
                added += 1
            elif line.startswith("-") and not line.startswith("---"):
                removed += 1
    return messages.Stats(len(result.files), added, removed)


def _context(loaded: loading.LoadedPolicy, result: UpdateResult, repository: str,
             rows: Sequence[messages.Row] = ()) -> Mapping[str, object]:
    changes = [c for c in result.changes if c.policy == loaded.policy.name]
    image = loaded.policy.spec.image
    return {
        "image": image, "image_name": image.rsplit("/", 1)[-1], "policy": loaded.policy.name,
        "old_tag": changes[0].old_tag, "new_tag": changes[0].new_tag,
        "update_type": update_type(changes[0], rows) or "update",
        "changes": [dataclasses.asdict(c) for c in changes],
        "files": list(dict.fromkeys(c.file for c in changes)),
        "repository": workspaces.redact(repository),
    }


def _unique(changes: Iterable[Change], key: Callable[[Change], Hashable]) -> list[Change]:
    return list({key(c): c for c in changes}.values())


def _merged(lists: Iterable[Iterable[str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for items in lists for item in items))
