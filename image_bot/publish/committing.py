"""Commits and pushes: the bot's identity and signature, plain pushes and leased pushes.

A plain push never forces: a moved branch is a :class:`PushRejected` and the engine redoes
the edit on the new tip. Only branches under ``image-bot/`` are ever force-pushed, and then
only with a lease on the tip the bot last saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

import git

from image_bot.errors import ImageBotError, PublishError, PushRejected
from image_bot.publish import workspace as workspaces

BOT_PREFIX = "image-bot/"
TRAILER = "Image-Bot-Update"
# ``[remote rejected]`` reasons that mean another push won a race on the server: retried
_RACES = ("failed to update ref", "cannot lock ref", "incorrect old value")
_REMOTE_MESSAGE_CHARS = 1000
_FIRST_READ = 16  # bot commits read first when the caller says which writes it wants


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bot's commits are from, and how they are signed (``sign``: gpg, ssh, None)."""

    author: workspaces.Author
    committer: workspaces.Author | None = None
    sign: str | None = None
    signing_key: str | None = None

    def environment(self) -> dict[str, str]:
        committer = self.committer or self.author
        return {"GIT_AUTHOR_NAME": self.author.name, "GIT_AUTHOR_EMAIL": self.author.email,
                "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}

    def options(self) -> list[str]:
        """``git -c`` options for signing (none when unsigned)."""
        if not self.sign:
            return ["-c", "commit.gpgsign=false"]
        fmt = "ssh" if self.sign == "ssh" else "openpgp"
        options = ["-c", f"gpg.format={fmt}", "-c", "commit.gpgsign=true"]
        if self.signing_key:
            options += ["-c", f"user.signingkey={self.signing_key}"]
        return options


@dataclass(frozen=True, slots=True)
class Write:
    """A tag the bot wrote, read back from a trailer of one of its commits."""

    policy: str
    image: str
    tag: str
    commit: str


def trailers(changes: Sequence[tuple[str, str, str]]) -> str:
    """Trailer lines recording ``(policy, image, tag)`` writes, for rollback detection."""
    lines = dict.fromkeys(f"{TRAILER}: {policy} {image} {tag}" for policy, image, tag in changes)
    return "\n".join(lines)


def written(message: str) -> list[tuple[str, str, str]]:
    """The ``(policy, image, tag)`` writes a commit message records (:func:`trailers`), in
    order; a line of the trailer's name is read wherever it stands (a squash merge puts
    the bot's commit messages inside its own)."""
    found = []
    for line in message.splitlines():
        key, _, value = line.partition(": ")
        fields = value.split()
        if key == TRAILER and len(fields) == 3:
            found.append((fields[0], fields[1], fields[2]))
    return found


def _nothing() -> None:
    pass


def commit(ws: workspaces.Workspace, files: Sequence[str], message: str,
           identity: Identity, *, meanwhile: Callable[[], None] = _nothing) -> str | None:
    """Commit ``files`` (tracked files, as the work tree has them) on the current HEAD; the
    new commit's sha, or None when nothing changed.

    One git process (``commit --only``: those paths staged and committed together, nothing
    else of the index); only when it fails is the work tree asked whether there was
    anything to commit (git says "nothing to commit" with the same exit status as other
    failures). ``meanwhile`` is called while git commits (:meth:`Workspace.run_meanwhile`);
    what it raises is raised once git is done."""
    if not files:
        meanwhile()
        return None
    # the fetch that began the cycle already ran git's automatic maintenance (gc)
    command = [*identity.options(), "-c", "maintenance.auto=false", "commit", "-q",
               "--no-verify", "--only", "-m", message, "--", *files]
    doing = "committing (check git.sign / git.signing_key)"
    try:
        ws.run_meanwhile(*command, meanwhile=meanwhile, env=identity.environment(),
                         doing=doing)
    except ImageBotError:
        if not ws.run("status", "--porcelain", "--untracked-files=all", "--ignored", "--",
                      *files).strip():
            return None
        raise
    return ws.head


def push(ws: workspaces.Workspace, *, meanwhile: Callable[[], None] = _nothing) -> None:
    """Push HEAD to the target branch; a moved branch is a :class:`PushRejected`.
    ``meanwhile`` is called while git pushes (:meth:`Workspace.run_meanwhile`)."""
    _push(ws, f"HEAD:refs/heads/{ws.branch}", branch=ws.branch, meanwhile=meanwhile)


def push_leased(ws: workspaces.Workspace, branch: str, sha: str | None,
                expected: str | None, *, owned: bool = False) -> None:
    """Force ``sha`` (None: delete) onto the bot's own ``branch`` if it still is ``expected``.

    A branch is the bot's when it is under ``image-bot/``, or (``owned``) when the caller
    checked that every commit on it beyond the target is the bot's; never the target itself.
    """
    if branch == ws.branch or not (branch.startswith(BOT_PREFIX) or owned):
        raise PublishError(f"refusing to force-push {branch!r}: not a branch of image-bot")
    lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
    _push(ws, lease, f"{sha or ''}:refs/heads/{branch}", branch=branch)


def _push(ws: workspaces.Workspace, *refspecs: str, branch: str,
          meanwhile: Callable[[], None] = _nothing) -> None:
    ws.run_meanwhile("push", "--porcelain", "origin", *refspecs, meanwhile=meanwhile,
                     failed=lambda exc: _push_error(ws, exc, branch))


def _push_error(ws: workspaces.Workspace, exc: git.GitCommandError, branch: str) -> Exception:
    """Why a push failed, from git's porcelain status line (``!<TAB>ref<TAB>summary``).

    ``[rejected]`` is git's own verdict on a moved branch (non-fast-forward, fetch first,
    a stale lease): retried. ``[remote rejected]`` is the server refusing: a hook, a
    protected branch, a quota. That is final and the remote's own words are the message,
    except for the reasons that mean a concurrent push won a race on the server.
    """
    where = f"git {workspaces.redact(ws.url)}: push to {branch!r}"
    summary = next((line.split("\t")[2] for line in _output(exc.stdout).splitlines()
                    if line.startswith("!") and line.count("\t") >= 2), "")
    if summary.startswith("[rejected]"):
        return PushRejected(f"{where} rejected: the branch moved")
    if summary.startswith("[remote rejected]"):
        reason = summary.removeprefix("[remote rejected]").strip().strip("()")
        if any(race in reason for race in _RACES):
            return PushRejected(f"{where} rejected: the branch moved ({ws.scrub(reason)})")
        said = _remote_lines(_output(exc.stderr))
        return PublishError(f"{where} refused by the remote: {ws.scrub(reason)}"
                            + (f"; the remote said: {ws.scrub(said)}" if said else ""))
    return workspaces.translate(exc, ws.url, f"pushing to {branch!r}", ws.secrets)


def _output(captured: object) -> str:
    """GitPython's ``"\\n  stderr: '<text>'"`` back to ``<text>``."""
    text = str(captured or "")
    return re.sub(r"^\s*std(out|err): '", "", text).removesuffix("'")


def _remote_lines(stderr: str) -> str:
    """What the server printed (``remote: …`` lines: a hook's explanation), capped."""
    lines = [line.partition("remote:")[2].strip() for line in stderr.splitlines()
             if line.strip().startswith("remote:")]
    text = "".join(c for c in " / ".join(line for line in lines if line) if c.isprintable())
    return text[:_REMOTE_MESSAGE_CHARS] + ("…" if len(text) > _REMOTE_MESSAGE_CHARS else "")


def bot_commits(ws: workspaces.Workspace, author_email: str, revision: str, *, count: int,
                skip: int = 0) -> list[tuple[str, float, str]]:
    """The bot's commits reachable from ``revision`` (a commit or a range) whose messages
    record writes (:func:`trailers`), newest first, the ``skip`` newest left out, at most
    ``count``: (sha, commit time, message), from one ``git log``."""
    log = ws.run("log", f"--max-count={count}", f"--skip={skip}", f"--author=<{author_email}>",
                 "--fixed-strings", f"--grep={TRAILER}: ", "--format=%H%x1f%ct%x1f%B%x1e",
                 revision)
    found = []
    for record in filter(None, (r.strip() for r in log.split("\x1e"))):
        sha, committed, body = [*record.split("\x1f", 2), "", ""][:3]
        found.append((sha, float(committed or 0), body))
    return found


def bot_writes(ws: workspaces.Workspace, author_email: str, *, limit: int = 200,
               wanted: Set[tuple[str, str]] | None = None) -> list[Write]:
    """The latest write per (policy, image) among the bot's last ``limit`` target commits.

    With ``wanted`` (the pairs the caller asks about), the newest commits are read first
    (``_FIRST_READ``) and the older ones only if a wanted pair was not written in them (a
    commit of hundreds of updates holds as many trailer lines); pairs not wanted may then
    be left out."""
    latest: dict[tuple[str, str], Write] = {}
    read = 0
    for count in (min(_FIRST_READ, limit), limit - _FIRST_READ) if wanted else (limit,):
        if count <= 0 or (wanted is not None and wanted <= latest.keys()):
            break
        commits = bot_commits(ws, author_email, ws.target, count=count, skip=read)
        read += count
        for sha, _, body in commits:
            if wanted is not None and wanted <= latest.keys():
                break  # the older commits' trailers are not wanted
            for policy, image, tag in written(body):
                latest.setdefault((policy, image), Write(policy, image, tag, commit=sha))
    return list(latest.values())
