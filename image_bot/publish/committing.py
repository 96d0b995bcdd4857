"""Commits and pushes: the bot's identity and signature, plain pushes and leased pushes.

A plain push never forces: a moved branch is a :class:`PushRejected` and the engine redoes
the edit on the new tip. Only branches under ``image-bot/`` are ever force-pushed, and then
only with a lease on the tip the bot last saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import git

from image_bot.errors import PublishError, PushRejected
from image_bot.publish import workspace as workspaces

BOT_PREFIX = "image-bot/"
TRAILER = "Image-Bot-Update"
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first", "failed to update ref",
             "cannot lock ref", "stale info", "rejected")


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


def commit(ws: workspaces.Workspace, files: Sequence[str], message: str,
           identity: Identity) -> str | None:
    """Commit ``files`` on the current HEAD; the new commit's sha, or None when nothing changed."""
    ws.run("add", "--", *files)
    if not ws.run("diff", "--cached", "--name-only").strip():
        return None
    ws.run(*identity.options(), "commit", "-q", "--no-verify", "-m", message,
           env=identity.environment(), doing="committing (check git.sign / git.signing_key)")
    return ws.run("rev-parse", "HEAD").strip()


def push(ws: workspaces.Workspace) -> None:
    """Push HEAD to the target branch; a moved branch is a :class:`PushRejected`."""
    _push(ws, f"HEAD:refs/heads/{ws.branch}", branch=ws.branch)


def push_leased(ws: workspaces.Workspace, branch: str, sha: str | None,
                expected: str | None) -> None:
    """Force ``sha`` (None: delete) onto the bot's own ``branch`` if it still is ``expected``."""
    if not branch.startswith(BOT_PREFIX):
        raise PublishError(f"refusing to force-push {branch!r}: not a branch of image-bot")
    lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
    _push(ws, lease, f"{sha or ''}:refs/heads/{branch}", branch=branch)


def _push(ws: workspaces.Workspace, *refspecs: str, branch: str) -> None:
    try:
        ws.repo.git.push("--porcelain", "origin", *refspecs)
    except git.GitCommandError as exc:
        text = f"{exc.stdout or ''} {exc.stderr or ''}".lower()
        if any(marker in text for marker in _REJECTED):
            raise PushRejected(f"git {workspaces.redact(ws.url)}: push to {branch!r} "
                               f"rejected: the branch moved") from None
        raise workspaces.translate(exc, ws.url, f"pushing to {branch!r}") from None


def bot_writes(ws: workspaces.Workspace, author_email: str, *, limit: int = 200) -> list[Write]:
    """The latest write per (policy, image) among the bot's last ``limit`` target commits."""
    log = ws.run("log", f"--max-count={limit}", f"--author=<{author_email}>", "--fixed-strings",
                 f"--grep={TRAILER}: ", "--format=%H%x1f%B%x1e", ws.target)
    latest: dict[tuple[str, str], Write] = {}
    for record in filter(None, (r.strip() for r in log.split("\x1e"))):
        sha, _, body = record.partition("\x1f")
        for line in body.splitlines():
            key, _, value = line.partition(": ")
            fields = value.split()
            if key == TRAILER and len(fields) == 3:
                latest.setdefault((fields[0], fields[1]),
                                  Write(fields[0], fields[1], fields[2], commit=sha))
    return list(latest.values())
