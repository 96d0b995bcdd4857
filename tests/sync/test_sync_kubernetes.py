"""Sync agent, Kubernetes target: the real kubectl against the kmock API *emulator*.

No kube-apiserver can run here. kmock emulates the API (naive merges, no controllers), so
these tests check the wiring: kustomize rendering, server-side apply with our field manager,
ApplySet pruning, ``kubectl diff`` for OutOfSync, ``rollout status`` for health (the test
plays the Deployment controller by writing ``status``). Real-cluster semantics (strategic
merges, generations, controllers) are not exercised.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import devservers
from image_bot import cli

pytestmark = pytest.mark.emulator

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [deployment.yaml, settings.yaml]
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: registry.example.test/team/web:1.0.0   # updated by image-bot
"""
SETTINGS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data: {mode: demo}
"""
ROLLED_OUT = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}


def _sync(url: str, state: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli.main, [
        "sync", "--repo", url, "--path", "k8s", "--target", "kubernetes", "--once", "--json",
        "--name", "web-set", "--namespace", "default", "--no-validate",
        "--health-timeout", "2s", "--state-dir", str(state), *extra], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)["agents"][0]


def _by_object(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in report["services"]}


def _push(url: str, tmp_path: Path, edit: Callable[[Path], None]) -> None:
    clone = tmp_path / "edit"
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    devservers.git("pull", "-q", "--ff-only", cwd=clone)
    edit(clone)
    devservers.git("commit", "-q", "-am", "change", cwd=clone)
    devservers.git("push", "-q", "origin", "main", cwd=clone)


def _image(kube: devservers.KubeEmulator) -> str:
    deployment = kube.objects()[("deployments", "default", "web")]
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def test_apply_diff_health_prune_and_drift_through_kubectl(
    kube: devservers.KubeEmulator, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    url = config_repo({"k8s/kustomization.yaml": KUSTOMIZATION,
                       "k8s/deployment.yaml": DEPLOYMENT, "k8s/settings.yaml": SETTINGS})
    state = tmp_path / "state"

    # 1. first pass: everything applied; no controller has rolled the Deployment out yet
    code, report = _sync(url, state)
    assert code == 1
    objects = _by_object(report)
    assert set(objects) == {"ConfigMap/default/settings", "Deployment/default/web"}
    assert {o["action"] for o in objects.values()} == {"applied"}
    assert objects["ConfigMap/default/settings"]["health"] == "Healthy"
    web = objects["Deployment/default/web"]
    assert (web["sync"], web["health"]) == ("Synced", "Progressing")
    assert web["error"].startswith("rollout not finished: ")
    assert web["image"] == "registry.example.test/team/web:1.0.0"
    live = kube.objects()
    parent = live[("secrets", "default", "web-set")]  # the ApplySet parent
    assert parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"] == (
        "ConfigMap,Deployment.apps")
    set_id = parent["metadata"]["labels"]["applyset.kubernetes.io/id"]
    assert live[("configmaps", "default", "settings")]["metadata"]["labels"] == {
        "applyset.kubernetes.io/part-of": set_id}
    assert _image(kube) == "registry.example.test/team/web:1.0.0"

    # 2. the controller reports the rollout done; nothing differs, nothing is applied
    kube.patch("deployments", "default", "web", {"status": ROLLED_OUT})
    code, report = _sync(url, state)
    assert code == 0, report
    assert {(o["sync"], o["health"], o["action"]) for o in report["services"]} == {
        ("Synced", "Healthy", "none")}

    # 3. Git changes the tag and drops the ConfigMap: applied, and the ConfigMap pruned
    def change(clone: Path) -> None:
        deployment = clone / "k8s/deployment.yaml"
        deployment.write_text(deployment.read_text().replace("web:1.0.0", "web:1.1.0"))
        (clone / "k8s/kustomization.yaml").write_text(
            KUSTOMIZATION.replace(", settings.yaml", ""))

    _push(url, tmp_path, change)
    code, report = _sync(url, state)
    assert report["removed"] == ["configmap/settings"]
    assert list(_by_object(report)) == ["Deployment/default/web"]
    assert _by_object(report)["Deployment/default/web"]["action"] == "applied"
    assert _image(kube) == "registry.example.test/team/web:1.1.0"
    assert ("configmaps", "default", "settings") not in kube.objects()

    # 4. a hand edit in the cluster is drift: reported with --no-self-heal, undone without
    kube.patch("deployments", "default", "web", {"spec": {"replicas": 5}})
    code, report = _sync(url, state, "--no-self-heal")
    web = _by_object(report)["Deployment/default/web"]
    assert (web["sync"], web["drift"], web["action"]) == (
        "OutOfSync", "changed in the cluster", "none")
    assert kube.objects()[("deployments", "default", "web")]["spec"]["replicas"] == 5
    code, report = _sync(url, state)
    assert _by_object(report)["Deployment/default/web"]["action"] == "applied"
    assert kube.objects()[("deployments", "default", "web")]["spec"]["replicas"] == 1


def test_bad_manifests_and_an_unreachable_api_are_reported(
    kube: devservers.KubeEmulator, config_repo: Callable[[dict[str, str]], str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = config_repo({"k8s/app.yaml": "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n"})

    code, report = _sync(url, tmp_path / "s1")

    assert code == 1
    assert report["errors"] == ["==> File k8s/app.yaml ==> At document 1: needs apiVersion, "
                                "kind and metadata.name"]
    assert kube.objects() == {}

    good = config_repo({"k8s/app.yaml": SETTINGS})
    kube.stop()
    code, report = _sync(good, tmp_path / "s2")

    assert code == 1
    assert report["errors"][0].startswith("kubectl: comparing with the cluster: ")
    assert "emulator-token" not in json.dumps(report)
