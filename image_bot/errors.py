"""The one exception tree of image-bot, split by what the caller should do about it.

::

    ImageBotError
    ├── PermanentError        fix your config or input; retrying will not help
    │   ├── ConfigError       a bot config or policy document is invalid
    │   ├── ImageNotFound     the registry has no such repository
    │   ├── AuthError         credentials missing or refused
    │   ├── RegistryError     the registry answered something we cannot use
    │   │   └── RegistryLimitExceeded   more bytes, tags or manifest than a limit allows
    │   ├── UpdateError       a file could not be edited safely (left untouched)
    │   ├── SyncError         the sync target refused a change (pull, create, health)
    │   ├── PublishError      Git refused our change for good
    │   └── ForgeError        GitHub/GitLab refused a request (401, 403, 404, 422)
    └── TemporaryError        try again later (``retry_after`` seconds, when known)
        ├── RegistryUnavailable   connection refused, timeouts, 5xx, 429
        ├── PushRejected          the remote moved while we were working
        ├── TargetUnavailable     the Docker engine or Kubernetes API cannot be reached
        └── ForgeUnavailable      GitHub/GitLab down, 5xx or rate-limited
    StateDirLocked            another process runs on the same state dir

Third-party exceptions (httpx, git, ruamel) are translated at the stage boundary with
``raise ... from exc``. Messages never carry a token or a password.
"""

from __future__ import annotations


class ImageBotError(Exception):
    """Base of every error image-bot raises on purpose."""


class PermanentError(ImageBotError):
    """Retrying will not help: the configuration or the input must change."""


class TemporaryError(ImageBotError):
    """Retrying later may help."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(PermanentError):
    """A bot config file or a policy document is invalid; the message is a breadcrumb."""


class ImageNotFound(PermanentError):
    """The registry answered that the repository does not exist."""


class AuthError(PermanentError):
    """The registry or Git remote refused our credentials (or we have none)."""


class RegistryError(PermanentError):
    """The registry answered something we cannot use (bad JSON, HTML page, wrong type)."""


class RegistryLimitExceeded(RegistryError):
    """A registry answered more than a limit allows: bytes, tags or manifest size."""


class UpdateError(PermanentError):
    """A file could not be edited safely; it was left untouched."""


class PublishError(PermanentError):
    """Git refused our change for a reason that retrying will not fix."""


class SyncError(PermanentError):
    """The sync target refused a change: pull, create or health check failed."""


class RegistryUnavailable(TemporaryError):
    """The registry could not be reached or answered 5xx/429."""


class PushRejected(TemporaryError):
    """The push was rejected because the remote branch moved (non-fast-forward)."""


class StateDirLocked(ImageBotError):
    """Another image-bot process works on the same state dir (its clone and its cache)."""


class TargetUnavailable(TemporaryError):
    """The sync target (Docker engine, Kubernetes API, kubectl) cannot be reached."""


class ForgeError(PermanentError):
    """GitHub or GitLab refused a request for good (401, 403, 404, 422): fix the config."""


class ForgeUnavailable(TemporaryError):
    """GitHub or GitLab could not be reached, or answered 5xx or a rate limit."""
