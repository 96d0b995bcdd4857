"""GitHub pull requests through PyGithub (github.com or an Enterprise ``api_url``).

Authenticates with a token (env/file) or as a GitHub App installation. Every call is
retried on 429/5xx/rate-limited 403 with backoff and translated into our errors here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import github
import requests
from github import Auth, GithubException
from github.Issue import Issue as GhIssue
from github.PullRequest import PullRequest as GhPullRequest

from image_bot.config import models, secrets
from image_bot.errors import ConfigError, ForgeError, ForgeUnavailable
from image_bot.publish import forges

T = TypeVar("T")
DEFAULT_API = "https://api.github.com"


class GitHubForge:
    kind = "github"
    web: str

    def __init__(self, config: models.ForgeConfig, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._config = config
        self._sleep = sleep
        self._owner = config.project.split("/", 1)[0]
        self._client = github.Github(
            auth=_auth(config), base_url=(config.api_url or DEFAULT_API).rstrip("/"),
            retry=None, timeout=30, lazy=True, seconds_between_requests=None,
            seconds_between_writes=config.min_write_interval or None)
        self._repo = self._client.get_repo(config.project)
        self.web = forges.web_address(config.api_url, DEFAULT_API, suffix="/api/v3")
        self._objects: dict[int, GhPullRequest] = {}
        self._issues: dict[int, GhIssue] = {}

    def find_open(self, head: str, base: str) -> forges.PullRequest | None:
        found = self._call(lambda: list(self._repo.get_pulls(
            state="open", head=f"{self._owner}:{head}", base=base)), "listing pull requests")
        return self._value(found[0]) if found else None

    def closed_unmerged(self, head: str, base: str) -> list[forges.PullRequest]:
        found = self._call(lambda: list(self._repo.get_pulls(
            state="closed", head=f"{self._owner}:{head}", base=base)), "listing pull requests")
        return [self._value(pr) for pr in found if pr.merged_at is None]

    def pull(self, number: int) -> forges.PullRequest:
        return self._value(self._call(lambda: self._repo.get_pull(number),
                                      "reading a pull request"))

    def open(self, spec: forges.PullRequestSpec) -> forges.PullRequest:
        pr = self._call(lambda: self._repo.create_pull(
            base=spec.base, head=spec.head, title=spec.title, body=spec.body,
            draft=spec.draft, maintainer_can_modify=True), "opening a pull request")
        if spec.labels:
            self._call(lambda: pr.add_to_labels(*spec.labels), "labelling the pull request")
        if spec.reviewers:
            self._call(lambda: pr.create_review_request(reviewers=list(spec.reviewers)),
                       "requesting reviewers")
        if spec.assignees:
            self._call(lambda: pr.add_to_assignees(*spec.assignees), "assigning")
        if spec.auto_merge:
            self._call(lambda: pr.enable_automerge(merge_method="MERGE"),
                       "enabling auto-merge")
        value = self._value(pr)
        return forges.PullRequest(value.number, value.url, value.title, value.body,
                                  tuple(dict.fromkeys(value.labels + spec.labels)),
                                  value.state, value.head, spec.auto_merge)

    def update(self, pr: forges.PullRequest, *, title: str, body: str,
               add_labels: tuple[str, ...]) -> forges.PullRequest:
        handle = self._handle(pr)
        self._call(lambda: handle.edit(title=title, body=body), "updating the pull request")
        if add_labels:
            self._call(lambda: handle.add_to_labels(*add_labels), "labelling the pull request")
        return forges.PullRequest(pr.number, pr.url, title, body, pr.labels + add_labels,
                                  pr.state, pr.head, pr.auto_merge)

    def close(self, pr: forges.PullRequest, *, body: str) -> None:
        handle = self._handle(pr)
        self._call(lambda: handle.edit(body=body, state="closed"), "closing the pull request")

    def comments(self, pr: forges.PullRequest) -> list[str]:
        handle = self._handle(pr)
        return self._call(lambda: [c.body for c in handle.get_issue_comments()],
                          "reading comments")

    def comment(self, pr: forges.PullRequest, text: str) -> None:
        handle = self._handle(pr)
        self._call(lambda: handle.create_issue_comment(text), "commenting")

    def set_auto_merge(self, pr: forges.PullRequest, enabled: bool) -> None:
        handle = self._handle(pr)
        if enabled:
            self._call(lambda: handle.enable_automerge(merge_method="MERGE"),
                       "enabling auto-merge")
        else:
            self._call(lambda: handle.disable_automerge(), "disabling auto-merge")

    def request_reviewers(self, pr: forges.PullRequest, reviewers: tuple[str, ...]) -> None:
        handle = self._handle(pr)
        self._call(lambda: handle.create_review_request(reviewers=list(reviewers)),
                   "requesting reviewers")

    def release_notes(self, project: str, tag: str) -> str | None:
        def get() -> str | None:
            try:
                release = self._client.get_repo(project).get_release(tag)
            except github.UnknownObjectException:
                return None
            return str(release.body or "")

        return self._call(get, f"reading release {tag} of {project}")

    def file_url(self, path: str, branch: str) -> str:
        return f"{self.web}/{self._config.project}/blob/{branch}/{path}"

    def find_issues(self, label: str) -> list[forges.Issue]:
        found = self._call(lambda: list(self._repo.get_issues(state="open", labels=[label])),
                           "listing issues")
        return [self._issue(i) for i in found]

    def open_issue(self, title: str, body: str, labels: tuple[str, ...]) -> forges.Issue:
        return self._issue(self._call(lambda: self._repo.create_issue(
            title=title, body=body, labels=list(labels)), "opening an issue"))

    def update_issue(self, issue: forges.Issue, *, body: str) -> None:
        handle = self._issues[issue.number]  # found or opened by this client
        self._call(lambda: handle.edit(body=body), "updating an issue")

    def _issue(self, issue: GhIssue) -> forges.Issue:
        self._issues[issue.number] = issue
        return forges.Issue(issue.number, issue.html_url, issue.title, issue.body or "")

    # --- helpers ----------------------------------------------------------------------

    def _handle(self, pr: forges.PullRequest) -> GhPullRequest:
        return self._objects.get(pr.number) or self._repo.get_pull(pr.number)

    def _value(self, pr: GhPullRequest) -> forges.PullRequest:
        self._objects[pr.number] = pr
        state: forges.State = "merged" if pr.merged_at else (
            "open" if pr.state == "open" else "closed")
        return forges.PullRequest(pr.number, pr.html_url, pr.title, pr.body or "",
                                  tuple(label.name for label in pr.labels), state, pr.head.ref,
                                  bool(pr.auto_merge))

    def _call(self, call: Callable[[], T], what: str) -> T:
        return forges.with_retries(
            call, attempts=self._config.retries, backoff=self._config.backoff,
            what=what, sleep=self._sleep,
            classify=lambda exc: _classify(exc, f"{self._config.project}: {what}"))


def _auth(config: models.ForgeConfig) -> Auth.Auth:
    if config.app_id is not None:
        if config.app_installation_id is None or config.app_private_key_file is None:
            raise ConfigError("forge: a GitHub App needs app_id, app_installation_id and "
                              "app_private_key_file")
        key = secrets.read(None, config.app_private_key_file, key="forge.app_private_key")
        assert key is not None
        app = Auth.AppAuth(config.app_id, key)
        return app.get_installation_auth(config.app_installation_id)
    token = secrets.read(config.token_env, config.token_file, key="forge.token")
    if token is None:
        raise ConfigError("forge: set token_env, token_file or a GitHub App (app_id, ...)")
    return Auth.Token(token)


def _classify(exc: Exception, what: str) -> Exception | None:
    if isinstance(exc, github.RateLimitExceededException):
        return ForgeUnavailable(f"github {what}: rate limited", retry_after=_reset_in(exc))
    if isinstance(exc, GithubException):
        status = exc.status
        detail = str((exc.data or {}).get("message", "")) if isinstance(exc.data, dict) else ""
        if status == 429 or status >= 500 or (status == 403 and "rate limit" in detail.lower()):
            return ForgeUnavailable(f"github {what}: HTTP {status}", retry_after=_retry_after(exc))
        return ForgeError(forges.permanent_message("github", status, what, detail))
    if isinstance(exc, requests.RequestException):
        return ForgeUnavailable(f"github {what}: cannot connect ({type(exc).__name__})")
    return None


def _retry_after(exc: GithubException) -> float | None:
    value = (exc.headers or {}).get("retry-after") or (exc.headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _reset_in(exc: GithubException) -> float | None:
    after = _retry_after(exc)
    if after is not None:
        return after
    reset = (exc.headers or {}).get("x-ratelimit-reset")
    return max(0.0, float(reset) - time.time()) if reset and reset.isdigit() else None
