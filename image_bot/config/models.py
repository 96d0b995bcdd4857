"""Pydantic models of the bot config file and ``ImagePolicy`` documents (validation only).

The models check shape and types. Semantics that belong to a stage (for example whether a
semver range parses) are checked when that stage builds its object from the model, and the
error is reported with the same breadcrumb (see ``config.loading``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from image_bot import checkout, refs
from image_bot.config import durations, schedules


class _Model(BaseModel):
    # Validators are built on first use (and defaults are factories, not instances built at
    # import), so `image-bot validate` on policies never pays for the bot config's models.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


# --- bot config -------------------------------------------------------------------------


class ForgeConfig(_Model):
    """Where pull/merge requests of a repository are opened (pull-request mode only)."""

    kind: Literal["github", "gitlab"]
    # owner/name on GitHub, group/subgroup/name on GitLab
    project: str = Field(min_length=1, pattern=r"^[^/\s]+(/[^/\s]+)+$")
    api_url: str | None = None  # default https://api.github.com or https://gitlab.com
    token_env: str | None = None
    token_file: Path | None = None
    # GitHub App (instead of a token): the installation token is minted per run
    app_id: int | None = None
    app_installation_id: int | None = None
    app_private_key_file: Path | None = None
    retries: int = Field(default=4, ge=1, le=20)  # attempts on 429/5xx/connection errors
    backoff: float = Field(default=2.0, ge=0)  # seconds before the 2nd attempt; doubles
    min_write_interval: float = Field(default=1.0, ge=0)  # GitHub asks for ≥1 s between writes


class RepositoryConfig(_Model):
    url: str = Field(min_length=1)
    branch: str = "main"
    policies: str = "policies/"
    name: str | None = None
    # HTTPS credentials, handed to git through GIT_ASKPASS (never stored in .git/config)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    # SSH: a private key and the known_hosts file that must vouch for the server
    ssh_key_file: Path | None = None
    ssh_known_hosts_file: Path | None = None
    push_attempts: int = Field(default=5, ge=1, le=50)  # commit mode, on a moved branch
    push_backoff: float = Field(default=1.0, ge=0)  # seconds before the 2nd attempt; doubles
    registry_deadline: float = Field(default=300.0, gt=0)  # seconds: registry phase of a scan
    forge: ForgeConfig | None = None
    dashboard: bool = False  # keep one dashboard issue up to date on the forge

    @model_validator(mode="after")
    def _dashboard_needs_a_forge(self) -> RepositoryConfig:
        if self.dashboard and self.forge is None:
            raise ValueError("dashboard: true needs forge (where the issue lives)")
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


class RegistryConfig(_Model):
    """How to reach one registry; every field is documented in docs/registries.md."""

    host: str = Field(min_length=1)
    aliases: list[str] = []          # other names of the same registry in image references
    mirror: str | None = None        # send requests here instead (host[:port] or URL)
    insecure: bool = False           # plain HTTP
    ca_bundle: Path | None = None    # PEM file of CAs to trust for this registry
    # credentials: at most one source; ``username`` completes sources that give a secret only
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    credentials_file: Path | None = None
    docker_config: bool | Path = False   # true: $DOCKER_CONFIG or ~/.docker/config.json
    credentials_command: list[str] | None = Field(default=None, min_length=1)
    credentials_refresh: durations.Duration = "1h"
    # limits
    rate_limit: float | None = Field(default=None, gt=0)   # requests per second (token bucket)
    burst: int | None = Field(default=None, ge=1)          # bucket size (default: rate, ≥ 1)
    concurrency: int = Field(default=8, ge=1, le=256)      # requests in flight to this host
    page_size: int | None = Field(default=None, ge=1, le=10000)  # ``n`` of tags/list
    # what one registry may make the bot do (defaults in docs/security.md)
    request_deadline: float = Field(default=60.0, gt=0)  # seconds per request, body included
    max_response_bytes: int = Field(default=16 * 2**20, ge=1024)  # one answer (a tag page)
    max_manifest_bytes: int = Field(default=4 * 2**20, ge=1024)  # distribution's own limit
    max_tags: int = Field(default=100_000, ge=1)  # tags of one image, over every page

    @field_validator("host")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return refs.normalise_host(value.strip().removeprefix("https://").removeprefix("http://"))

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: str | None) -> str | None:
        return value.strip().rstrip("/") if value else None

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        return [refs.normalise_host(a.strip().removeprefix("https://")
                                    .removeprefix("http://")) for a in value]

    @model_validator(mode="after")
    def _one_credentials_source(self) -> RegistryConfig:
        sources = [name for name, given in (
            ("username_env", self.username_env or self.password_env),
            ("credentials_file", self.credentials_file),
            ("docker_config", self.docker_config is not False),
            ("credentials_command", self.credentials_command)) if given]
        if len(sources) > 1:
            raise ValueError(f"choose one credentials source, not {' and '.join(sources)}")
        return self

    @property
    def refresh_seconds(self) -> float:
        return durations.parse(self.credentials_refresh)


class GitConfig(_Model):
    author_name: str = "image-bot"
    author_email: str = "image-bot@localhost"
    committer_name: str | None = None  # default: the author
    committer_email: str | None = None
    sign: Literal["gpg", "ssh"] | None = None  # sign the bot's commits
    signing_key: str | None = None  # GPG key id, or the path of an SSH private key


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "image-bot"


ReceiverKind = Literal["distribution", "dockerhub", "github", "gitlab", "harbor", "quay",
                      "generic"]


class ReceiverConfig(_Model):
    """One webhook endpoint, ``POST /webhook/<name>``; see docs/webhooks.md."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: ReceiverKind
    secret_env: str | None = None  # environment variable holding the shared secret
    secret_file: Path | None = None  # or a file holding it (a mounted Kubernetes Secret)
    allow_unsigned: bool = False  # explicit opt-out: accept requests without a secret
    registry: str | None = None  # registry host for payloads that do not name one
    replay_window: float = Field(default=300.0, ge=0)  # seconds; 0: accept replays
    require_timestamp: bool = False  # generic: refuse requests without a signed timestamp

    @model_validator(mode="after")
    def _secret_required(self) -> ReceiverConfig:
        if self.secret_env and self.secret_file:
            raise ValueError(f"receiver {self.name!r}: choose secret_env or secret_file, "
                             f"not both")
        if not (self.secret_env or self.secret_file) and not self.allow_unsigned:
            raise ValueError(f"receiver {self.name!r} needs secret_env or secret_file (or "
                             f"allow_unsigned: true to accept unauthenticated requests)")
        if self.require_timestamp and (self.kind != "generic"
                                       or not (self.secret_env or self.secret_file)):
            raise ValueError(f"receiver {self.name!r}: require_timestamp needs kind generic "
                             f"and a secret (only a signed timestamp can be trusted)")
        return self

    @field_validator("registry")
    @classmethod
    def _registry_host(cls, value: str | None) -> str | None:
        return refs.normalise_host(value) if value else None


def _peer_url(url: str) -> str:
    if not re.match(r"^https?://[^\s/@]+(/\S*)?$", url):
        raise ValueError(f"{url!r}: expected the http:// or https:// base URL of another "
                         "image-bot daemon, e.g. http://image-bot-shard-1:8080")
    return url


class DaemonConfig(_Model):
    """Settings of ``image-bot run`` without ``--once`` (and ``image-bot webhook``)."""

    listen: str = Field(default="0.0.0.0:8080", pattern=r"^\[?[\w.:-]*\]?:\d{1,5}$")
    max_concurrent_scans: int = Field(default=4, ge=1, le=256)
    registry_concurrency: dict[str, int] = {}  # host → concurrent scans touching it
    default_registry_concurrency: int = Field(default=2, ge=1, le=256)
    jitter: float = Field(default=0.1, ge=0.0, le=0.5)  # ± fraction of each interval
    debounce: float = Field(default=0.2, ge=0.0, le=60.0)  # seconds to gather events
    reload_interval: float = Field(default=60.0, ge=1.0)  # seconds between policy reloads
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    grace: float = Field(default=25.0, ge=0.0)  # seconds a cycle may finish after SIGTERM
    # other daemons (shards) whose /api/status the status page merges in
    peers: list[Annotated[str, AfterValidator(_peer_url)]] = []
    peer_timeout: float = Field(default=2.0, gt=0.0, le=30.0)  # seconds per peer


class LimitsConfig(_Model):
    """Caps on what image-bot reads from a config repository (see docs/security.md)."""

    # a larger file is never read: not scanned, not edited, not loaded as a policy
    max_file_bytes: int = Field(default=checkout.DEFAULT_MAX_FILE_BYTES, ge=1024,
                                le=1024 * 1024 * 1024)


class RetentionConfig(_Model):
    """How much ``state.db`` keeps: it stays small however long the daemon runs."""

    max_event_age: durations.Duration = "30d"
    max_events: int = Field(default=10_000, ge=100)
    max_blob_bytes: int = Field(default=64 << 20, ge=1 << 20)  # cached manifests and configs

    @property
    def max_event_age_seconds(self) -> float:
        return durations.parse(self.max_event_age)


class AgentsConfig(_Model):
    """Sync agents that report to the daemon, ``POST /api/agents/<name>/report``; see
    docs/deploy-loop.md."""

    secret_env: str | None = None  # environment variable holding the shared secret
    secret_file: Path | None = None  # or a file holding it
    stale_after: int = Field(default=3, ge=1, le=1000)  # silent for this many intervals
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    @model_validator(mode="after")
    def _one_secret(self) -> AgentsConfig:
        if self.secret_env and self.secret_file:
            raise ValueError("agents: choose secret_env or secret_file, not both")
        if not (self.secret_env or self.secret_file):
            raise ValueError("agents needs secret_env or secret_file: reports are signed")
        return self


NotificationEvent = Literal["updated", "pr-opened", "deployed", "degraded", "rolled-back",
                            "failed", "recovered"]
NOTIFICATION_EVENTS: tuple[str, ...] = ("updated", "pr-opened", "deployed", "degraded",
                                        "rolled-back", "failed", "recovered")


class NotificationTarget(_Model):
    """One place notifications go: Apprise URLs (Slack, Teams, Matrix, email…) read from an
    env var or file (they hold tokens), or a generic JSON webhook signed with HMAC-SHA256."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: Literal["apprise", "webhook"]
    url: str | None = None  # webhook: where to POST (no secret in it)
    url_env: str | None = None  # apprise: the Apprise URL(s), secret-bearing
    url_file: Path | None = None
    secret_env: str | None = None  # webhook: HMAC key for X-Image-Bot-Signature-256
    secret_file: Path | None = None
    events: list[NotificationEvent] = list(NOTIFICATION_EVENTS)  # type: ignore[arg-type]
    failed_after: int = Field(default=3, ge=1, le=1000)  # cycles in a row before ``failed``
    retries: int = Field(default=3, ge=1, le=10)
    backoff: float = Field(default=1.0, ge=0, le=60)  # seconds before the 2nd attempt; doubles
    timeout: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _where(self) -> NotificationTarget:
        if self.kind == "webhook" and not self.url:
            raise ValueError(f"notification {self.name!r}: kind webhook needs url")
        if self.kind == "apprise" and not (self.url_env or self.url_file):
            raise ValueError(f"notification {self.name!r}: kind apprise needs url_env or "
                             f"url_file (Apprise URLs carry tokens)")
        if self.kind == "apprise" and self.url:
            raise ValueError(f"notification {self.name!r}: put Apprise URLs in url_env or "
                             f"url_file, not url (they carry tokens)")
        return self


class BotConfig(_Model):
    repositories: list[RepositoryConfig] = Field(min_length=1)
    registries: list[RegistryConfig] = []
    git: GitConfig = Field(default_factory=GitConfig)
    state_dir: Path = Field(default_factory=_default_state_dir)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    receivers: list[ReceiverConfig] = []
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    agents: AgentsConfig | None = None
    notifications: list[NotificationTarget] = []

    @field_validator("receivers")
    @classmethod
    def _unique_receivers(cls, value: list[ReceiverConfig]) -> list[ReceiverConfig]:
        names = [receiver.name for receiver in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate receiver name(s): {', '.join(duplicates)}")
        return value

    def registry_for(self, host: str) -> RegistryConfig:
        """The settings for ``host``, or defaults (HTTPS, anonymous) when it is not listed."""
        for registry in self.registries:
            if host == registry.host or host in registry.aliases:
                return registry
        return RegistryConfig(host=host)


# --- ImagePolicy ------------------------------------------------------------------------


class SemverSelect(_Model):
    range: str = Field(min_length=1)
    prerelease: bool = False


class OrderSelect(_Model):
    """``numerical`` and ``alphabetical``: ``asc`` picks the highest value, ``desc`` the lowest."""

    order: Literal["asc", "desc"] = "asc"


class NewestBuildSelect(_Model):
    """Newest image creation time wins (needs the registry's image config)."""


class DigestSelect(_Model):
    """Follow one mutable tag and pin its digest when it changes."""

    tag: Annotated[str, Field(pattern=rf"^{refs.TAG}$")]


STRATEGIES = ("semver", "numerical", "alphabetical", "newest-build", "digest")


class PromoteSelect(_Model):
    """Candidates from another stage: only tags that ran Synced + Healthy on every agent of
    the ``from`` policy for at least ``healthy-for`` (and were never rolled back there)."""

    from_: str = Field(alias="from", pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
    healthy_for: durations.Duration = Field(default="0s", alias="healthy-for")


class Select(_Model):
    """Exactly one strategy; with ``promote``, none (the upstream policy's is used) or one."""

    semver: SemverSelect | None = None
    numerical: OrderSelect | None = None
    alphabetical: OrderSelect | None = None
    newest_build: NewestBuildSelect | None = Field(default=None, alias="newest-build")
    digest: DigestSelect | None = None
    promote: PromoteSelect | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Select:
        chosen = self.chosen
        if len(chosen) > 1 or (not chosen and self.promote is None):
            got = " and ".join(chosen) if chosen else "none"
            raise ValueError(f"choose exactly one strategy of {', '.join(STRATEGIES)} "
                             f"(got {got})")
        if self.digest is not None and self.promote is not None:
            raise ValueError("promote cannot follow a digest: promote versions (semver, "
                             "numerical, alphabetical or newest-build)")
        return self

    @property
    def chosen(self) -> list[str]:
        values = (self.semver, self.numerical, self.alphabetical, self.newest_build, self.digest)
        return [name for name, value in zip(STRATEGIES, values, strict=True) if value is not None]

    @property
    def strategy(self) -> str:
        return self.chosen[0]


class Filter(_Model):
    """Which tags are considered: ``pattern`` (regex) with ``extract``, and ``exclude``."""

    pattern: str | None = Field(default=None, min_length=1)
    extract: str | None = Field(default=None, min_length=1)
    exclude: list[Annotated[str, Field(min_length=1)]] = []
    include_signatures: bool = Field(default=False, alias="include-signatures")


UpdateType = Literal["major", "minor", "patch", "pre-release", "digest", "other"]
_LABEL = Annotated[str, Field(min_length=1, max_length=100)]
DEFAULT_MESSAGE = ("chore(deps): update {{ image_name }} from {{ old_tag or '?' }} to "
                   "{{ new_tag }} ({{ update_type }})")


def _schedule(value: list[str]) -> list[str]:
    if len(value) > schedules.MAX_ENTRIES:
        raise ValueError(f"at most {schedules.MAX_ENTRIES} entries")
    for entry in value:
        schedules.parse(entry)  # InvalidSchedule is a ValueError: pydantic names the key
    return value


def _timezone(value: str) -> str:
    schedules.zone(value)
    return value


class PublishRule(_Model):
    """Publish settings for some update types (like Renovate's packageRules): lists add to
    the policy's, other keys replace them; the first rule naming the update type applies
    (later matching rules add their lists and fill keys the earlier ones left unset)."""

    update: list[UpdateType] = Field(min_length=1)
    mode: Literal["commit", "pull-request"] | None = None
    group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    labels: list[_LABEL] = Field(default=[], max_length=20)
    reviewers: list[_LABEL] = Field(default=[], max_length=20)
    assignees: list[_LABEL] = Field(default=[], max_length=20)
    draft: bool | None = None
    auto_merge: bool | None = Field(default=None, alias="auto-merge")
    schedule: Annotated[list[str], AfterValidator(_schedule)] | None = None

    @field_validator("update", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Publish(_Model):
    mode: Literal["commit", "pull-request"] = "commit"
    branch: str | None = None
    # commit mode: push the commits to this branch instead (Flux push.branch), rebuilt as the
    # repository branch plus the bot's commits each cycle; force-pushed with a lease, and only
    # while every commit on it beyond the base is the bot's
    push_branch: str | None = Field(default=None, alias="push-branch",
                                    pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._/-]{0,199}$")
    message: str = DEFAULT_MESSAGE
    # commit mode: share the cycle's commit with the other policies, or get one of its own
    commit: Literal["per-cycle", "per-policy"] = "per-cycle"
    # pull-request mode: policies with the same group share one bot branch and one PR
    group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    title: str | None = None  # template; default: the first line of the message
    labels: list[str] = []
    reviewers: list[str] = []
    assignees: list[str] = []
    draft: bool = False
    auto_merge: bool = Field(default=False, alias="auto-merge")
    # when publishing may happen: windows or cron entries, read in ``timezone``
    schedule: Annotated[list[str], AfterValidator(_schedule)] = []
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    rules: list[PublishRule] = Field(default=[], max_length=20)

    def for_update(self, update_type: str) -> Publish:
        """These settings with the rules for ``update_type`` applied (no rules: itself)."""
        matching = [r for r in self.rules if update_type in r.update]
        if not matching:
            return self
        changed: dict[str, object] = {"rules": []}
        for rule in matching:
            for key in ("labels", "reviewers", "assignees"):
                changed[key] = list(dict.fromkeys(
                    [*changed.get(key, getattr(self, key)), *getattr(rule, key)]))  # type: ignore[misc]
            for key in ("mode", "group", "draft", "auto_merge", "schedule"):
                if getattr(rule, key) is not None and key not in changed:
                    changed[key] = getattr(rule, key)
        return self.model_copy(update=changed)


class Rollback(_Model):
    """Write the previous tag back into Git when an agent reports the new one degraded
    (a commit in commit mode, a pull request in pull-request mode)."""

    on: Literal["degraded", "never"] = "degraded"


class PolicySpec(_Model):
    image: str
    select: Select
    paths: list[str] = ["**"]
    pin_digest: bool = Field(False, alias="pin-digest")  # write repo:tag@sha256:…
    # defaults built without validation: building a model's validator costs ~15 ms of a
    # `validate` start-up, and a default needs none
    publish: Publish = Field(default_factory=Publish.model_construct)
    interval: durations.Duration = "5m"
    filter: Filter = Field(default_factory=Filter.model_construct)
    variant: str | None = Field(default=None, pattern=r"^[0-9A-Za-z_.-]+$")
    precision: Literal["current", "any", 1, 2, 3, 4] = "current"
    allow_downgrade: bool = Field(default=False, alias="allow-downgrade")
    min_age: durations.Duration = Field(default="0s", alias="min-age")
    max_bump: Literal["major", "minor", "patch"] | None = Field(default=None, alias="max-bump")
    platforms: list[str] = []
    rollback: Rollback = Field(default_factory=Rollback.model_construct)
    # skipped by every mode (no registry request, no edit, no rollback) until set back;
    # `image-bot promote` and `rollback` still write it (docs/operations.md)
    suspend: bool = False

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        for platform in value:
            if not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", platform):
                raise ValueError(f"{platform!r} is not OS/ARCH[/VARIANT] (for example "
                                 f"linux/amd64 or linux/arm64/v8)")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        ref = refs.parse(value)  # InvalidReference is a ValueError: pydantic reports the key
        if ref.tag or ref.digest:
            raise ValueError("must name the image without a tag or digest")
        return value

    @property
    def image_ref(self) -> refs.ImageRef:
        return refs.parse(self.image)


class Metadata(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
    # Flux-style: a marker "NAMESPACE:NAME" belongs to the policy of that name and namespace
    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ImagePolicy(_Model):
    api_version: Literal["image-bot/v1"] = Field(alias="apiVersion")
    kind: Literal["ImagePolicy"]
    metadata: Metadata
    spec: PolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name
