"""The Helm chart, rendered by the real helm binary: lint, and the objects of every mode.

helm comes from `make tools` (.tools/helm/helm, see the Makefile); $HELM overrides it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

import devservers
import statusworld
import testing
from image_bot import cli
from image_bot.config import loading, models
from image_bot.engine import observing, overview
from image_bot.state import State

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "image-bot"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
REPO = "https://git.example.com/acme/config.git"
BASE = ["--set", f"config.bot.repositories[0].url={REPO}"]
WORKLOADS = {"Deployment", "CronJob"}


def _helm() -> str:
    candidates = [os.environ.get("HELM"), str(ROOT / ".tools" / "helm" / "helm"),
                  shutil.which("helm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("no helm binary: run `make tools` (downloads it into .tools/helm/)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def render(*args: str) -> list[dict[str, Any]]:
    """`helm template` → the rendered objects (comments and empty documents dropped)."""
    result = _run("template", "rel", str(CHART), "--namespace", "bots", *args)
    assert result.returncode == 0, result.stderr
    docs = YAML(typ="safe", pure=True).load_all(result.stdout)
    return [doc for doc in docs if doc]


def render_error(*args: str) -> str:
    result = _run("template", "rel", str(CHART), *args)
    assert result.returncode != 0, "helm template should have failed"
    return result.stderr


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {kinds(objects)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(workload["spec"]["template"]["spec"])


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env(workload: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload)["env"]}


def bot_yaml(objects: list[dict[str, Any]], tmp_path: Path) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(one(objects, "ConfigMap", "rel-image-bot-config")["data"]["bot.yaml"])
    return path


# --- lint ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_helm_lint_strict(values: Path) -> None:
    result = _run("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_every_rendered_config_is_a_valid_bot_config(values: Path, tmp_path: Path) -> None:
    config = loading.load_bot_config(bot_yaml(render("-f", str(values)), tmp_path))
    assert config.repositories[0].url.endswith("/acme/config.git")
    assert str(config.state_dir) == "/var/lib/image-bot"  # the state volume


# --- daemon -------------------------------------------------------------------------------


def test_daemon_mode_objects(tmp_path: Path) -> None:
    objects = render(*BASE)
    assert kinds(objects) == [
        "ConfigMap/rel-image-bot-config", "Deployment/rel-image-bot",
        "PodDisruptionBudget/rel-image-bot", "Service/rel-image-bot",
        "ServiceAccount/rel-image-bot"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    bot = container(deployment)
    assert bot["args"] == ["run"]
    assert env(deployment)["IMAGE_BOT_LISTEN"] == "0.0.0.0:8080"
    assert env(deployment)["IMAGE_BOT_CONFIG"] == "/etc/image-bot/config/bot.yaml"
    assert bot["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert bot["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert bot["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert bot["image"] == "image-bot:0.1.0"
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == 30  # > daemon.grace
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert loading.load_bot_config(bot_yaml(objects, tmp_path)).repositories[0].url == REPO


def test_config_change_rolls_the_pods() -> None:
    def checksum(*extra: str) -> str:
        deployment = one(render(*BASE, *extra), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "config.bot.git.author_name=someone-else")


def test_daemon_with_ingress_service_monitor_and_network_policy() -> None:
    objects = render("-f", str(CHART / "ci" / "daemon-values.yaml"))
    rule = one(objects, "Ingress")["spec"]["rules"][0]
    assert rule["host"] == "image-bot.example.com"
    assert rule["http"]["paths"] == [{"path": "/webhook", "pathType": "Prefix", "backend": {
        "service": {"name": "rel-image-bot", "port": {"name": "http"}}}}]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0] | {} == {
        "port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    egress_ports = [p["port"] for rule in policy["egress"] for p in rule["ports"]]
    assert egress_ports == [53, 53, 443, 22]


# --- cronjob and sharding -----------------------------------------------------------------


def test_cronjob_mode_runs_once_on_a_schedule() -> None:
    objects = render(*BASE, "--set", "mode=cronjob", "--set", "cronjob.schedule=0 * * * *")
    assert kinds(objects) == ["ConfigMap/rel-image-bot-config", "CronJob/rel-image-bot",
                              "ServiceAccount/rel-image-bot"]
    cronjob = one(objects, "CronJob")
    assert cronjob["spec"]["schedule"] == "0 * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert "completionMode" not in job
    assert pod_spec(cronjob)["restartPolicy"] == "Never"
    bot = container(cronjob)
    assert bot["args"] == ["run", "--once"]
    assert "ports" not in bot and "livenessProbe" not in bot
    assert "IMAGE_BOT_LISTEN" not in env(cronjob)


def test_sharded_cronjob_is_an_indexed_job() -> None:
    objects = render(*BASE, "--set", "mode=cronjob", "--set", "shards=3")
    cronjob = one(objects, "CronJob")
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 3, 3)
    assert container(cronjob)["args"] == ["run", "--once", "--shard", "$(IMAGE_BOT_SHARD_INDEX)/3"]
    variables = env(cronjob)
    assert variables["IMAGE_BOT_SHARD_INDEX"] == {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert variables["JOB_COMPLETIONS"] == "3"
    # $(VAR) in args only expands when VAR is defined earlier in the container's env
    names = [e["name"] for e in container(cronjob)["env"]]
    assert "IMAGE_BOT_SHARD_INDEX" in names


def test_sharded_daemon_is_one_deployment_per_shard() -> None:
    objects = render(*BASE, "--set", "shards=3")
    deployments = sorted((o for o in objects if o["kind"] == "Deployment"),
                         key=lambda o: str(o["metadata"]["name"]))
    assert [d["metadata"]["name"] for d in deployments] == [
        "rel-image-bot-shard-0", "rel-image-bot-shard-1", "rel-image-bot-shard-2"]
    assert [container(d)["args"] for d in deployments] == [
        ["run", "--shard", f"{i}/3"] for i in range(3)]
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments]
    assert len({tuple(sorted(s.items())) for s in selectors}) == 3  # no two own the same pods
    service_selector = one(objects, "Service", "rel-image-bot")["spec"]["selector"]
    for index, deployment in enumerate(deployments):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service_selector.items() <= labels.items()
        # each shard also has a Service of its own, for webhooks aimed at that shard
        own = one(objects, "Service", f"rel-image-bot-shard-{index}")["spec"]["selector"]
        assert own.items() <= labels.items()
        others = [d for d in deployments if d is not deployment]
        assert not any(own.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                       for d in others)


def test_sharded_daemons_show_every_shard_on_each_page(tmp_path: Path) -> None:
    objects = render(*BASE, "--set", "shards=3", "--set", "networkPolicy.enabled=true")
    config = loading.load_bot_config(bot_yaml(objects, tmp_path))
    assert config.daemon.peers == [f"http://rel-image-bot-shard-{i}:8080" for i in range(3)]
    services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    assert {p.removeprefix("http://").removesuffix(":8080")
            for p in config.daemon.peers} <= services
    policy = one(objects, "NetworkPolicy")["spec"]
    daemons = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "image-bot",
                                               "app.kubernetes.io/instance": "rel",
                                               "app.kubernetes.io/component": "daemon"}}}
    http = [{"port": "http", "protocol": "TCP"}]
    assert {"ports": http, "to": [daemons]} in policy["egress"]
    assert {"ports": http, "from": [daemons]} in policy["ingress"]
    # peers a user lists win; one daemon lists none
    mine = render(*BASE, "--set", "shards=2", "--set",
                  "config.bot.daemon.peers[0]=http://elsewhere:8080")
    assert loading.load_bot_config(bot_yaml(mine, tmp_path)).daemon.peers == [
        "http://elsewhere:8080"]
    assert loading.load_bot_config(bot_yaml(render(*BASE), tmp_path)).daemon.peers == []
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_service_monitor_scrapes_each_pod_once() -> None:
    objects = render(*BASE, "--set", "shards=3", "--set", "metrics.serviceMonitor.enabled=true")
    selector = one(objects, "ServiceMonitor")["spec"]["selector"]
    services = [o for o in objects if o["kind"] == "Service"]
    assert len(services) == 4

    def selected(service: dict[str, Any]) -> bool:
        labels = service["metadata"]["labels"]
        return selector["matchLabels"].items() <= labels.items() and all(
            e["key"] not in labels for e in selector["matchExpressions"]
            if e["operator"] == "DoesNotExist")

    assert [s["metadata"]["name"] for s in services if selected(s)] == ["rel-image-bot"]


def test_alert_rules_are_off_by_default_and_name_metrics_the_daemon_exports(
        tmp_path: Path) -> None:
    assert "PrometheusRule" not in kinds(render(*BASE))
    assert "PrometheusRule" not in kinds(render(*BASE, "--set", "mode=cronjob", "--set",
                                                "metrics.prometheusRule.enabled=true"))
    rule = one(render("-f", str(CHART / "ci" / "daemon-values.yaml")), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [group] = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert {name: (r["expr"], r.get("for")) for name, r in alerts.items()} == {
        "ImageBotPolicyFailing": ('image_bot_policy_status{status=~"failed|unmatched"} == 1',
                                  "2h"),
        "ImageBotStageOutOfSync": ("image_bot_stage_in_sync == 0", "15m"),
        "ImageBotStageDegraded": ('image_bot_policy_status{status="degraded"} == 1', "15m"),
        "ImageBotAgentSilent": ("image_bot_agent_stale == 1", "10m"),
        "ImageBotSlowDeploy": ('image_bot_policy_deploy_seconds{phase="commit_to_deployed"} '
                               "> 1800", None)}
    assert alerts["ImageBotPolicyFailing"]["annotations"]["summary"] == (
        "image-bot policy {{ $labels.policy }} is {{ $labels.status }}")  # Prometheus's
    # every metric the rules name is one the daemon exports from a status document
    statusworld.seed(tmp_path / "state", now=time.time())
    config = models.BotConfig.model_validate({"repositories": [{"url": REPO}],
                                              "state_dir": str(tmp_path / "state")})
    metrics = observing.Metrics()
    with State.in_dir(tmp_path / "state") as state:
        metrics.watch(lambda: overview.read(state, config, now=time.time()))
        exported = metrics.exposition().decode()
    named = {m for r in group["rules"] for m in re.findall(r"image_bot_[a-z_]+", r["expr"])}
    assert named and all(f"\n{name}{{" in exported for name in named), named


# --- policies, credentials, sync agent ----------------------------------------------------


def test_policies_from_a_config_map_are_mounted_and_valid(tmp_path: Path) -> None:
    objects = render("-f", str(CHART / "ci" / "cronjob-values.yaml"))
    files = one(objects, "ConfigMap", "rel-image-bot-policies")["data"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    policy_set = loading.load_policies(tmp_path)
    assert [p.policy.name for p in policy_set.policies] == ["web"]
    assert policy_set.errors == ()
    cronjob = one(objects, "CronJob")
    mounts = {m["name"]: m["mountPath"] for m in container(cronjob)["volumeMounts"]}
    assert mounts["policies"] == "/etc/image-bot/policies"
    volumes = {v["name"]: v for v in pod_spec(cronjob)["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == "rel-image-bot-policies"
    assert "checksum/policies" in (
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"])


def test_policies_from_git_mount_nothing() -> None:
    deployment = one(render(*BASE), "Deployment")
    assert "policies" not in {m["name"] for m in container(deployment)["volumeMounts"]}


def test_credentials_only_come_from_existing_secrets() -> None:
    objects = render("-f", str(CHART / "ci" / "daemon-values.yaml"))
    deployment = one(objects, "Deployment")
    assert container(deployment)["envFrom"] == [{"secretRef": {"name": "image-bot-registry"}}]
    assert env(deployment)["GIT_TOKEN"] == {"secretKeyRef": {"name": "image-bot-git",
                                                             "key": "token"}}
    ssh = render("-f", str(CHART / "ci" / "cronjob-values.yaml"))
    cronjob = one(ssh, "CronJob")
    volumes = {v["name"]: v for v in pod_spec(cronjob)["volumes"]}
    assert volumes["ssh"]["secret"] == {"secretName": "image-bot-ssh", "defaultMode": 0o440}
    assert "UserKnownHostsFile=/etc/image-bot/ssh/known_hosts" in env(cronjob)["GIT_SSH_COMMAND"]
    for values in CI_VALUES:
        assert "Secret" not in {o["kind"] for o in render("-f", str(values))}


def test_sync_agent_gets_its_own_account_and_namespaced_role() -> None:
    objects = render("-f", str(CHART / "ci" / "sharded-values.yaml"))
    sync = one(objects, "Deployment", "rel-image-bot-sync")
    assert container(sync)["args"] == [
        "sync", "--repo", REPO, "--branch", "main", "--path", "clusters/prod",
        "--target", "kubernetes", "--interval", "1m", "--namespace", "bots",
        "--listen", "0.0.0.0:8081"]
    assert env(sync)["IMAGE_BOT_CONFIG"] == "/etc/image-bot/config/bot.yaml"
    assert container(sync)["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    service = one(objects, "Service", "rel-image-bot-sync")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= (
        sync["spec"]["template"]["metadata"]["labels"].items())
    spec = pod_spec(sync)
    assert spec["serviceAccountName"] == "rel-image-bot-sync"
    assert spec["automountServiceAccountToken"] is True
    role = one(objects, "Role", "rel-image-bot-sync")
    assert role["metadata"]["namespace"] == "bots"
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"]
               for rule in role["rules"])
    binding = one(objects, "RoleBinding", "rel-image-bot-sync")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "rel-image-bot-sync"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-image-bot-sync",
                                    "namespace": "bots"}]
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    network = one(objects, "NetworkPolicy")["spec"]
    assert 6443 in [p["port"] for rule in network["egress"] for p in rule["ports"]]
    assert network["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]


def test_sync_agent_cluster_wide() -> None:
    objects = render("-f", str(CHART / "ci" / "sharded-values.yaml"),
                     "--set", "sync.rbac.clusterWide=true")
    assert one(objects, "ClusterRole")["metadata"]["name"] == "rel-image-bot-sync"
    assert one(objects, "ClusterRoleBinding")["roleRef"]["kind"] == "ClusterRole"
    sync = one(objects, "Deployment", "rel-image-bot-sync")
    assert "--namespace" not in container(sync)["args"]  # the manifests name their own
    assert not [o for o in objects if o["kind"] in {"Role", "RoleBinding"}]


def test_the_bot_has_no_kubernetes_api_access() -> None:
    for values in CI_VALUES:
        objects = render("-f", str(values))
        account = one(objects, "ServiceAccount", "rel-image-bot")
        assert account["automountServiceAccountToken"] is False
        bindings = [o for o in objects if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}]
        bound = {s["name"] for b in bindings for s in b["subjects"]}
        assert "rel-image-bot" not in bound


# --- every mode: hardening ----------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_every_pod_is_hardened(values: Path) -> None:
    workloads = [o for o in render("-f", str(values)) if o["kind"] in WORKLOADS]
    assert workloads
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        bot = container(workload)
        assert bot["securityContext"]["readOnlyRootFilesystem"] is True
        assert bot["securityContext"]["allowPrivilegeEscalation"] is False
        assert bot["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert bot["resources"]["requests"] and bot["resources"]["limits"]["memory"]
        # a read-only root needs writable scratch space and state
        mounts = {m["mountPath"] for m in bot["volumeMounts"]}
        assert {"/tmp", "/var/lib/image-bot"} <= mounts


# --- bad values fail with a message naming the key ----------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    ([], "config.bot.repositories: name at least one config repository"),
    ([*BASE, "--set", "mode=operator"], 'mode must be one of the following: "daemon", "cronjob"'),
    ([*BASE, "--set", "shards=0"], "shards: Must be greater than or equal to 1"),
    ([*BASE, "--set", "sync.enabled=true"], "sync.repo: the config repository URL"),
    ([*BASE, "--set", "policies.source=configMap"], "policies.files: with policies.source="),
    ([*BASE, "--set", "credentials.password=hunter2"], "Additional property password"),
    ([*BASE, "--set", "shards=2", "--set", "state.existingClaim=bot-state"],
     "state.existingClaim: one claim cannot be shared by several shards"),
])
def test_bad_values_are_refused(args: list[str], message: str) -> None:
    assert message in render_error(*args)


# --- the chart's config wiring, end to end against the real registry and git server --------

@pytest.mark.e2e
def test_rendered_config_and_policy_config_map_drive_a_real_run(
        registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
        tmp_path: Path) -> None:
    """Mount the rendered ConfigMaps as the kubelet would, then `run --once` with them."""
    for tag in ("1.0.0", "1.2.0", "2.0.0"):
        devservers.push_image(registry.url, "team/web", tag)
    url = config_repo({"deploy/web.yaml": f"image: {registry.host}/team/web:1.0.0\n"})
    mounted = tmp_path / "etc-image-bot"
    policy = testing.policy("web", f"{registry.host}/team/web", paths=None)
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({
        "mode": "cronjob",
        "config": {"bot": {
            "repositories": [{"url": url, "policies": str(mounted / "policies")}],
            "registries": [{"host": registry.host, "insecure": True}],
            "state_dir": str(tmp_path / "state")}},
        "policies": {"source": "configMap",
                     "files": {"web.yaml": policy}},
    }))
    objects = render("-f", str(values))
    for volume in pod_spec(one(objects, "CronJob"))["volumes"]:
        if "configMap" in volume:
            folder = mounted / volume["name"]
            folder.mkdir(parents=True)
            for key, text in one(objects, "ConfigMap", volume["configMap"]["name"])[
                    "data"].items():
                (folder / key).write_text(text)

    result = CliRunner().invoke(cli.main, ["run", "--once", "--config",
                                           str(mounted / "config" / "bot.yaml")])

    assert result.exit_code == 0, result.output
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    assert (clone / "deploy/web.yaml").read_text() == f"image: {registry.host}/team/web:1.2.0\n"


# --- the command lines the chart renders are accepted by the real CLI ----------------------


def _expand(value: str, variables: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args."""
    return re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), value)


def parse_command_line(args: list[str], variables: dict[str, str],
                       monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Have image-bot's click CLI parse a container's args and env, without running them."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    root = click.Context(cli.main, info_name="image-bot")
    command = cli.main.get_command(root, args[0])
    assert command is not None, f"image-bot has no command {args[0]!r}"
    expanded = [_expand(a, variables) for a in args[1:]]
    with command.make_context(args[0], expanded, parent=root) as context:
        return dict(context.params)


@pytest.mark.parametrize("values", [*CI_VALUES, "shards=3"], ids=lambda v: getattr(v, "stem", v))
def test_rendered_command_lines_parse(values: Path | str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    extra = ["-f", str(values)] if isinstance(values, Path) else [*BASE, "--set", values]
    workloads = [o for o in render(*extra) if o["kind"] in WORKLOADS]
    for workload in workloads:
        bot = container(workload)
        variables = {e["name"]: e["value"] for e in bot["env"] if "value" in e}
        variables["IMAGE_BOT_SHARD_INDEX"] = "1"  # what the downward API would give pod 1
        params = parse_command_line(bot["args"], variables, monkeypatch)
        if bot["args"][0] == "run":
            assert str(params["config_path"]) == "/etc/image-bot/config/bot.yaml"
            assert params["once"] is (workload["kind"] == "CronJob")
            assert bool(params.get("shard")) is ("--shard" in bot["args"])
        else:
            assert bot["args"][0] == "sync"
            assert (params["url"], params["target"]) == (REPO, "kubernetes")
            assert params["listen"] == "0.0.0.0:8081"


@pytest.mark.e2e
def test_bot_config_from_git_is_cloned_by_the_init_container(
        config_repo: Callable[[dict[str, str]], str], tmp_path: Path) -> None:
    """Run the rendered init container's git command for real, then load what it fetched."""
    bot = "repositories:\n  - url: https://git.example.com/acme/config.git\n"
    url = config_repo({"clusters/prod/bot.yaml": bot})
    objects = render("--set", f"config.git.url={url}", "--set",
                     "config.git.path=clusters/prod/bot.yaml",
                     "--set", "credentials.envFromSecrets[0]=git-token")
    assert "ConfigMap" not in {o["kind"] for o in objects}
    deployment = one(objects, "Deployment")
    (init,) = pod_spec(deployment)["initContainers"]
    assert init["image"] == container(deployment)["image"]
    assert init["envFrom"] == [{"secretRef": {"name": "git-token"}}]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["config"] == {"name": "config", "emptyDir": {}}
    config_path = env(deployment)["IMAGE_BOT_CONFIG"]
    assert config_path == "/etc/image-bot/config/repo/clusters/prod/bot.yaml"

    mount = tmp_path / "config"  # stands in for the emptyDir at /etc/image-bot/config
    command = [a.replace("/etc/image-bot/config", str(mount)) for a in init["command"]]
    subprocess.run(command, check=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})

    fetched = Path(config_path.replace("/etc/image-bot/config", str(mount)))
    assert loading.load_bot_config(fetched).repositories[0].url.endswith("/acme/config.git")
