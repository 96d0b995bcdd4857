"""Sync stage, Kubernetes target: apply manifests or a kustomization with ``kubectl``.

``kubectl kustomize`` renders, ``kubectl diff --server-side`` tells OutOfSync objects,
``kubectl apply --server-side --field-manager=image-bot`` applies, with ApplySet pruning
(``--applyset``, ``--prune``), and ``kubectl rollout status`` judges workloads. kubectl
failures are translated here; the kubeconfig (and its tokens) never appear in messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.error import YAMLError

from image_bot import checkout as checkouts
from image_bot.config import loading
from image_bot.config.loading import breadcrumb
from image_bot.config.yamlio import YAML
from image_bot.errors import ConfigError, SyncError, TargetUnavailable
from image_bot.sync.status import Health, ServiceStatus, TargetResult

FIELD_MANAGER = "image-bot"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
_KUSTOMIZATION = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_DIFF_FILE = re.compile(r"^diff -u -N \S+/(\S+)\s", re.MULTILINE)
_PRUNED = re.compile(r"^(\S+) pruned$", re.MULTILINE)
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "unable to connect",
                "was refused")


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    applyset: str  # the ApplySet (a Secret in --namespace) that owns what we applied
    kubectl: str = "kubectl"
    namespace: str | None = None
    prune: bool = True
    self_heal: bool = True
    rollout_timeout: float = 60.0
    validate: bool = True  # False: kubectl --validate=false (API servers without OpenAPI)


@dataclass(frozen=True, slots=True)
class Resource:
    """One object of the rendered manifests."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    config_hash: str = ""
    images: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else (
            f"{self.kind}/{self.name}")

    @property
    def diff_name(self) -> str:
        """How ``kubectl diff`` names the object's temp file: group.version.Kind.ns.name."""
        group, _, version = self.api_version.rpartition("/")
        prefix = f"{group}.{version}" if group else version
        return ".".join(p for p in (prefix, self.kind, self.namespace, self.name) if p)


class KubernetesTarget:
    name = "kubernetes"

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings

    def close(self) -> None:
        """Nothing to release: every call is one kubectl process."""

    def apply(self, checkout: Path, path: str, *, revision: str,
              previous: Mapping[tuple[str, str], ServiceStatus]) -> TargetResult:
        application = Path(path).name or checkout.name
        # 1. render
        manifests, resources = self.render(checkout, path)
        # 2. compare: which objects differ live, and which did Git change since last pass
        changed = self.diff(manifests)
        moved = {r.diff_name for r in resources
                 if getattr(previous.get((application, r.display)), "config_hash",
                            None) != r.config_hash}
        drifted = changed - moved
        # 3. apply when Git moved; drift alone only with self-heal
        applied = bool(changed & moved) or bool(changed and self.settings.self_heal)
        removed = self.apply_manifests(manifests) if applied else ()
        # 4. health of what is now live
        statuses = tuple(self._status(application, r, previous.get((application, r.display)),
                                      revision=revision, differs=r.diff_name in changed,
                                      drifted=r.diff_name in drifted, applied=applied)
                         for r in resources)
        return TargetResult(statuses, (), removed)

    def _status(self, application: str, resource: Resource, before: ServiceStatus | None, *,
                revision: str, differs: bool, drifted: bool, applied: bool) -> ServiceStatus:
        state, reason = self.health(resource)
        fresh = (differs and applied) or before is None
        return ServiceStatus(
            application, resource.display, "OutOfSync" if differs and not applied else "Synced",
            state, revision=revision if fresh or before is None else before.revision,
            image=", ".join(resource.images) or None, config_hash=resource.config_hash,
            action="applied" if differs and applied else "none",
            drift="changed in the cluster" if drifted else None,
            error=None if state == "Healthy" else reason)

    # --- kubectl steps --------------------------------------------------------------------

    def render(self, checkout: Path, path: str) -> tuple[str, list[Resource]]:
        """The manifests (one YAML stream) and their objects; errors name the file."""
        root = checkout.resolve()
        base = (checkout / path).resolve()
        if not base.is_relative_to(root) or not base.exists():
            raise ConfigError(f"sync path {path!r} does not exist in the repository")
        namespace = self.settings.namespace
        if base.is_dir() and any((base / k).is_file() for k in _KUSTOMIZATION):
            stream = self._kubectl(["kustomize", str(base)], doing=f"rendering {path}").stdout
            return stream, parse(stream, where=f"{path} (kustomize output)", namespace=namespace)
        index = checkouts.Index(checkout)  # never a link out of the checkout, never a device
        files = index.under(checkout / path)
        if index.refused:
            refusal = index.refused[0]
            raise ConfigError(f"{breadcrumb(refusal.file)}: {refusal.reason}")
        texts = [(index.name(f), loading.read_text(index, f, index.name(f))) for f in files]
        resources = [r for where, text in texts
                     for r in parse(text, where=where, namespace=namespace)]
        return "".join(f"---\n{text}\n" for _, text in texts), resources

    def diff(self, manifests: str) -> set[str]:
        """Names (``group.version.Kind.ns.name``) of objects whose live state differs."""
        result = self._kubectl(["diff", "--server-side", f"--field-manager={FIELD_MANAGER}",
                                "--force-conflicts", *self._namespace(), "-f", "-"],
                               stdin=manifests, doing="comparing with the cluster",
                               ok=(0, 1))
        return set(_DIFF_FILE.findall(result.stdout))

    def apply_manifests(self, manifests: str) -> tuple[str, ...]:
        arguments = ["apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                     "--force-conflicts", *self._namespace()]
        if not self.settings.validate:
            arguments.append("--validate=false")
        if self.settings.prune:
            arguments += [f"--applyset={self.settings.applyset}", "--prune"]
        result = self._kubectl([*arguments, "-f", "-"], stdin=manifests, doing="applying",
                               env={"KUBECTL_APPLYSET": "true"})
        return tuple(_PRUNED.findall(result.stdout))

    def health(self, resource: Resource) -> tuple[Health, str]:
        if resource.kind not in WORKLOADS:
            return "Healthy", ""
        result = self._kubectl(
            ["rollout", "status", f"{resource.kind.lower()}/{resource.name}",
             *self._namespace(resource.namespace),
             f"--timeout={max(1, int(self.settings.rollout_timeout))}s"],
            doing=f"waiting for {resource.display}", ok=None)
        if result.returncode == 0:
            return "Healthy", ""
        message = _last_error(result.stderr) or _first_line(result.stdout)
        if "progress deadline" in message:  # the controller gave up: the rollout failed
            return "Degraded", f"rollout failed: {message}"
        if "timed out" in message or "waiting" in message or "exceeded" in message:
            return "Progressing", f"rollout not finished: {message}"
        return "Degraded", f"rollout failed: {message}"

    def _namespace(self, namespace: str | None = None) -> list[str]:
        chosen = namespace or self.settings.namespace
        return ["--namespace", chosen] if chosen else []

    def _kubectl(self, arguments: Sequence[str], *, doing: str, stdin: str | None = None,
                 env: Mapping[str, str] | None = None,
                 ok: tuple[int, ...] | None = (0,)) -> subprocess.CompletedProcess[str]:
        binary = shutil.which(self.settings.kubectl)
        if binary is None:
            raise TargetUnavailable(f"kubectl: {self.settings.kubectl!r} not found on PATH")
        try:
            result = subprocess.run([binary, *arguments], input=stdin, capture_output=True,
                                    text=True, env={**os.environ, **(env or {})},
                                    timeout=self.settings.rollout_timeout + 60, check=False)
        except subprocess.TimeoutExpired:
            raise TargetUnavailable(f"kubectl: {doing}: no answer") from None
        if ok is None or result.returncode in ok:
            return result
        message = _first_line(result.stderr) or f"exit code {result.returncode}"
        if any(marker in message.lower() for marker in _UNREACHABLE):
            raise TargetUnavailable(f"kubectl: {doing}: {message}")
        raise SyncError(f"kubectl: {doing}: {message}")


def parse(manifests: str, *, where: str, namespace: str | None) -> list[Resource]:
    """The objects in a multi-document YAML stream; each must have kind and name."""
    try:
        documents = list(YAML(typ="safe", pure=True).load_all(manifests))
    except YAMLError as exc:
        raise ConfigError(f"{breadcrumb(where)}: not valid YAML: "
                          f"{str(exc).splitlines()[0]}") from None
    resources = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        resources += _resources(document, where=where, index=index, namespace=namespace)
    return resources


def _resources(document: Any, *, where: str, index: int,
               namespace: str | None) -> list[Resource]:
    if not isinstance(document, dict):
        raise ConfigError(f"{breadcrumb(where, f'document {index + 1}')}: expected a mapping")
    if document.get("kind", "").endswith("List") and isinstance(document.get("items"), list):
        return [r for item in document["items"]
                for r in _resources(item, where=where, index=index, namespace=namespace)]
    metadata = document.get("metadata") or {}
    kind, api, name = document.get("kind"), document.get("apiVersion"), metadata.get("name")
    if not all(isinstance(v, str) and v for v in (kind, api, name)):
        raise ConfigError(f"{breadcrumb(where, f'document {index + 1}')}: needs apiVersion, "
                          f"kind and metadata.name")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return [Resource(str(api), str(kind), str(name), metadata.get("namespace") or (
        namespace if kind not in _CLUSTER_SCOPED else None),
        hashlib.sha256(canonical.encode()).hexdigest()[:16], tuple(_images(document)))]


def _images(node: Any) -> list[str]:
    """Every ``image`` of every container list in the object (pods, templates, jobs)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += [c["image"] for c in value
                          if isinstance(c, dict) and isinstance(c.get("image"), str)]
            else:
                found += _images(value)
    elif isinstance(node, list):
        for item in node:
            found += _images(item)
    return found


_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                   "PersistentVolume", "StorageClass", "PriorityClass"}


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _last_error(text: str) -> str:
    """kubectl's final ``error: ...`` line (client-go logs warnings before it)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else "")
