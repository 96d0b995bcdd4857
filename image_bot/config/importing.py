"""Other tools' objects → image-bot policies: Flux ImageRepository/ImagePolicy/
ImageUpdateAutomation, Argo CD Image Updater annotations on Applications (v0.x) and its
ImageUpdater resources (v1.x) (pure: documents in, policy documents and notes out; never reads
the network, never writes a file).

Every setting that has no image-bot equivalent, or that belongs in the bot config rather than
a policy, becomes a note naming the object and the setting: nothing is dropped silently.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from image_bot import refs
from image_bot.config import models

_ARGO = "argocd-image-updater.argoproj.io/"
_FLUX_GROUP = "image.toolkit.fluxcd.io/"
_NAME = re.compile(r"[^a-z0-9.]+")  # a run of anything else (dashes too): one dash
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
_UPDATER = "ImageUpdater"
_CRD_SETTINGS = ("updateStrategy", "forceUpdate", "allowTags", "ignoreTags", "pullSecret",
                 "platforms")
_CRD_GIT = ("repository", "branch", "writeBackTarget", "pullRequest")
_CRD_TARGETS = {"helm": ("name", "tag", "spec"), "kustomize": ("name",)}
_Matched = set[tuple[str, int]]  # (file, index) of the Applications an ImageUpdater matched


@dataclass(frozen=True, slots=True)
class _Set:
    """One setting as the input wrote it: where (annotation name or key path) and its value."""

    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class _ImageSettings:
    """One image's update settings, filled from annotations or from an ImageUpdater."""

    strategy: _Set | None = None
    allow_tags: _Set | None = None
    ignore_tags: _Set | None = None  # value: a list of patterns
    platforms: _Set | None = None  # value: a list of platforms
    pull_secret: _Set | None = None
    force_update: _Set | None = None
    targets: tuple[_Set, ...] = ()  # the Helm / Kustomize names of the image


@dataclass(frozen=True, slots=True)
class _WriteBack:
    """Where an Application's updates go, filled from annotations or from an ImageUpdater."""

    method: _Set
    branch: _Set | None = None
    target: _Set | None = None
    repository: _Set | None = None
    pull_request: _Set | None = None  # value: the pullRequest block


def from_argocd(sources: Iterable[Source]) -> Converted:
    """Each image of an Application's ``image-list`` annotation, and each image of an
    ImageUpdater's applicationRefs, becomes a policy."""
    out = Converted()
    names: set[str] = set()
    applications: list[Source] = []
    updaters: list[Source] = []
    for source in sources:
        doc = source.document
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind == "Application":
            applications.append(source)
        elif kind == _UPDATER and str(doc.get("apiVersion", "")).startswith(_ARGO):
            updaters.append(source)
        else:
            out.note(source.where(), f"kind {kind} is not converted (Applications with "
                                     f"argocd-image-updater annotations and ImageUpdaters are)")
    matched: _Matched = set()
    for source in updaters:
        _argocd_updater(source, applications, out, names, matched)
    for source in applications:
        _argocd_application(source, out, names,
                            referenced=(source.file, source.index) in matched)
    out.notes = list(dict.fromkeys(out.notes))  # a spec-level setting, noted once
    return out


def _argocd_application(source: Source, out: Converted, names: set[str], *,
                        referenced: bool) -> None:
    doc = source.document
    where = source.where()
    annotations = {k.removeprefix(_ARGO): str(v) for k, v in
                   _mapping(_mapping(doc.get("metadata")).get("annotations")).items()
                   if isinstance(k, str) and k.startswith(_ARGO)}
    if "image-list" not in annotations:
        if not referenced:
            out.note(where, "no argocd-image-updater.argoproj.io/image-list annotation; "
                            "skipped")
        return
    used = {"image-list"}
    publish = _argocd_publish(_annotation_write_back(annotations, used), where, out)
    paths = _application_paths(doc)
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
        settings = _annotation_settings(alias, annotations, used)
        spec = _argocd_spec(alias, ref, _Set(alias, constraint) if constraint else None,
                            settings, where, out)
        if spec is not None:
            _argocd_policy(spec, paths, publish, alias, str(_meta(doc)[1]), names, out)
    for key in sorted(set(annotations) - used):
        out.note(where, f"annotation {key!r} has no equivalent; not mapped")


def _application_paths(application: Mapping[str, Any]) -> list[str] | None:
    spec_source = _mapping(_mapping(application.get("spec")).get("source"))
    return [f"{str(spec_source['path']).strip('/')}/**"] if spec_source.get("path") else None


def _annotation_settings(alias: str, annotations: Mapping[str, str],
                         used: set[str]) -> _ImageSettings:
    def setting(key: str) -> _Set | None:
        used.add(f"{alias}.{key}")
        value = annotations.get(f"{alias}.{key}")
        return _Set(f"{alias}.{key}", value) if value else None

    return _ImageSettings(
        strategy=setting("update-strategy"), allow_tags=setting("allow-tags"),
        ignore_tags=_listed(setting("ignore-tags")), platforms=_listed(setting("platforms")),
        pull_secret=setting("pull-secret"), force_update=setting("force-update"),
        targets=tuple(t for t in map(setting, _AUTOMATIC) if t))


def _annotation_write_back(annotations: Mapping[str, str], used: set[str]) -> _WriteBack:
    def setting(key: str) -> _Set | None:
        used.add(key)
        return _Set(key, annotations[key]) if annotations.get(key) else None

    return _WriteBack(
        method=setting("write-back-method") or _Set("write-back-method", "argocd"),
        branch=setting("git-branch"), target=setting("write-back-target"),
        repository=setting("git-repository"))


def _argocd_policy(spec: dict[str, Any], paths: list[str] | None,
                   publish: Mapping[str, Any] | None, alias: str, qualifier: str,
                   names: set[str], out: Converted) -> None:
    if paths:
        spec["paths"] = list(paths)
    if publish:
        spec["publish"] = dict(publish)
    name = _name(alias)
    if name in names:
        name = _name(f"{qualifier}-{alias}")
    names.add(name)
    out.policies.append(_policy(name, None, spec))


def _split_constraint(text: str) -> tuple[str, str | None]:
    """``repo:constraint`` (the constraint after the last ``:`` that follows the last ``/``)."""
    slash, colon = text.rfind("/"), text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1:] or None
    return text, None


def _argocd_spec(alias: str, ref: refs.ImageRef, constraint: _Set | None,
                 settings: _ImageSettings, where: str, out: Converted) -> dict[str, Any] | None:
    """One image's policy spec (no paths, no publish); ``constraint``: the text after the
    image's ``:``, keyed by where it was written."""
    chosen = settings.strategy or _Set("update-strategy", "semver")
    strategy = _STRATEGIES.get(str(chosen.value))
    if strategy is None:
        out.note(where, f"{chosen.key} {chosen.value!r} is unknown; not mapped")
        return None
    spec: dict[str, Any] = {"image": ref.name.removeprefix(f"{refs.DOCKER_HUB}/library/")}
    if strategy == "semver":
        spec["select"] = {"semver": {"range": constraint.value if constraint else "*"}}
    elif strategy == "digest":
        spec["select"] = {"digest": {"tag": constraint.value if constraint else "latest"}}
    else:
        spec["select"] = {strategy: {"order": "asc"} if strategy == "alphabetical" else {}}
        if constraint:
            out.note(where, f"{constraint.key}: the constraint {constraint.value!r} only "
                            f"applies to semver and digest; not mapped")
    tag_filter: dict[str, Any] = {}
    allow = settings.allow_tags
    if allow and allow.value != "any":
        if str(allow.value).startswith("regexp:"):
            tag_filter["pattern"] = str(allow.value).removeprefix("regexp:")
        else:
            out.note(where, f"{allow.key} {allow.value!r} is not regexp: or any; not mapped")
    ignore = _values(settings.ignore_tags)
    if ignore:
        tag_filter["exclude"] = ignore
    if tag_filter:
        spec["filter"] = tag_filter
    platforms = _values(settings.platforms)
    if platforms:
        spec["platforms"] = platforms
    if settings.pull_secret:
        out.note(where, f"{settings.pull_secret.key}: credentials go to registries[] of "
                        f"bot.yaml for {ref.host} (username_env/password_env)")
    if settings.force_update:
        out.note(where, f"{settings.force_update.key}: not needed (image-bot reads Git); "
                        f"not mapped")
    for target in settings.targets:
        out.note(where, f"{target.key} {target.value!r}: not needed when the values use the "
                        f"usual keys (image.repository/tag); otherwise add a marker comment "
                        f"# {{\"$imagepolicy\": \"{_name(alias)}:tag\"}}")
    return spec


def _argocd_publish(write_back: _WriteBack, where: str, out: Converted) -> dict[str, Any] | None:
    method = write_back.method
    if method.value == "argocd":
        out.note(where, f"{method.key} argocd (parameter overrides) has no equivalent: "
                        f"image-bot always writes to Git")
    elif str(method.value).startswith("git:"):
        out.note(where, f"{method.key} {method.value!r}: Git credentials go to the bot's "
                        f"environment (docs/kubernetes.md)")
    if write_back.target:
        out.note(where, f"{write_back.target.key} {write_back.target.value!r}: not needed "
                        f"(references are edited where they are; narrow spec.paths)")
    if write_back.repository:
        out.note(where, f"{write_back.repository.key} {write_back.repository.value!r}: goes "
                        f"to repositories[].url in bot.yaml")
    publish: dict[str, Any] = {"mode": "commit"}
    if write_back.pull_request:
        publish["mode"] = "pull-request"
        labels = _mapping(write_back.pull_request.value).get("labels")
        if isinstance(labels, list) and labels:
            publish["labels"] = [str(label) for label in labels]
    branch = write_back.branch
    if branch and ":" in str(branch.value):
        base, _, target = str(branch.value).partition(":")
        out.note(where, f"{branch.key} {branch.value!r} (push to {target!r}): use "
                        f"publish.mode: pull-request (image-bot names and updates the branch "
                        f"itself)")
        return {**publish, "branch": base} if base else None
    if branch:
        return {**publish, "branch": str(branch.value)}
    return publish if write_back.pull_request else None


# --- Argo CD Image Updater v1.x: ImageUpdater resources --------------------------------------


def _argocd_updater(source: Source, applications: list[Source], out: Converted,
                    names: set[str], referenced: _Matched) -> None:
    """Each image of each applicationRefs[] entry → a policy, settings merged spec →
    applicationRef → image as the controller does."""
    where = source.where()
    spec = _mapping(source.document.get("spec"))
    _unknown(spec, "spec", ("commonUpdateSettings", "writeBackConfig", "applicationRefs",
                            "imagesVerification"), where, out)
    app_refs = spec.get("applicationRefs")
    if not isinstance(app_refs, list) or not app_refs:
        out.note(where, "spec.applicationRefs is empty; no policy written")
        return
    for index, app_ref in enumerate(app_refs):
        at = f"spec.applicationRefs[{index}]"
        if not _mapping(app_ref).get("namePattern"):
            out.note(where, f"{at} has no namePattern; not converted")
            continue
        _argocd_application_ref(source, spec, app_ref, at, applications, out, names,
                                referenced)


def _argocd_application_ref(source: Source, spec: Mapping[str, Any],
                            app_ref: Mapping[str, Any], at: str, applications: list[Source],
                            out: Converted, names: set[str], referenced: _Matched) -> None:
    where = source.where()
    _unknown(app_ref, at, ("namePattern", "labelSelectors", "useAnnotations", "images",
                           "imagesVerification", "commonUpdateSettings", "writeBackConfig"),
             where, out)
    if app_ref.get("useAnnotations") is True:
        out.note(where, f"{at}.useAnnotations: the settings are the matched Applications' "
                        f"annotations; pass the Applications to convert them")
        return
    pattern = str(app_ref["namePattern"])
    if app_ref.get("labelSelectors"):
        out.note(where, f"{at}.labelSelectors has no equivalent (a policy covers paths, not "
                        f"Applications); not mapped")
    paths = _matched_paths(source, pattern, applications, referenced)
    if paths is None:
        out.note(where, f"{at}.namePattern {pattern!r}: an ImageUpdater does not say where "
                        f"the Applications' files are; set spec.paths of its policies (or "
                        f"pass the Applications alongside)")
    publish = _argocd_publish(_crd_write_back(spec, app_ref, at, where, out), where, out)
    images = app_ref.get("images")
    if not isinstance(images, list) or not images:
        out.note(where, f"{at}.images is empty; no policy written")
        return
    for index, image in enumerate(images):
        key, image = f"{at}.images[{index}]", _mapping(image)
        _unknown(image, key, ("alias", "imageName", "commonUpdateSettings", "manifestTargets",
                              "imagesVerification"), where, out)
        text = str(image.get("imageName") or "")
        name, constraint = _split_constraint(text)
        try:
            ref = refs.parse(name)
        except refs.InvalidReference as exc:
            out.note(where, f"{key}.imageName {text!r}: {exc}; not mapped")
            continue
        alias = str(image.get("alias") or ref.repository.rsplit("/", 1)[-1])
        for level_at, level in (("spec", spec), (at, app_ref), (key, image)):
            if level.get("imagesVerification"):
                out.note(where, f"{level_at}.imagesVerification (signature verification) has "
                                f"no equivalent; not mapped")
        settings = _crd_settings((("spec", spec), (at, app_ref), (key, image)),
                                 _crd_targets(image, key, where, out), where, out)
        written = _Set(f"{key}.imageName", constraint) if constraint else None
        converted = _argocd_spec(alias, ref, written, settings, where, out)
        if converted is not None:
            _argocd_policy(converted, paths, publish, alias, pattern, names, out)


def _matched_paths(source: Source, pattern: str, applications: list[Source],
                   referenced: _Matched) -> list[str] | None:
    """The source paths of the input's Applications the namePattern (a glob) selects, in the
    ImageUpdater's namespace."""
    namespace = _meta(source.document)[0]
    paths: list[str] = []
    for application in applications:
        app_namespace, app_name = _meta(application.document)
        if not fnmatch.fnmatchcase(str(app_name), pattern) or (
                namespace and app_namespace and app_namespace != namespace):
            continue
        referenced.add((application.file, application.index))
        paths += _application_paths(application.document) or []
    return sorted(set(paths)) or None


def _crd_settings(levels: Iterable[tuple[str, Mapping[str, Any]]], targets: tuple[_Set, ...],
                  where: str, out: Converted) -> _ImageSettings:
    """commonUpdateSettings of each level, a nearer level's setting winning."""
    found: dict[str, _Set] = {}
    for at, level in levels:
        if level.get("commonUpdateSettings") is None:
            continue
        common = _mapping(level["commonUpdateSettings"])
        _unknown(common, f"{at}.commonUpdateSettings", _CRD_SETTINGS, where, out)
        found.update({name: _Set(f"{at}.commonUpdateSettings.{name}", common[name])
                      for name in _CRD_SETTINGS if common.get(name) is not None})
    force = found.get("forceUpdate")
    return _ImageSettings(
        strategy=found.get("updateStrategy"), allow_tags=found.get("allowTags"),
        ignore_tags=_listed(found.get("ignoreTags")), platforms=_listed(found.get("platforms")),
        pull_secret=found.get("pullSecret"),
        force_update=force if force and force.value is True else None, targets=targets)


def _values(setting: _Set | None) -> list[str]:
    """The non-empty items of a list setting (none when it is not set)."""
    return [str(v) for v in (setting.value if setting else []) if v]


def _listed(setting: _Set | None) -> _Set | None:
    """A list setting (a comma-separated string read as the annotations are)."""
    if setting is None or isinstance(setting.value, list):
        return setting
    return _Set(setting.key, [p.strip() for p in str(setting.value).split(",")])


def _crd_targets(image: Mapping[str, Any], key: str, where: str,
                 out: Converted) -> tuple[_Set, ...]:
    targets = _mapping(image.get("manifestTargets"))
    _unknown(targets, f"{key}.manifestTargets", ("helm", "kustomize", "plugin"), where, out)
    if targets.get("plugin"):
        out.note(where, f"{key}.manifestTargets.plugin (a Config Management Plugin's "
                        f"environment) has no equivalent; not mapped")
    found: list[_Set] = []
    for kind, fields in _CRD_TARGETS.items():
        block = _mapping(targets.get(kind))
        _unknown(block, f"{key}.manifestTargets.{kind}", fields, where, out)
        found += [_Set(f"{key}.manifestTargets.{kind}.{name}", block[name])
                  for name in fields if block.get(name)]
    return tuple(found)


def _crd_write_back(spec: Mapping[str, Any], app_ref: Mapping[str, Any], at: str, where: str,
                    out: Converted) -> _WriteBack:
    """writeBackConfig of the spec, overridden key by key by the applicationRef's."""
    method = _Set("spec.writeBackConfig.method", "argocd")  # the controller's default
    found: dict[str, _Set] = {}
    for level_at, level in (("spec", spec), (at, app_ref)):
        if level.get("writeBackConfig") is None:
            continue
        config, base = _mapping(level["writeBackConfig"]), f"{level_at}.writeBackConfig"
        _unknown(config, base, ("method", "gitConfig"), where, out)
        if config.get("method"):
            method = _Set(f"{base}.method", config["method"])
        git = _mapping(config.get("gitConfig"))
        _unknown(git, f"{base}.gitConfig", _CRD_GIT, where, out)
        found.update({name: _Set(f"{base}.gitConfig.{name}", git[name])
                      for name in _CRD_GIT if git.get(name) is not None})
    return _WriteBack(method=method, branch=found.get("branch"),
                      target=found.get("writeBackTarget"), repository=found.get("repository"),
                      pull_request=found.get("pullRequest"))


def _unknown(block: Mapping[str, Any], at: str, known: Iterable[str], where: str,
             out: Converted) -> None:
    for key in sorted(set(map(str, block)) - set(known)):
        out.note(where, f"{at}.{key} has no equivalent; not mapped")
