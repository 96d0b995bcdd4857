"""GitLab merge requests through python-gitlab (gitlab.com or a self-hosted ``api_url``).

Draft MRs are titled ``Draft: …``; auto-merge is merge-when-pipeline-succeeds. Reviewers
and assignees are usernames, looked up once per run. Errors are translated here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import gitlab
import requests
from gitlab.v4.objects import ProjectIssue, ProjectMergeRequest

from image_bot.config import models, secrets
from image_bot.errors import ConfigError, ForgeError, ForgeUnavailable
from image_bot.publish import forges

T = TypeVar("T")
DEFAULT_API = "https://gitlab.com"
_STATES: dict[str, forges.State] = {"opened": "open", "merged": "merged"}


class GitLabForge:
    kind = "gitlab"
    web: str

    def __init__(self, config: models.ForgeConfig, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        token = secrets.read(config.token_env, config.token_file, key="forge.token")
        if token is None:
            raise ConfigError("forge: GitLab needs token_env or token_file")
        self._config = config
        self._sleep = sleep
        self._client = gitlab.Gitlab((config.api_url or DEFAULT_API).rstrip("/"),
                                     private_token=token, timeout=30,
                                     retry_transient_errors=False)
        self._project = self._client.projects.get(config.project, lazy=True)
        self.web = forges.web_address(config.api_url, DEFAULT_API)
        self._objects: dict[int, ProjectMergeRequest] = {}
        self._issues: dict[int, ProjectIssue] = {}
        self._user_ids: dict[str, int] = {}

    def find_open(self, head: str, base: str) -> forges.PullRequest | None:
        found = self._list(head, base, "opened")
        return self._value(found[0]) if found else None

    def closed_unmerged(self, head: str, base: str) -> list[forges.PullRequest]:
        return [self._value(mr) for mr in self._list(head, base, "closed")]

    def pull(self, number: int) -> forges.PullRequest:
        mr = self._call(lambda: self._project.mergerequests.get(number),
                        "reading a merge request")
        assert isinstance(mr, ProjectMergeRequest)
        return self._value(mr)

    def open(self, spec: forges.PullRequestSpec) -> forges.PullRequest:
        data: dict[str, Any] = {
            "source_branch": spec.head, "target_branch": spec.base,
            "title": f"Draft: {spec.title}" if spec.draft else spec.title,
            "description": spec.body, "remove_source_branch": False}
        if spec.labels:
            data["labels"] = ",".join(spec.labels)
        if spec.assignees:
            data["assignee_ids"] = [self._user_id(name) for name in spec.assignees]
        if spec.reviewers:
            data["reviewer_ids"] = [self._user_id(name) for name in spec.reviewers]
        mr = self._call(lambda: self._project.mergerequests.create(data),
                        "opening a merge request")
        assert isinstance(mr, ProjectMergeRequest)
        if spec.auto_merge:
            self._call(lambda: mr.merge(merge_when_pipeline_succeeds=True),
                       "enabling merge when the pipeline succeeds")
        return self._value(mr)

    def update(self, pr: forges.PullRequest, *, title: str, body: str,
               add_labels: tuple[str, ...]) -> forges.PullRequest:
        mr = self._handle(pr)
        if mr.title.startswith("Draft: "):
            title = f"Draft: {title}"
        mr.title, mr.description = title, body
        if add_labels:
            mr.labels = list(dict.fromkeys([*mr.labels, *add_labels]))
        self._call(mr.save, "updating the merge request")
        return self._value(mr)

    def close(self, pr: forges.PullRequest, *, body: str) -> None:
        mr = self._handle(pr)
        mr.description, mr.state_event = body, "close"
        self._call(mr.save, "closing the merge request")

    def comments(self, pr: forges.PullRequest) -> list[str]:
        mr = self._handle(pr)
        notes = self._call(lambda: mr.notes.list(get_all=True), "reading notes")
        return [str(note.body) for note in notes if not getattr(note, "system", False)]

    def comment(self, pr: forges.PullRequest, text: str) -> None:
        mr = self._handle(pr)
        self._call(lambda: mr.notes.create({"body": text}), "commenting")

    def set_auto_merge(self, pr: forges.PullRequest, enabled: bool) -> None:
        mr = self._handle(pr)
        if enabled:
            self._call(lambda: mr.merge(merge_when_pipeline_succeeds=True),
                       "enabling merge when the pipeline succeeds")
        else:
            self._call(mr.cancel_merge_when_pipeline_succeeds,
                       "cancelling merge when the pipeline succeeds")

    def request_reviewers(self, pr: forges.PullRequest, reviewers: tuple[str, ...]) -> None:
        mr = self._handle(pr)
        # read without __getattr__: python-gitlab would send a list it handed out back
        asked = [int(r["id"]) for r in mr.attributes.get("reviewers") or []]
        wanted = list(dict.fromkeys([*asked, *(self._user_id(name) for name in reviewers)]))
        if wanted != asked:
            mr.reviewer_ids = wanted
            self._call(mr.save, "requesting reviewers")

    def release_notes(self, project: str, tag: str) -> str | None:
        def get() -> str | None:
            try:
                release = self._client.projects.get(project, lazy=True).releases.get(tag)
            except gitlab.GitlabGetError as exc:
                if exc.response_code == 404:
                    return None
                raise
            return str(release.description or "")

        return self._call(get, f"reading release {tag} of {project}")

    def file_url(self, path: str, branch: str) -> str:
        return f"{self.web}/{self._config.project}/-/blob/{branch}/{path}"

    def find_issues(self, label: str) -> list[forges.Issue]:
        found = self._call(lambda: self._project.issues.list(
            labels=[label], state="opened", get_all=True), "listing issues")
        return [self._issue(i) for i in found if isinstance(i, ProjectIssue)]

    def open_issue(self, title: str, body: str, labels: tuple[str, ...]) -> forges.Issue:
        issue = self._call(lambda: self._project.issues.create(
            {"title": title, "description": body, "labels": ",".join(labels)}),
            "opening an issue")
        assert isinstance(issue, ProjectIssue)
        return self._issue(issue)

    def update_issue(self, issue: forges.Issue, *, body: str) -> None:
        handle = self._issues.get(issue.number) or self._project.issues.get(issue.number,
                                                                            lazy=True)
        handle.description = body
        self._call(handle.save, "updating an issue")

    def _issue(self, issue: ProjectIssue) -> forges.Issue:
        self._issues[int(issue.iid)] = issue
        return forges.Issue(int(issue.iid), str(issue.web_url), str(issue.title),
                            str(issue.description or ""))

    # --- helpers ----------------------------------------------------------------------

    def _list(self, head: str, base: str, state: str) -> list[ProjectMergeRequest]:
        found = self._call(lambda: self._project.mergerequests.list(
            source_branch=head, target_branch=base, state=state, get_all=True),
            "listing merge requests")
        return [mr for mr in found if isinstance(mr, ProjectMergeRequest)]

    def _user_id(self, username: str) -> int:
        if username not in self._user_ids:
            users = self._call(lambda: self._client.users.list(username=username, get_all=True),
                               f"looking up user {username!r}")
            if not users:
                raise ForgeError(f"gitlab {self._config.project}: no user {username!r} "
                                 f"(publish.reviewers / publish.assignees)")
            self._user_ids[username] = int(users[0].id)
        return self._user_ids[username]

    def _handle(self, pr: forges.PullRequest) -> ProjectMergeRequest:
        return self._objects.get(pr.number) or self._project.mergerequests.get(
            pr.number, lazy=True)

    def _value(self, mr: ProjectMergeRequest) -> forges.PullRequest:
        self._objects[int(mr.iid)] = mr
        title = str(mr.title).removeprefix("Draft: ")
        return forges.PullRequest(int(mr.iid), str(mr.web_url), title,
                                  str(mr.description or ""), tuple(mr.labels),
                                  _STATES.get(str(mr.state), "closed"), str(mr.source_branch),
                                  bool(getattr(mr, "merge_when_pipeline_succeeds", False)))

    def _call(self, call: Callable[[], T], what: str) -> T:
        return forges.with_retries(
            call, attempts=self._config.retries, backoff=self._config.backoff,
            what=what, sleep=self._sleep,
            classify=lambda exc: _classify(exc, f"{self._config.project}: {what}"))


def _classify(exc: Exception, what: str) -> Exception | None:
    if isinstance(exc, gitlab.GitlabError) and exc.response_code is not None:
        status = int(exc.response_code)
        if status == 429 or status >= 500:
            return ForgeUnavailable(f"gitlab {what}: HTTP {status}")
        detail = str(exc.error_message or "")[:200]
        return ForgeError(forges.permanent_message("gitlab", status, what, detail))
    if isinstance(exc, requests.RequestException | gitlab.GitlabConnectionError):
        return ForgeUnavailable(f"gitlab {what}: cannot connect ({type(exc).__name__})")
    return None
