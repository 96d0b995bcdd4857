"""One cached clone per config repository, hard-reset to the remote tip at every cycle.

The clone never holds unpushed work, so deleting it or crashing mid-cycle loses nothing.
Git errors are translated here; URLs in messages have their credentials removed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import git

from image_bot.errors import AuthError, PublishError, TemporaryError

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


@dataclass(frozen=True, slots=True)
class Author:
    name: str
    email: str


class Workspace:
    """A working copy of ``branch`` of ``url`` inside ``state_dir``."""

    def __init__(self, repo: git.Repo, *, url: str, branch: str) -> None:
        self.repo = repo
        self.url = url
        self.branch = branch

    @property
    def root(self) -> Path:
        return Path(self.repo.working_tree_dir or ".")

    @property
    def head(self) -> str:
        return str(self.repo.head.commit.hexsha)

    @classmethod
    def open(cls, url: str, branch: str, state_dir: Path) -> Workspace:
        """Clone ``url`` (once) and reset the working copy to the tip of ``branch``."""
        path = state_dir / "repos" / _directory_name(url)
        try:
            repo = _existing_clone(path, url) or _clone(url, path)
            workspace = cls(repo, url=url, branch=branch)
            workspace.refresh()
        except git.GitCommandError as exc:
            raise translate(exc, url, f"fetching branch {branch!r}") from None
        return workspace

    def refresh(self) -> None:
        """Fetch and hard-reset to the remote tip, dropping anything left from before."""
        try:
            self.repo.git.fetch("--prune", "origin", f"+refs/heads/{self.branch}:"
                                f"refs/remotes/origin/{self.branch}")
            self.repo.git.checkout("-B", self.branch, f"refs/remotes/origin/{self.branch}")
            self.repo.git.reset("--hard", f"refs/remotes/origin/{self.branch}")
            self.repo.git.clean("-fdx")
        except git.GitCommandError as exc:
            raise translate(exc, self.url, f"fetching branch {self.branch!r}") from None


def _directory_name(url: str) -> str:
    clean = redact(url)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", clean.rstrip("/").rsplit("/", 1)[-1])[:40]
    return f"{name}-{hashlib.sha256(clean.encode()).hexdigest()[:12]}"


def _existing_clone(path: Path, url: str) -> git.Repo | None:
    if not path.exists():
        return None
    try:
        repo = git.Repo(path)
        if repo.remotes.origin.url == url:
            return repo
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, AttributeError, ValueError):
        pass
    shutil.rmtree(path)  # a cache: anything unexpected is simply rebuilt
    return None


def _clone(url: str, path: Path) -> git.Repo:
    path.parent.mkdir(parents=True, exist_ok=True)
    return git.Repo.clone_from(url, path, no_checkout=True)


def redact(text: str) -> str:
    """Remove ``user:password@`` from every URL in ``text``."""
    return _USERINFO.sub("", text)


def translate(exc: git.GitCommandError, url: str, doing: str) -> Exception:
    """A Git failure as one of our errors, without credentials."""
    stderr = redact(str(exc.stderr or "")).strip().replace("\n", " ")
    stderr = re.sub(r"^stderr:\s*", "", stderr).strip("' ")
    where = f"git {redact(url)}: {doing} failed"
    lowered = stderr.lower()
    if "authentication failed" in lowered or "403" in lowered or "401" in lowered:
        return AuthError(f"{where}: authentication refused")
    if "couldn't find remote ref" in lowered or "not found" in lowered:
        return PublishError(f"{where}: {stderr}")
    return TemporaryError(f"{where}: {stderr}")
