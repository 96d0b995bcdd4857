"""Other tools' objects → image-bot policies: Flux ImageRepository/ImagePolicy/
ImageUpdateAutomation and Argo CD Image Updater annotations on Applications (pure: documents
in, policy documents and notes out; never reads the network, never writes a file).

Every setting that has no image-bot equivalent, or that belongs in the bot config rather than
a policy, becomes a note naming the object and the setting: nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from image_bot import refs
from image_bot.config import models

_ARGO = "argocd-image-updater.argoproj.io/"
_FLUX_GROUP = "image.toolkit.fluxcd.io/"
_NAME = re.compile(r"[^a-z0-9.-]+")
MAX_DOCUMENTS = 10_000


@dataclass(frozen=True, slots=True)
class Source:
    """One document of an input file."""

    file: str
    index: int  # 1-based
    document: Any

    def where(self) -> str:
        kind = self.document.get("kind", "?") if isinstance(self.document, dict) else "?"
        meta = self.document.get("metadata") if isinstance(self.document, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        namespace = meta.get("namespace") if isinstance(meta, dict) else None
        shown = f"{namespace}/{name}" if namespace else (name or f"document {self.index}")
        return f"{self.file}: {kind} {shown}"


@dataclass
class Converted:
    policies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be mapped, and where

    def note(self, where: str, text: str) -> None:
        self.notes.append(f"{where}: {text}")


def _policy(name: str, namespace: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    document = {"apiVersion": "image-bot/v1", "kind": "ImagePolicy", "metadata": metadata,
                "spec": spec}
    models.ImagePolicy.model_validate(document)  # what is printed always validates
    return document


def _name(text: str) -> str:
    return _NAME.sub("-", text.lower()).strip("-.")[:253] or "image"


def _meta(document: Mapping[str, Any]) -> tuple[str | None, str | None]:
    meta = document.get("metadata")
    if not isinstance(meta, dict):
        return None, None
    return meta.get("namespace"), meta.get("name")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- Flux ------------------------------------------------------------------------------------


def from_flux(sources: Iterable[Source]) -> Converted:
    """Each Flux ImagePolicy becomes a policy; its ImageRepository gives the image and interval,
    an ImageUpdateAutomation of its namespace the paths and publish settings."""
    out = Converted()
    repositories: dict[tuple[str | None, str | None], Source] = {}
    policies: list[Source] = []
    automations: list[Source] = []
    for source in sources:
        doc = source.document
        if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith(
                _FLUX_GROUP):
            out.note(source.where(), "not a Flux image automation object; skipped")
            continue
        kind = doc.get("kind")
        if kind == "ImageRepository":
            repositories[_meta(doc)] = source
        elif kind == "ImagePolicy":
            policies.append(source)
        elif kind == "ImageUpdateAutomation":
            automations.append(source)
        else:
            out.note(source.where(), f"kind {kind} is not converted")
    for source in repositories.values():
        _flux_repository_notes(source, out)
    automation_of = {_meta(a.document)[0]: _flux_automation(a, out) for a in automations}
    for source in policies:
        _flux_policy(source, repositories, automation_of, out)
    return out


def _flux_repository_notes(source: Source, out: Converted) -> None:
    spec = _mapping(source.document.get("spec"))
    where = source.where()
    host = _host(spec.get("image"))
    bot = {
        "secretRef": f"credentials: put them in registries[] of bot.yaml for {host} "
                     f"(username_env/password_env from the Secret)",
        "serviceAccountName": f"pull secrets of a ServiceAccount: registries[] of bot.yaml "
                              f"for {host}",
        "provider": f"cloud provider auth: see docs/registries.md for {host}",
        "certSecretRef": f"a CA bundle: registries[].ca_bundle in bot.yaml for {host}",
        "proxySecretRef": "a proxy: set HTTPS_PROXY in the bot's environment",
        "insecure": f"plain HTTP: registries[].insecure: true in bot.yaml for {host}",
        "timeout": "registry timeouts are set per registry in bot.yaml",
        "accessFrom": "accessFrom: not needed (policies are files)",
    }
    for key, text in bot.items():
        if key in spec and spec[key] not in (None, False):
            out.note(where, f"spec.{key} not mapped; {text}")
    for key in sorted(set(spec) - {"image", "interval", "exclusionList", "suspend", *bot}):
        out.note(where, f"spec.{key} has no equivalent; not mapped")


def _host(image: Any) -> str:
    try:
        return refs.parse(str(image)).host
    except refs.InvalidReference:
        return str(image)


@dataclass
class _Automation:
    paths: list[str] | None
    publish: dict[str, Any] | None


def _flux_automation(source: Source, out: Converted) -> _Automation:
    spec = _mapping(source.document.get("spec"))
    where = source.where()
    git = _mapping(spec.get("git"))
    checkout = _mapping(_mapping(_mapping(git.get("checkout")).get("ref"))).get("branch")
    push = _mapping(git.get("push"))
    commit = _mapping(git.get("commit"))
    update = _mapping(spec.get("update"))
    paths = None
    if update.get("path"):
        folder = str(update["path"]).strip().removeprefix("./").strip("/")
        paths = [f"{folder}/**"] if folder and folder != "." else ["**"]
    if update.get("strategy") not in (None, "Setters"):
        out.note(where, f"spec.update.strategy {update['strategy']!r} is not converted")
    branch = push.get("branch") or checkout
    publish: dict[str, Any] | None = None
    if branch and checkout and branch != checkout:
        publish = {"mode": "commit", "branch": checkout, "push-branch": branch}
    elif branch:
        publish = {"mode": "commit", "branch": branch}
    if commit.get("messageTemplate"):
        out.note(where, "spec.git.commit.messageTemplate (a Go template) is not converted; "
                        "write publish.message in Jinja2 ({{ image }}, {{ new_tag }}, …)")
    author = _mapping(commit.get("author"))
    if author:
        out.note(where, f"spec.git.commit.author goes to bot.yaml: git.author_name "
                        f"{author.get('name')!r}, git.author_email {author.get('email')!r}")
    if commit.get("signingKey"):
        out.note(where, "spec.git.commit.signingKey: set git.sign and git.signing_key in "
                        "bot.yaml")
    if spec.get("interval"):
        out.note(where, f"spec.interval {spec['interval']!r}: image-bot updates at each "
                        f"policy's spec.interval (taken from the ImageRepository)")
    source_ref = _mapping(spec.get("sourceRef"))
    if source_ref:
        out.note(where, f"spec.sourceRef {source_ref.get('kind')}/{source_ref.get('name')}: "
                        f"its URL goes to repositories[].url in bot.yaml")
    for key in ("refspec", "options"):
        if key in push:
            out.note(where, f"spec.git.push.{key} has no equivalent; not mapped")
    return _Automation(paths, publish)


def _flux_policy(source: Source, repositories: Mapping[tuple[str | None, str | None], Source],
                 automation_of: Mapping[str | None, _Automation], out: Converted) -> None:
    doc = source.document
    namespace, name = _meta(doc)
    where = source.where()
    spec = _mapping(doc.get("spec"))
    ref = _mapping(spec.get("imageRepositoryRef"))
    repository = repositories.get((ref.get("namespace") or namespace, ref.get("name")))
    if repository is None:
        out.note(where, f"its ImageRepository {ref.get('name')!r} is not among the inputs; "
                        f"no policy written (give both files)")
        return
    repo_spec = _mapping(repository.document.get("spec"))
    converted: dict[str, Any] = {"image": str(repo_spec.get("image", ""))}
    if repo_spec.get("interval"):
        converted["interval"] = str(repo_spec["interval"])
    if repo_spec.get("suspend") is True:  # a frozen scan: a frozen policy
        converted["suspend"] = True
    selection = _mapping(spec.get("policy"))
    if "semver" in selection:
        converted["select"] = {"semver": {"range": str(
            _mapping(selection["semver"]).get("range", "*"))}}
    elif "numerical" in selection:
        converted["select"] = {"numerical": {
            "order": _mapping(selection["numerical"]).get("order", "asc")}}
    elif "alphabetical" in selection:
        converted["select"] = {"alphabetical": {
            "order": _mapping(selection["alphabetical"]).get("order", "asc")}}
    else:
        out.note(where, f"spec.policy {sorted(selection)} is not converted; no policy written")
        return
    tag_filter: dict[str, Any] = {}
    filter_tags = _mapping(spec.get("filterTags"))
    if filter_tags.get("pattern"):
        tag_filter["pattern"] = str(filter_tags["pattern"])
    if filter_tags.get("extract"):
        tag_filter["extract"] = str(filter_tags["extract"])
    excluded = [f"regex:{e}" for e in repo_spec.get("exclusionList") or []]
    if excluded:
        tag_filter["exclude"] = excluded
    if tag_filter:
        converted["filter"] = tag_filter
    reflect = spec.get("digestReflectionPolicy")
    if reflect in ("Always", "IfNotPresent"):
        converted["pin-digest"] = True
    for key in sorted(set(spec) - {"imageRepositoryRef", "policy", "filterTags",
                                   "digestReflectionPolicy", "interval"}):
        out.note(where, f"spec.{key} has no equivalent; not mapped")
    automation = automation_of.get(namespace)
    if automation is None:
        out.note(where, "no ImageUpdateAutomation of its namespace among the inputs: paths "
                        "and publish left at their defaults")
    else:
        if automation.paths:
            converted["paths"] = automation.paths
        if automation.publish:
            converted["publish"] = automation.publish
    out.policies.append(_policy(_name(str(name)), namespace, converted))


# --- Argo CD Image Updater -------------------------------------------------------------------


_STRATEGIES = {"semver": "semver", "latest": "newest-build", "newest-build": "newest-build",
               "name": "alphabetical", "alphabetical": "alphabetical", "digest": "digest"}
_AUTOMATIC = ("helm.image-name", "helm.image-tag", "helm.image-spec", "kustomize.image-name")


def from_argocd(sources: Iterable[Source]) -> Converted:
    """Each image of an Application's ``image-list`` annotation becomes a policy."""
    out = Converted()
    names: set[str] = set()
    for source in sources:
        doc = source.document
        if not isinstance(doc, dict) or doc.get("kind") not in ("Application",):
            kind = doc.get("kind") if isinstance(doc, dict) else None
            out.note(source.where(), f"kind {kind} is not converted (Applications with "
                                     f"argocd-image-updater annotations are)")
            continue
        _argocd_application(source, out, names)
    return out


def _argocd_application(source: Source, out: Converted, names: set[str]) -> None:
    doc = source.document
    where = source.where()
    annotations = {k.removeprefix(_ARGO): str(v) for k, v in
                   _mapping(_mapping(doc.get("metadata")).get("annotations")).items()
                   if isinstance(k, str) and k.startswith(_ARGO)}
    if "image-list" not in annotations:
        out.note(where, "no argocd-image-updater.argoproj.io/image-list annotation; skipped")
        return
    used = {"image-list"}
    publish = _argocd_publish(annotations, where, out, used)
    spec_source = _mapping(_mapping(doc.get("spec")).get("source"))
    paths = [f"{str(spec_source['path']).strip('/')}/**"] if spec_source.get("path") else None
    if paths is None:
        out.note(where, "no spec.source.path: the policy searches every file (set spec.paths)")
    for entry in (e.strip() for e in annotations["image-list"].split(",")):
        if not entry:
            continue
        alias, _, image_text = entry.rpartition("=")
        image, constraint = _split_constraint(image_text)
        try:
            ref = refs.parse(image)
        except refs.InvalidReference as exc:
            out.note(where, f"image-list entry {entry!r}: {exc}; not mapped")
            continue
        alias = alias or ref.repository.rsplit("/", 1)[-1]
        spec = _argocd_spec(alias, ref, constraint, annotations, where, out, used)
        if spec is None:
            continue
        if paths:
            spec["paths"] = paths
        if publish:
            spec["publish"] = publish
        name = _name(alias)
        if name in names:
            name = _name(f"{_meta(doc)[1]}-{alias}")
        names.add(name)
        out.policies.append(_policy(name, None, spec))
    for key in sorted(set(annotations) - used):
        out.note(where, f"annotation {key!r} has no equivalent; not mapped")


def _split_constraint(text: str) -> tuple[str, str | None]:
    """``repo:constraint`` (the constraint after the last ``:`` that follows the last ``/``)."""
    slash, colon = text.rfind("/"), text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1:] or None
    return text, None


def _argocd_spec(alias: str, ref: refs.ImageRef, constraint: str | None,
                 annotations: Mapping[str, str], where: str, out: Converted,
                 used: set[str]) -> dict[str, Any] | None:
    def setting(key: str) -> str | None:
        used.add(f"{alias}.{key}")
        return annotations.get(f"{alias}.{key}")

    strategy_text = setting("update-strategy") or "semver"
    strategy = _STRATEGIES.get(strategy_text)
    if strategy is None:
        out.note(where, f"{alias}.update-strategy {strategy_text!r} is unknown; not mapped")
        return None
    spec: dict[str, Any] = {"image": ref.name.removeprefix(f"{refs.DOCKER_HUB}/library/")}
    if strategy == "semver":
        spec["select"] = {"semver": {"range": constraint or "*"}}
    elif strategy == "digest":
        spec["select"] = {"digest": {"tag": constraint or "latest"}}
    else:
        spec["select"] = {strategy: {"order": "asc"} if strategy == "alphabetical" else {}}
        if constraint:
            out.note(where, f"{alias}: the constraint {constraint!r} only applies to semver "
                            f"and digest; not mapped")
    tag_filter: dict[str, Any] = {}
    allow = setting("allow-tags")
    if allow and allow != "any":
        if allow.startswith("regexp:"):
            tag_filter["pattern"] = allow.removeprefix("regexp:")
        else:
            out.note(where, f"{alias}.allow-tags {allow!r} is not regexp: or any; not mapped")
    ignore = setting("ignore-tags")
    if ignore:
        tag_filter["exclude"] = [p.strip() for p in ignore.split(",") if p.strip()]
    if tag_filter:
        spec["filter"] = tag_filter
    platforms = setting("platforms")
    if platforms:
        spec["platforms"] = [p.strip() for p in platforms.split(",") if p.strip()]
    if setting("pull-secret"):
        out.note(where, f"{alias}.pull-secret: credentials go to registries[] of bot.yaml for "
                        f"{ref.host} (username_env/password_env)")
    if setting("force-update"):
        out.note(where, f"{alias}.force-update: not needed (image-bot reads Git); not mapped")
    for key in _AUTOMATIC:
        value = setting(key)
        if value:
            out.note(where, f"{alias}.{key} {value!r}: not needed when the values use the "
                            f"usual keys (image.repository/tag); otherwise add a marker comment "
                            f"# {{\"$imagepolicy\": \"{_name(alias)}:tag\"}}")
    return spec


def _argocd_publish(annotations: Mapping[str, str], where: str, out: Converted,
                    used: set[str]) -> dict[str, Any] | None:
    used.update({"write-back-method", "git-branch", "write-back-target", "git-repository"})
    method = annotations.get("write-back-method", "argocd")
    if method == "argocd":
        out.note(where, "write-back-method argocd (parameter overrides) has no equivalent: "
                        "image-bot always writes to Git")
    elif method.startswith("git:"):
        out.note(where, f"write-back-method {method!r}: Git credentials go to the bot's "
                        f"environment (docs/kubernetes.md)")
    if annotations.get("write-back-target"):
        out.note(where, f"write-back-target {annotations['write-back-target']!r}: not needed "
                        f"(references are edited where they are; narrow spec.paths)")
    if annotations.get("git-repository"):
        out.note(where, f"git-repository {annotations['git-repository']!r}: goes to "
                        f"repositories[].url in bot.yaml")
    branch = annotations.get("git-branch")
    if branch and ":" in branch:
        base, _, target = branch.partition(":")
        out.note(where, f"git-branch {branch!r} (push to {target!r}): use publish.mode: "
                        f"pull-request (image-bot names and updates the branch itself)")
        return {"mode": "commit", "branch": base} if base else None
    return {"mode": "commit", "branch": branch} if branch else None
