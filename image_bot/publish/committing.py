"""Commit mode: commit the edited files on the target branch and push (never force)."""

from __future__ import annotations

from collections.abc import Sequence

import git

from image_bot.errors import PushRejected
from image_bot.publish import workspace as workspaces

_REJECTED = ("[rejected]", "non-fast-forward", "fetch first", "failed to update ref",
             "cannot lock ref", "stale info")


def commit(ws: workspaces.Workspace, files: Sequence[str], message: str,
           author: workspaces.Author) -> str | None:
    """Commit ``files`` with ``message``; the new commit's sha, or None when nothing changed."""
    repo = ws.repo
    repo.git.add("--", *files)
    if not repo.index.diff("HEAD"):
        return None
    actor = git.Actor(author.name, author.email)
    created = repo.index.commit(message, author=actor, committer=actor)
    return str(created.hexsha)


def push(ws: workspaces.Workspace) -> None:
    """Push the branch; a rejection because the remote moved is a :class:`PushRejected`."""
    try:
        ws.repo.git.push("--porcelain", "origin", f"HEAD:refs/heads/{ws.branch}")
    except git.GitCommandError as exc:
        text = f"{exc.stdout or ''} {exc.stderr or ''}".lower()
        if any(marker in text for marker in _REJECTED):
            raise PushRejected(f"git {workspaces.redact(ws.url)}: push to {ws.branch!r} "
                               f"rejected: the branch moved") from None
        raise workspaces.translate(exc, ws.url, f"pushing to {ws.branch!r}") from None
