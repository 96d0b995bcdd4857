"""In-process fakes of the GitHub and GitLab REST endpoints image-bot calls (loopback HTTP).

No forge can run here, so these stand in for one. They follow the official API
documentation (GitHub REST v3 "pulls", "issues/labels", "issues/assignees",
"issues/comments", "pulls/review-requests", the GraphQL ``enablePullRequestAutoMerge``
mutation and App installation tokens; GitLab v4 "merge_requests", "notes", "users") and
they are strict: an unknown route, a wrong method, a missing or wrong auth header or an
unexpected payload field answers 4xx *and* is recorded in ``errors``, which the fixtures
assert empty. They keep state (PRs/MRs, labels, reviewers, comments, merge state) and look
at the real bare repository behind the git server for branches, so a PR for a branch that
was never pushed is refused like the real forge would.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt

Json = Any


class Refused(Exception):
    def __init__(self, status: int, message: str, *, record: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.record = record


def branch_sha(bare: Path, branch: str) -> str | None:
    result = subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
                            cwd=bare, capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


@dataclass
class Fake:
    """Shared plumbing: routing, auth, fault injection, the request log and strictness."""

    bare: Path
    project: str
    token: str
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    outage: int = 0  # answer the next N requests with 503
    down: bool = False  # answer every request with 503 until cleared
    rate_limited: int = 0  # answer the next N requests with 429 Retry-After: 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    routes: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def start(self) -> Fake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((request.command, path))
            status, body, headers = self._answer(request, path, params, raw)
        data = b"" if body is None else json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json; charset=utf-8")
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _answer(self, request: BaseHTTPRequestHandler, path: str, params: dict[str, str],
                raw: bytes) -> tuple[int, Json, dict[str, str]]:
        if self.down or self.outage > 0:
            self.outage = max(0, self.outage - 1)
            return 503, {"message": "Service Unavailable"}, {}
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 429, {"message": "rate limited"}, {"Retry-After": "0"}
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            return self._refuse(Refused(400, f"{request.command} {path}: body is not JSON"))
        for method, pattern, name in self.routes:
            match = re.fullmatch(pattern, path)
            if match and method == request.command:
                try:
                    self.authorize(request, path)
                    status, body = getattr(self, name)(payload, params, *match.groups())
                    return status, body, {}
                except Refused as exc:
                    return self._refuse(exc)
        return self._refuse(Refused(404, f"no such endpoint: {request.command} {path}"))

    def _refuse(self, exc: Refused) -> tuple[int, Json, dict[str, str]]:
        if exc.record:
            self.errors.append(str(exc))
        return exc.status, {"message": str(exc)}, {}

    def authorize(self, request: BaseHTTPRequestHandler, path: str) -> None:
        raise NotImplementedError


def require(condition: bool, message: str, status: int = 422) -> None:
    if not condition:
        raise Refused(status, message)


def only_fields(payload: Json, allowed: set[str], where: str) -> dict[str, Any]:
    require(isinstance(payload, dict), f"{where}: expected a JSON object", 400)
    extra = set(payload) - allowed
    require(not extra, f"{where}: unexpected fields {sorted(extra)}")
    return dict(payload)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- GitHub ---------------------------------------------------------------------------------


@dataclass
class FakeGitHub(Fake):
    """GitHub (Enterprise-style base ``/api/v3``) for one repository ``owner/name``."""

    prefix: str = "/api/v3"
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    auto_merge: set[int] = field(default_factory=set)
    releases: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, tag) → body
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # not PRs; same numbers
    app_id: int | None = None
    app_public_key: str | None = None
    installation_id: int | None = None
    installation_token: str = "ghs_installation_token_from_fake"
    next_number: int = 1

    def __post_init__(self) -> None:
        repo = re.escape(self.project)
        p = re.escape(self.prefix)
        self.routes = [
            ("GET", rf"{p}/repos/{repo}/pulls", "list_pulls"),
            ("POST", rf"{p}/repos/{repo}/pulls", "create_pull"),
            ("GET", rf"{p}/repos/{repo}/pulls/(\d+)", "get_pull"),
            ("PATCH", rf"{p}/repos/{repo}/pulls/(\d+)", "edit_pull"),
            ("POST", rf"{p}/repos/{repo}/pulls/(\d+)/requested_reviewers", "request_review"),
            ("POST", rf"{p}/repos/{repo}/issues/(\d+)/labels", "add_labels"),
            ("POST", rf"{p}/repos/{repo}/issues/(\d+)/assignees", "add_assignees"),
            ("GET", rf"{p}/repos/{repo}/issues/(\d+)/comments", "list_comments"),
            ("POST", rf"{p}/repos/{repo}/issues/(\d+)/comments", "create_comment"),
            ("POST", r"/api/graphql", "graphql"),
            ("GET", rf"{p}/repos/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/releases/tags/([^/]+)",
             "get_release"),
            ("GET", rf"{p}/repos/{repo}/issues", "list_issues"),
            ("POST", rf"{p}/repos/{repo}/issues", "create_issue"),
            ("PATCH", rf"{p}/repos/{repo}/issues/(\d+)", "edit_issue"),
        ]

    def forge_config(self, **extra: Any) -> dict[str, Any]:
        """``repositories[].forge`` of a bot config pointing at this fake (token from
        ``FORGE_TOKEN``, no backoff or write spacing: tests do not wait)."""
        return {"kind": "github", "project": self.project, "api_url": f"{self.url}{self.prefix}",
                "token_env": "FORGE_TOKEN", "backoff": 0, "min_write_interval": 0, **extra}

    def authorize(self, request: BaseHTTPRequestHandler, path: str) -> None:
        header = request.headers.get("Authorization", "")
        tokens = {self.token, self.installation_token if self.app_id else None}
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or value not in tokens:
            raise Refused(401, f"Bad credentials for {request.command} {path}")
        # documented: requests without a User-Agent are rejected
        require(bool(request.headers.get("User-Agent")), f"{path}: no User-Agent", 403)

    # --- test controls ----------------------------------------------------------------

    def open_pulls(self) -> list[dict[str, Any]]:
        return [pr for pr in self.pulls.values() if pr["state"] == "open"]

    def merge(self, number: int) -> None:
        """A human presses "Merge": a real merge commit on the base branch."""
        with self.lock:
            pr = self.pulls[number]
            _git_merge(self.bare, pr["base"]["ref"], pr["head"]["ref"])
            pr.update(state="closed", merged_at=stamp(), closed_at=stamp())

    def close(self, number: int) -> None:
        """A human closes the PR without merging."""
        with self.lock:
            self.pulls[number].update(state="closed", closed_at=stamp())

    # --- endpoints --------------------------------------------------------------------

    def _pr_json(self, pr: dict[str, Any]) -> dict[str, Any]:
        number = pr["number"]
        api = f"{self.url}{self.prefix}/repos/{self.project}"
        head_sha = branch_sha(self.bare, pr["head"]["ref"]) or pr["head"]["sha"]
        owner = self.project.split("/")[0]
        return {
            "url": f"{api}/pulls/{number}", "id": 1000 + number, "node_id": f"PR_{number}",
            "html_url": f"{self.url}/{self.project}/pull/{number}",
            "issue_url": f"{api}/issues/{number}", "number": number, "state": pr["state"],
            "title": pr["title"], "body": pr["body"], "draft": pr["draft"],
            "labels": [{"id": i, "name": n, "color": "ededed"}
                       for i, n in enumerate(pr["labels"], 1)],
            "assignees": [{"login": a} for a in pr["assignees"]],
            "requested_reviewers": [{"login": r} for r in pr["reviewers"]],
            "merged_at": pr.get("merged_at"), "closed_at": pr.get("closed_at"),
            "created_at": pr["created_at"], "updated_at": stamp(),
            "head": {"label": f"{owner}:{pr['head']['ref']}", "ref": pr["head"]["ref"],
                     "sha": head_sha},
            "base": {"label": f"{owner}:{pr['base']['ref']}", "ref": pr["base"]["ref"],
                     "sha": branch_sha(self.bare, pr["base"]["ref"])},
            "user": {"login": "image-bot"},
            "auto_merge": ({"merge_method": "merge", "enabled_by": {"login": "image-bot"}}
                           if number in self.auto_merge else None),
        }

    def _pull(self, number: str) -> dict[str, Any]:
        pr = self.pulls.get(int(number))
        if pr is None:
            raise Refused(404, f"Not Found: pull {number}")
        return pr

    def list_pulls(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        require(payload is None, "GET pulls: unexpected body", 400)
        unknown = set(params) - {"state", "head", "base", "sort", "direction", "per_page",
                                 "page"}
        require(not unknown, f"GET pulls: unknown parameters {sorted(unknown)}")
        state = params.get("state", "open")
        require(state in ("open", "closed", "all"), f"GET pulls: bad state {state!r}")
        head = params.get("head")
        owner = self.project.split("/")[0]
        require(head is None or head.startswith(f"{owner}:"),
                f"GET pulls: head must be 'user:ref-name', got {head!r}")
        found = [pr for pr in self.pulls.values()
                 if state in ("all", pr["state"])
                 and (head is None or f"{owner}:{pr['head']['ref']}" == head)
                 and params.get("base", pr["base"]["ref"]) == pr["base"]["ref"]]
        return 200, [self._pr_json(pr) for pr in sorted(found, key=lambda p: -p["number"])]

    def create_pull(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        data = only_fields(payload, {"title", "head", "base", "body", "draft",
                                     "maintainer_can_modify", "head_repo", "issue"},
                           "POST pulls")
        for key in ("title", "head", "base"):
            require(isinstance(data.get(key), str) and data[key], f"POST pulls: {key} missing")
        sha = branch_sha(self.bare, data["head"])
        require(sha is not None, f"POST pulls: head {data['head']!r} does not exist")
        require(branch_sha(self.bare, data["base"]) is not None, "POST pulls: base invalid")
        duplicate = [pr for pr in self.open_pulls() if pr["head"]["ref"] == data["head"]
                     and pr["base"]["ref"] == data["base"]]
        require(not duplicate, f"A pull request already exists for {data['head']}")
        number, self.next_number = self.next_number, self.next_number + 1
        self.pulls[number] = {
            "number": number, "state": "open", "title": data["title"],
            "body": data.get("body") or "", "draft": bool(data.get("draft", False)),
            "labels": [], "assignees": [], "reviewers": [], "created_at": stamp(),
            "head": {"ref": data["head"], "sha": sha}, "base": {"ref": data["base"]}}
        self.comments[number] = []
        return 201, self._pr_json(self.pulls[number])

    def get_pull(self, payload: Json, params: dict[str, str], number: str) -> tuple[int, Json]:
        return 200, self._pr_json(self._pull(number))

    def edit_pull(self, payload: Json, params: dict[str, str], number: str) -> tuple[int, Json]:
        data = only_fields(payload, {"title", "body", "state", "base", "maintainer_can_modify"},
                           "PATCH pull")
        pr = self._pull(number)
        if "state" in data:
            require(data["state"] in ("open", "closed"), f"PATCH pull: state {data['state']!r}")
            require(not pr.get("merged_at"), "PATCH pull: merged PRs cannot change state")
            pr["state"] = data["state"]
            if data["state"] == "closed":
                pr["closed_at"] = stamp()
        for key in ("title", "body"):
            if key in data:
                require(isinstance(data[key], str), f"PATCH pull: {key} must be a string")
                pr[key] = data[key]
        return 200, self._pr_json(pr)

    def request_review(self, payload: Json, params: dict[str, str],
                       number: str) -> tuple[int, Json]:
        data = only_fields(payload, {"reviewers", "team_reviewers"}, "POST requested_reviewers")
        reviewers = data.get("reviewers", [])
        require(isinstance(reviewers, list) and all(isinstance(r, str) for r in reviewers),
                "POST requested_reviewers: reviewers must be a list of logins")
        pr = self._pull(number)
        pr["reviewers"] = list(dict.fromkeys(pr["reviewers"] + reviewers))
        return 201, self._pr_json(pr)

    def add_labels(self, payload: Json, params: dict[str, str], number: str) -> tuple[int, Json]:
        # documented: either an array of names or {"labels": [...]}
        labels = payload.get("labels") if isinstance(payload, dict) else payload
        require(isinstance(labels, list) and all(isinstance(x, str) for x in labels),
                "POST labels: expected a list of label names")
        pr = self._pull(number)
        pr["labels"] = list(dict.fromkeys(pr["labels"] + labels))
        return 200, [{"id": i, "name": n} for i, n in enumerate(pr["labels"], 1)]

    def add_assignees(self, payload: Json, params: dict[str, str],
                      number: str) -> tuple[int, Json]:
        data = only_fields(payload, {"assignees"}, "POST assignees")
        require(isinstance(data.get("assignees"), list), "POST assignees: list expected")
        pr = self._pull(number)
        pr["assignees"] = list(dict.fromkeys(pr["assignees"] + data["assignees"]))
        return 201, {"number": pr["number"], "assignees": [{"login": a}
                                                           for a in pr["assignees"]]}

    def list_comments(self, payload: Json, params: dict[str, str],
                      number: str) -> tuple[int, Json]:
        self._pull(number)
        return 200, self.comments[int(number)]

    def create_comment(self, payload: Json, params: dict[str, str],
                       number: str) -> tuple[int, Json]:
        data = only_fields(payload, {"body"}, "POST comments")
        require(isinstance(data.get("body"), str) and data["body"], "POST comments: body")
        self._pull(number)
        comment = {"id": len(self.comments[int(number)]) + 1, "body": data["body"],
                   "user": {"login": "image-bot"}, "created_at": stamp()}
        self.comments[int(number)].append(comment)
        return 201, comment

    def graphql(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        data = only_fields(payload, {"query", "variables"}, "POST graphql")
        query = str(data.get("query", ""))
        enable = "enablePullRequestAutoMerge(input: $input)" in query
        require(enable or "disablePullRequestAutoMerge(input: $input)" in query,
                f"graphql: unexpected query {query[:80]!r}")
        given = (data.get("variables") or {}).get("input") or {}
        node = str(given.get("pullRequestId", ""))
        require(node.startswith("PR_") and int(node[3:]) in self.pulls,
                f"graphql: unknown pullRequestId {node!r}")
        if enable:
            require(given.get("mergeMethod") in ("MERGE", "SQUASH", "REBASE"), "graphql: method")
            self.auto_merge.add(int(node[3:]))
        else:
            require(set(given) <= {"pullRequestId", "clientMutationId"}, "graphql: input")
            self.auto_merge.discard(int(node[3:]))
        name = "enablePullRequestAutoMerge" if enable else "disablePullRequestAutoMerge"
        return 200, {"data": {name: {"actor": {"login": "image-bot"},
                                     "clientMutationId": None}}}

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        number = issue["number"]
        api = f"{self.url}{self.prefix}/repos/{self.project}"
        return {"url": f"{api}/issues/{number}", "id": 3000 + number, "number": number,
                "html_url": f"{self.url}/{self.project}/issues/{number}",
                "state": issue["state"], "title": issue["title"], "body": issue["body"],
                "labels": [{"name": n} for n in issue["labels"]],
                "user": {"login": "image-bot"}, "created_at": issue["created_at"],
                "updated_at": stamp()}

    def list_issues(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        require(payload is None, "GET issues: unexpected body", 400)
        unknown = set(params) - {"state", "labels", "sort", "direction", "per_page", "page",
                                 "creator", "since"}
        require(not unknown, f"GET issues: unknown parameters {sorted(unknown)}")
        state = params.get("state", "open")
        require(state in ("open", "closed", "all"), f"GET issues: bad state {state!r}")
        wanted = {x for x in params.get("labels", "").split(",") if x}
        found = [self._issue_json(i) for i in self.issues.values()
                 if state in ("all", i["state"]) and wanted <= set(i["labels"])]
        # documented: the issues list includes pull requests (with a pull_request key)
        found += [{**self._pr_json(pr), "pull_request": {"url": ""}}
                  for pr in self.pulls.values()
                  if state in ("all", pr["state"]) and wanted <= set(pr["labels"])]
        return 200, sorted(found, key=lambda i: -int(i["number"]))

    def create_issue(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        data = only_fields(payload, {"title", "body", "labels", "assignees", "assignee",
                                     "milestone"}, "POST issues")
        require(isinstance(data.get("title"), str) and data["title"], "POST issues: title")
        labels = data.get("labels", [])
        require(isinstance(labels, list) and all(isinstance(x, str) for x in labels),
                "POST issues: labels must be a list of names")
        number, self.next_number = self.next_number, self.next_number + 1
        self.issues[number] = {"number": number, "state": "open", "title": data["title"],
                               "body": data.get("body") or "", "labels": labels,
                               "created_at": stamp()}
        return 201, self._issue_json(self.issues[number])

    def edit_issue(self, payload: Json, params: dict[str, str],
                   number: str) -> tuple[int, Json]:
        data = only_fields(payload, {"title", "body", "state", "state_reason", "labels",
                                     "assignees", "milestone"}, "PATCH issue")
        issue = self.issues.get(int(number))
        if issue is None:
            raise Refused(404, f"Not Found: issue {number}")
        for key in ("title", "body", "state"):
            if key in data:
                require(isinstance(data[key], str), f"PATCH issue: {key} must be a string")
                issue[key] = data[key]
        return 200, self._issue_json(issue)

    def get_release(self, payload: Json, params: dict[str, str], repo: str,
                    tag: str) -> tuple[int, Json]:
        require(payload is None and not params, "GET release: unexpected body or query", 400)
        tag = urllib.parse.unquote(tag)
        body = self.releases.get((repo, tag))
        if body is None:  # a missing release is an ordinary answer, not a bot mistake
            raise Refused(404, f"Not Found: release {tag} of {repo}", record=False)
        return 200, {"id": 1, "tag_name": tag, "name": tag, "body": body, "draft": False,
                     "prerelease": False, "html_url": f"{self.url}/{repo}/releases/tag/{tag}",
                     "url": f"{self.url}{self.prefix}/repos/{repo}/releases/1"}


def _check_app_jwt(fake: FakeGitHub, request: BaseHTTPRequestHandler, installation: str) -> None:
    header = request.headers.get("Authorization", "")
    require(header.startswith("Bearer "), "access_tokens: needs a Bearer JWT", 401)
    require(fake.app_public_key is not None and int(installation) == fake.installation_id,
            f"access_tokens: unknown installation {installation}", 404)
    try:
        claims = jwt.decode(header[7:], fake.app_public_key, algorithms=["RS256"])
    except jwt.PyJWTError as exc:
        raise Refused(401, f"access_tokens: bad JWT ({exc})") from None
    require(str(claims.get("iss")) == str(fake.app_id), "access_tokens: iss is not the app id",
            401)


class AppAwareGitHub(FakeGitHub):
    """FakeGitHub that also mints installation tokens for a GitHub App (JWT checked)."""

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        match = re.fullmatch(rf"{re.escape(self.prefix)}/app/installations/(\d+)/access_tokens",
                             request.path)
        if request.command == "POST" and match:
            length = int(request.headers.get("Content-Length") or 0)
            request.rfile.read(length)
            with self.lock:
                self.requests.append(("POST", request.path))
                try:
                    _check_app_jwt(self, request, match.group(1))
                    status, body = 201, {"token": self.installation_token,
                                         "expires_at": "2099-01-01T00:00:00Z",
                                         "permissions": {"pull_requests": "write"}}
                except Refused as exc:
                    self.errors.append(str(exc))
                    status, body = exc.status, {"message": str(exc)}
            data = json.dumps(body).encode()
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
            return
        super().handle(request)


# --- GitLab ---------------------------------------------------------------------------------


@dataclass
class FakeGitLab(Fake):
    """GitLab v4 for one project (addressed by its URL-encoded path)."""

    mrs: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=lambda: {"alice": 11, "bob": 12})
    releases: dict[tuple[str, str], str] = field(default_factory=dict)  # (path, tag) → notes
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_issue_iid: int = 1
    next_iid: int = 1
    project_id: int = 42

    def __post_init__(self) -> None:
        # documented: ":id" is the project's numeric ID or its URL-encoded path
        project = re.escape(urllib.parse.quote(self.project, safe=""))
        base = rf"/api/v4/projects/(?:{self.project_id}|{project})/merge_requests"
        self.routes = [
            ("GET", base, "list_mrs"),
            ("POST", base, "create_mr"),
            ("GET", rf"{base}/(\d+)", "get_mr"),
            ("PUT", rf"{base}/(\d+)", "update_mr"),
            ("PUT", rf"{base}/(\d+)/merge", "merge_mr"),
            ("POST", rf"{base}/(\d+)/cancel_merge_when_pipeline_succeeds", "cancel_mwps"),
            ("GET", r"/api/v4/projects/([^/]+)/releases/([^/]+)", "get_release"),
            ("GET", base.replace("merge_requests", "issues"), "list_issues"),
            ("POST", base.replace("merge_requests", "issues"), "create_issue"),
            ("PUT", base.replace("merge_requests", "issues") + r"/(\d+)", "update_issue"),
            ("GET", rf"{base}/(\d+)/notes", "list_notes"),
            ("POST", rf"{base}/(\d+)/notes", "create_note"),
            ("GET", r"/api/v4/users", "list_users"),
        ]

    def authorize(self, request: BaseHTTPRequestHandler, path: str) -> None:
        if request.headers.get("PRIVATE-TOKEN") != self.token:
            raise Refused(401, f"401 Unauthorized for {request.command} {path}")

    # --- test controls ----------------------------------------------------------------

    def open_mrs(self) -> list[dict[str, Any]]:
        return [mr for mr in self.mrs.values() if mr["state"] == "opened"]

    def merge(self, iid: int) -> None:
        with self.lock:
            mr = self.mrs[iid]
            _git_merge(self.bare, mr["target_branch"], mr["source_branch"])
            mr.update(state="merged", merged_at=stamp())

    def close(self, iid: int) -> None:
        with self.lock:
            self.mrs[iid].update(state="closed", closed_at=stamp())

    # --- endpoints --------------------------------------------------------------------

    def _mr_json(self, mr: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": 5000 + mr["iid"], "iid": mr["iid"], "project_id": self.project_id,
            "title": mr["title"], "description": mr["description"], "state": mr["state"],
            "draft": mr["title"].startswith("Draft:"),
            "source_branch": mr["source_branch"], "target_branch": mr["target_branch"],
            "labels": list(mr["labels"]),
            "assignees": [{"id": i} for i in mr["assignee_ids"]],
            "reviewers": [{"id": i} for i in mr["reviewer_ids"]],
            "merge_when_pipeline_succeeds": mr["mwps"],
            "sha": branch_sha(self.bare, mr["source_branch"]),
            "web_url": f"{self.url}/{self.project}/-/merge_requests/{mr['iid']}",
            "created_at": mr["created_at"], "updated_at": stamp(),
            "merged_at": mr.get("merged_at"), "closed_at": mr.get("closed_at"),
        }

    def _mr(self, iid: str) -> dict[str, Any]:
        mr = self.mrs.get(int(iid))
        if mr is None:
            raise Refused(404, f"404 Not found: merge request {iid}")
        return mr

    @staticmethod
    def _labels(value: Any, where: str) -> list[str]:
        if isinstance(value, str):
            return [x.strip() for x in value.split(",") if x.strip()]
        require(isinstance(value, list), f"{where}: labels must be a comma list or array")
        return [str(x) for x in value]

    def list_mrs(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        unknown = set(params) - {"source_branch", "target_branch", "state", "per_page", "page"}
        require(not unknown, f"GET merge_requests: unknown parameters {sorted(unknown)}", 400)
        state = params.get("state", "all")
        require(state in ("opened", "closed", "locked", "merged", "all"),
                f"GET merge_requests: bad state {state!r}", 400)
        found = [mr for mr in self.mrs.values()
                 if state in ("all", mr["state"])
                 and params.get("source_branch", mr["source_branch"]) == mr["source_branch"]
                 and params.get("target_branch", mr["target_branch"]) == mr["target_branch"]]
        return 200, [self._mr_json(mr) for mr in sorted(found, key=lambda m: -m["iid"])]

    def create_mr(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        data = only_fields(payload, {"source_branch", "target_branch", "title", "description",
                                     "labels", "assignee_ids", "reviewer_ids",
                                     "remove_source_branch", "squash"}, "POST merge_requests")
        for key in ("source_branch", "target_branch", "title"):
            require(isinstance(data.get(key), str) and data[key],
                    f"POST merge_requests: {key} is missing", 400)
        require(branch_sha(self.bare, data["source_branch"]) is not None,
                f"POST merge_requests: source branch {data['source_branch']!r} does not exist")
        duplicate = [mr for mr in self.open_mrs()
                     if mr["source_branch"] == data["source_branch"]]
        require(not duplicate, "Another open merge request already exists for this source "
                "branch", 409)
        for key in ("assignee_ids", "reviewer_ids"):
            ids = data.get(key, [])
            require(isinstance(ids, list) and all(i in self.users.values() for i in ids),
                    f"POST merge_requests: {key} must be known user ids")
        iid, self.next_iid = self.next_iid, self.next_iid + 1
        self.mrs[iid] = {
            "iid": iid, "title": data["title"], "description": data.get("description", ""),
            "state": "opened", "source_branch": data["source_branch"],
            "target_branch": data["target_branch"],
            "labels": self._labels(data.get("labels", []), "POST merge_requests"),
            "assignee_ids": data.get("assignee_ids", []),
            "reviewer_ids": data.get("reviewer_ids", []), "mwps": False,
            "created_at": stamp()}
        self.notes[iid] = []
        return 201, self._mr_json(self.mrs[iid])

    def get_mr(self, payload: Json, params: dict[str, str], iid: str) -> tuple[int, Json]:
        return 200, self._mr_json(self._mr(iid))

    def update_mr(self, payload: Json, params: dict[str, str], iid: str) -> tuple[int, Json]:
        data = only_fields(payload, {"title", "description", "labels", "state_event",
                                     "add_labels", "assignee_ids", "reviewer_ids"},
                           "PUT merge_request")
        require(bool(data), "PUT merge_request: nothing to update", 400)
        mr = self._mr(iid)
        if "state_event" in data:
            require(data["state_event"] in ("close", "reopen"), "PUT: bad state_event")
            require(mr["state"] != "merged", "PUT: a merged MR cannot change state")
            mr["state"] = "closed" if data["state_event"] == "close" else "opened"
        for key in ("title", "description"):
            if key in data:
                mr[key] = str(data[key])
        if "labels" in data:
            mr["labels"] = self._labels(data["labels"], "PUT merge_request")
        for key in ("assignee_ids", "reviewer_ids"):  # documented: replaces the list
            if key in data:
                ids = data[key]
                require(isinstance(ids, list) and all(i in self.users.values() for i in ids),
                        f"PUT merge_request: {key} must be known user ids")
                mr[key] = list(ids)
        return 200, self._mr_json(mr)

    def merge_mr(self, payload: Json, params: dict[str, str], iid: str) -> tuple[int, Json]:
        data = only_fields(payload, {"merge_when_pipeline_succeeds", "auto_merge",
                                     "should_remove_source_branch", "sha"}, "PUT merge")
        require(data.get("merge_when_pipeline_succeeds") is True or data.get("auto_merge")
                is True, "PUT merge: the bot only asks for merge-when-pipeline-succeeds")
        mr = self._mr(iid)
        require(mr["state"] == "opened", "PUT merge: MR is not open", 405)
        mr["mwps"] = True
        return 200, self._mr_json(mr)

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {"id": 7000 + issue["iid"], "iid": issue["iid"], "project_id": self.project_id,
                "title": issue["title"], "description": issue["description"],
                "state": issue["state"], "labels": list(issue["labels"]),
                "web_url": f"{self.url}/{self.project}/-/issues/{issue['iid']}",
                "created_at": issue["created_at"], "updated_at": stamp()}

    def list_issues(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        unknown = set(params) - {"labels", "state", "per_page", "page", "order_by", "sort"}
        require(not unknown, f"GET issues: unknown parameters {sorted(unknown)}", 400)
        state = params.get("state", "all")
        require(state in ("opened", "closed", "all"), f"GET issues: bad state {state!r}", 400)
        wanted = set(self._labels(params.get("labels", ""), "GET issues"))
        found = [i for i in self.issues.values()
                 if state in ("all", i["state"]) and wanted <= set(i["labels"])]
        return 200, [self._issue_json(i) for i in sorted(found, key=lambda i: -i["iid"])]

    def create_issue(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        data = only_fields(payload, {"title", "description", "labels", "assignee_ids",
                                     "confidential"}, "POST issues")
        require(isinstance(data.get("title"), str) and data["title"], "POST issues: title", 400)
        iid, self.next_issue_iid = self.next_issue_iid, self.next_issue_iid + 1
        self.issues[iid] = {"iid": iid, "title": data["title"], "state": "opened",
                            "description": str(data.get("description", "")),
                            "labels": self._labels(data.get("labels", []), "POST issues"),
                            "created_at": stamp()}
        return 201, self._issue_json(self.issues[iid])

    def update_issue(self, payload: Json, params: dict[str, str],
                     iid: str) -> tuple[int, Json]:
        data = only_fields(payload, {"title", "description", "labels", "state_event"},
                           "PUT issue")
        require(bool(data), "PUT issue: nothing to update", 400)
        issue = self.issues.get(int(iid))
        if issue is None:
            raise Refused(404, f"404 Not found: issue {iid}")
        if "state_event" in data:
            require(data["state_event"] in ("close", "reopen"), "PUT issue: bad state_event")
            issue["state"] = "closed" if data["state_event"] == "close" else "opened"
        for key in ("title", "description"):
            if key in data:
                issue[key] = str(data[key])
        if "labels" in data:
            issue["labels"] = self._labels(data["labels"], "PUT issue")
        return 200, self._issue_json(issue)

    def cancel_mwps(self, payload: Json, params: dict[str, str], iid: str) -> tuple[int, Json]:
        require(not payload, "POST cancel_merge_when_pipeline_succeeds: unexpected body", 400)
        mr = self._mr(iid)
        require(mr["mwps"], "POST cancel_merge_when_pipeline_succeeds: not set", 406)
        mr["mwps"] = False
        return 201, {"status": "success"}

    def get_release(self, payload: Json, params: dict[str, str], project: str,
                    tag: str) -> tuple[int, Json]:
        require(payload is None and not params, "GET release: unexpected body or query", 400)
        path, tag = urllib.parse.unquote(project), urllib.parse.unquote(tag)
        require("/" in path, f"GET release: project {project!r} must be a URL-encoded path")
        notes = self.releases.get((path, tag))
        if notes is None:
            raise Refused(404, f"404 Release Not Found: {tag} of {path}", record=False)
        return 200, {"tag_name": tag, "name": tag, "description": notes,
                     "_links": {"self": f"{self.url}/{path}/-/releases/{tag}"}}

    def list_notes(self, payload: Json, params: dict[str, str], iid: str) -> tuple[int, Json]:
        self._mr(iid)
        return 200, self.notes[int(iid)]

    def create_note(self, payload: Json, params: dict[str, str], iid: str) -> tuple[int, Json]:
        data = only_fields(payload, {"body"}, "POST notes")
        require(isinstance(data.get("body"), str) and data["body"], "POST notes: body", 400)
        self._mr(iid)
        note = {"id": len(self.notes[int(iid)]) + 1, "body": data["body"], "system": False,
                "author": {"username": "image-bot"}, "created_at": stamp()}
        self.notes[int(iid)].append(note)
        return 201, note

    def list_users(self, payload: Json, params: dict[str, str]) -> tuple[int, Json]:
        name = params.get("username")
        require(name is not None, "GET users: the bot must filter by username", 400)
        found = [{"id": self.users[name], "username": name}] if name in self.users else []
        return 200, found


def _git_merge(bare: Path, base: str, head: str) -> None:
    """Merge ``head`` into ``base`` inside the bare repository (like the merge button)."""
    env_args = ["-c", "user.name=Reviewer", "-c", "user.email=reviewer@example.com"]
    work = bare.parent / f".merge-{bare.name}-{time.monotonic_ns()}"
    run: Callable[..., Any] = subprocess.run
    run(["git", "clone", "-q", "-b", base, str(bare), str(work)], check=True)
    run(["git", *env_args, "merge", "-q", "--no-ff", "-m", f"Merge {head}",
         f"origin/{head}"], cwd=work, check=True, capture_output=True)
    run(["git", "push", "-q", "origin", base], cwd=work, check=True, capture_output=True)
    subprocess.run(["rm", "-rf", str(work)], check=True)
