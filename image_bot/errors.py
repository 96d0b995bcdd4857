"""The one exception tree of image-bot, split by what the caller should do about it.

::

    ImageBotError
    ├── PermanentError        fix your config or input; retrying will not help
    │   ├── ConfigError       a bot config or policy document is invalid
    │   ├── UsageError        a command names what does not exist (a policy, a tag)
    │   ├── ImageNotFound     the registry has no such repository
    │   ├── AuthError         credentials missing or refused
    │   ├── RegistryError     the registry answered something we cannot use
    │   │   └── RegistryLimitExceeded   more bytes, tags or manifest than a limit allows
    │   ├── UpdateError       a file could not be edited safely (left untouched)
    │   ├── FileRefused       a file of the checkout is never read (a link out, a device)
    │   │   └── FileTooLarge  … because it is larger than the cap
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

Every class names its ``kind`` (the party at fault: config, registry, git, forge, update,
sync), which metrics and logs use instead of reading the message.
"""

from __future__ import annotations

from typing import ClassVar


class ImageBotError(Exception):
    """Base of every error image-bot raises on purpose."""

    kind: ClassVar[str] = "internal"


class PermanentError(ImageBotError):
    """Retrying will not help: the configuration or the input must change."""


class TemporaryError(ImageBotError):
    """Retrying later may help."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(PermanentError):
    """A bot config file or a policy document is invalid; the message is a breadcrumb."""

    kind = "config"


class UsageError(PermanentError):
    """A command line names something that does not exist: an unknown policy, a tag the
    registry does not have, a rollback with no known previous tag."""

    kind = "usage"


class ImageNotFound(PermanentError):
    """The registry answered that the repository does not exist."""

    kind = "registry"


class AuthError(PermanentError):
    """The registry or Git remote refused our credentials (or we have none)."""

    kind = "auth"


class RegistryError(PermanentError):
    """The registry answered something we cannot use (bad JSON, HTML page, wrong type)."""

    kind = "registry"


class RegistryLimitExceeded(RegistryError):
    """A registry answered more than a limit allows: bytes, tags or manifest size."""


class UpdateError(PermanentError):
    """A file could not be edited safely; it was left untouched."""

    kind = "update"


class FileRefused(PermanentError):
    """A file of the checkout that is not read: a link out of it, not a regular file, or
    larger than the cap. ``file`` is its name in the checkout, ``reason`` says why."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class FileTooLarge(FileRefused):
    """A file of the checkout larger than ``limits.max_file_bytes``."""


class PublishError(PermanentError):
    """Git refused our change for a reason that retrying will not fix."""

    kind = "git"


class SyncError(PermanentError):
    """The sync target refused a change: pull, create or health check failed."""

    kind = "sync"


class RegistryUnavailable(TemporaryError):
    """The registry could not be reached or answered 5xx/429."""

    kind = "registry"


class PushRejected(TemporaryError):
    """The push was rejected because the remote branch moved (non-fast-forward)."""

    kind = "git"


class StateDirLocked(ImageBotError):
    """Another image-bot process works on the same state dir (its clone and its cache)."""

    kind = "state"


class TargetUnavailable(TemporaryError):
    """The sync target (Docker engine, Kubernetes API, kubectl) cannot be reached."""

    kind = "sync"


class ForgeError(PermanentError):
    """GitHub or GitLab refused a request for good (401, 403, 404, 422): fix the config."""

    kind = "forge"


class ForgeUnavailable(TemporaryError):
    """GitHub or GitLab could not be reached, or answered 5xx or a rate limit."""

    kind = "forge"
