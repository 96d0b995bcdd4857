"""Forges (GitHub, GitLab) behind one small Protocol; the registry of kinds is ``connect``.

Pull/merge requests are plain values here. Each forge module translates its client's
exceptions into :class:`ForgeUnavailable` (retried with backoff: 429, 5xx, connection
errors, rate-limited 403) or :class:`ForgeError` (permanent: 401, 403, 404, 422).
Tokens come from an environment variable or a file and never appear in a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from image_bot.config import models
from image_bot.errors import ForgeError, ForgeUnavailable

T = TypeVar("T")
State = Literal["open", "closed", "merged"]


@dataclass(frozen=True, slots=True)
class PullRequest:
    """A pull request (GitHub) or merge request (GitLab), as far as the bot cares."""

    number: int
    url: str
    title: str
    body: str
    labels: tuple[str, ...]
    state: State
    head: str
    auto_merge: bool = False  # the forge will merge it by itself when checks pass


@dataclass(frozen=True, slots=True)
class Issue:
    """An issue (the dashboard), as far as the bot cares."""

    number: int
    url: str
    title: str
    body: str


@dataclass(frozen=True, slots=True)
class PullRequestSpec:
    """What the bot wants a pull request to say."""

    head: str
    base: str
    title: str
    body: str
    labels: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    draft: bool = False
    auto_merge: bool = False


class Forge(Protocol):
    """The operations the pull-request mode needs; implemented by github.py and gitlab.py."""

    kind: str
    #: the forge's web address (``https://github.com``): links to files, hosts of sources
    web: str

    def find_open(self, head: str, base: str) -> PullRequest | None: ...

    def closed_unmerged(self, head: str, base: str) -> list[PullRequest]: ...

    def pull(self, number: int) -> PullRequest: ...

    def open(self, spec: PullRequestSpec) -> PullRequest: ...

    def update(self, pr: PullRequest, *, title: str, body: str,
               add_labels: tuple[str, ...]) -> PullRequest: ...

    def close(self, pr: PullRequest, *, body: str) -> None: ...

    def comments(self, pr: PullRequest) -> list[str]: ...

    def comment(self, pr: PullRequest, text: str) -> None: ...

    def set_auto_merge(self, pr: PullRequest, enabled: bool) -> None: ...

    def request_reviewers(self, pr: PullRequest, reviewers: tuple[str, ...]) -> None:
        """Ask ``reviewers`` too (those already asked stay)."""

    def release_notes(self, project: str, tag: str) -> str | None:
        """The notes of release ``tag`` of ``project`` on this forge; None when there is none."""

    def file_url(self, path: str, branch: str) -> str:
        """The web page of ``path`` on ``branch`` of the configured project (no request)."""

    def find_issues(self, label: str) -> list[Issue]:
        """Open issues of the configured project carrying ``label``."""

    def open_issue(self, title: str, body: str, labels: tuple[str, ...]) -> Issue: ...

    def update_issue(self, issue: Issue, *, body: str) -> None: ...


def connect(config: models.ForgeConfig, *, sleep: Callable[[float], None] = time.sleep) -> Forge:
    """The forge client for ``config`` (no request is made until the first call)."""
    # imported here so a commit-mode run never loads the forge clients
    if config.kind == "github":
        from image_bot.publish import github

        return github.GitHubForge(config, sleep=sleep)
    from image_bot.publish import gitlab

    return gitlab.GitLabForge(config, sleep=sleep)


def with_retries(call: Callable[[], T], *, attempts: int, backoff: float, what: str,
                 classify: Callable[[Exception], Exception | None],
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``call``; temporary failures are retried with doubling backoff, then raised."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # classify() decides; what it does not know re-raises
            error = classify(exc)
            if error is None:
                raise
            if isinstance(error, ForgeError) or attempt == attempts:
                raise error from None
            delay = backoff * 2 ** (attempt - 1)
            if isinstance(error, ForgeUnavailable) and error.retry_after is not None:
                delay = max(delay, min(error.retry_after, 60.0))
            sleep(delay)
    raise AssertionError(f"unreachable: {what}")  # pragma: no cover


def web_address(api_url: str | None, default: str, *, suffix: str = "") -> str:
    """The web address behind an API address: ``https://api.github.com`` → github.com,
    ``https://ghe.example/api/v3`` → ``https://ghe.example``."""
    url = (api_url or default).rstrip("/")
    if url == "https://api.github.com":
        return "https://github.com"
    return url.removesuffix(suffix) if suffix else url


def permanent_message(kind: str, status: int, what: str, detail: str) -> str:
    """One line saying what was refused and what to check."""
    hint = {401: "the token is missing, expired or wrong",
            403: "the token lacks permission for this repository",
            404: "no such repository or pull request (or the token cannot see it)",
            422: "the forge rejected the request"}.get(status, "the request was refused")
    tail = f": {detail}" if detail else ""
    return f"{kind}: {what} failed with HTTP {status}: {hint}{tail}"
