"""Pydantic models of the bot config file and ``ImagePolicy`` documents (validation only).

The models check shape and types. Semantics that belong to a stage (for example whether a
semver range parses) are checked when that stage builds its object from the model, and the
error is reported with the same breadcrumb (see ``config.loading``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from image_bot import refs


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- bot config -------------------------------------------------------------------------


class RepositoryConfig(_Model):
    url: str = Field(min_length=1)
    branch: str = "main"
    policies: str = "policies/"
    name: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


class RegistryConfig(_Model):
    host: str = Field(min_length=1)
    insecure: bool = False
    username_env: str | None = None
    password_env: str | None = None

    @field_validator("host")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return refs.normalise_host(value.strip().removeprefix("https://").removeprefix("http://"))


class GitConfig(_Model):
    author_name: str = "image-bot"
    author_email: str = "image-bot@localhost"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "image-bot"


class BotConfig(_Model):
    repositories: list[RepositoryConfig] = Field(min_length=1)
    registries: list[RegistryConfig] = []
    git: GitConfig = GitConfig()
    state_dir: Path = Field(default_factory=_default_state_dir)

    def registry_for(self, host: str) -> RegistryConfig:
        """The settings for ``host``, or defaults (HTTPS, anonymous) when it is not listed."""
        for registry in self.registries:
            if registry.host == host:
                return registry
        return RegistryConfig(host=host)


# --- ImagePolicy ------------------------------------------------------------------------


class SemverSelect(_Model):
    range: str = Field(min_length=1)
    prerelease: bool = False


class Select(_Model):
    semver: SemverSelect


class Publish(_Model):
    mode: Literal["commit"] = "commit"
    branch: str | None = None
    message: str = "chore: update {{ image }} to {{ new_tag }}"


class PolicySpec(_Model):
    image: str
    select: Select
    paths: list[str] = ["**"]
    publish: Publish = Publish()
    interval: Annotated[str, Field(pattern=r"^\d+(\.\d+)?(ms|s|m|h)$")] = "5m"

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


class ImagePolicy(_Model):
    api_version: Literal["image-bot/v1"] = Field(alias="apiVersion")
    kind: Literal["ImagePolicy"]
    metadata: Metadata
    spec: PolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name
