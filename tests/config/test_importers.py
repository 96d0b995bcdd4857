"""`image-bot import flux|argocd`: the examples of the Flux and Argo CD Image Updater
documentation (vendored under tests/data/importers) become valid policies; every setting that
does not carry over is printed, never dropped."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner, Result
from ruamel.yaml import YAML

from image_bot import cli
from image_bot.config import loading

DATA = Path(__file__).resolve().parents[1] / "data" / "importers"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _import(tool: str, *files: Path) -> Result:
    return CliRunner().invoke(cli.main, ["import", tool, *map(str, files)],
                              catch_exceptions=False)


def _loads(text: str, tmp_path: Path) -> loading.PolicySet:
    (tmp_path / "imported.yaml").write_text(text)
    return loading.load_policies(tmp_path)


def _notes(result: Result) -> list[str]:
    return [line.split(": ", 2)[2] for line in result.stderr.splitlines()
            if line.startswith("not mapped: ")]


def test_the_flux_guide_becomes_one_policy_and_names_what_goes_elsewhere(
        tmp_path: Path) -> None:
    result = _import("flux", DATA / "flux-guide.yaml")

    assert result.exit_code == 0, result.stderr
    policy_set = _loads(result.stdout, tmp_path)
    assert policy_set.errors == ()
    [loaded] = policy_set.policies
    policy = loaded.policy
    assert (policy.name, policy.metadata.namespace) == ("podinfo", "flux-system")
    assert policy.spec.image == "ghcr.io/stefanprodan/podinfo"
    assert policy.spec.paths == ["clusters/my-cluster/**"]
    assert (policy.spec.publish.mode, policy.spec.publish.branch) == ("commit", "main")
    assert result.stdout.count("range: 5.0.x") == 1
    assert _notes(result) == [
        "ImageUpdateAutomation flux-system/flux-system: spec.git.commit.messageTemplate (a Go "
        "template) is not converted; write publish.message in Jinja2 ({{ image }}, "
        "{{ new_tag }}, …)",
        "ImageUpdateAutomation flux-system/flux-system: spec.git.commit.author goes to "
        "bot.yaml: git.author_name 'fluxcdbot', git.author_email "
        "'fluxcdbot@users.noreply.github.com'",
        "ImageUpdateAutomation flux-system/flux-system: spec.interval '30m': image-bot updates "
        "at each policy's spec.interval (taken from the ImageRepository)",
        "ImageUpdateAutomation flux-system/flux-system: spec.sourceRef "
        "GitRepository/flux-system: its URL goes to repositories[].url in bot.yaml",
    ]
    assert result.stderr.splitlines()[-1] == "1 policy, 4 setting(s) not mapped"


def test_the_migration_page_example_converts_to_the_policy_it_shows(tmp_path: Path) -> None:
    page = (DOCS / "migrating-from-flux.md").read_text()
    flux = re.search(r"Flux:\n\n```yaml\n(.*?)```", page, re.S)
    assert flux is not None
    (tmp_path / "flux.yaml").write_text(flux[1])

    result = _import("flux", tmp_path / "flux.yaml")

    assert result.exit_code == 0, result.stderr
    (tmp_path / "out").mkdir()  # apart from flux.yaml, whose kind is ImagePolicy too
    [loaded] = _loads(result.stdout, tmp_path / "out").policies
    spec = loaded.policy.spec
    assert spec.filter.pattern is not None and spec.filter.extract == "$version"
    assert spec.filter.exclude == ["regex:^.*\\.sig$"]
    assert spec.paths == ["apps/**"]
    assert any("spec.secretRef not mapped; credentials: put them in registries[] of bot.yaml "
               "for ghcr.io" in note for note in _notes(result))


def test_argocd_annotations_from_the_docs_become_one_policy_per_image(tmp_path: Path) -> None:
    result = _import("argocd", DATA / "argocd-docs.yaml")

    assert result.exit_code == 0, result.stderr
    policies = {p.policy.name: p.policy.spec for p in _loads(result.stdout, tmp_path).policies}
    assert sorted(policies) == ["dex", "image", "nginx"]
    assert policies["nginx"].image == "nginx"
    assert policies["nginx"].filter.exclude == ["latest", "master"]
    assert policies["dex"].filter.pattern == r"^v2\.[0-9]+\.[0-9]+$"
    assert "newest-build" in result.stdout
    assert {p.paths[0] for p in policies.values()} == {"guestbook/**"}
    notes = _notes(result)
    assert len(notes) == 4
    assert notes[0].startswith("Application argocd/guestbook: git-branch 'main:image-updater")
    assert "use publish.mode: pull-request" in notes[0]
    assert any("image.pull-secret: credentials go to registries[] of bot.yaml for docker.io"
               in note for note in notes)


def test_objects_that_are_not_converted_are_named(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")

    result = _import("flux", tmp_path / "cm.yaml")

    assert result.exit_code == 1
    assert _notes(result) == ["ConfigMap x: not a Flux image automation object; skipped"]


def test_a_flux_push_branch_becomes_a_push_branch(tmp_path: Path) -> None:
    text = (DATA / "flux-guide.yaml").read_text().replace(
        "    push:\n      branch: main", "    push:\n      branch: image-updates")
    (tmp_path / "flux.yaml").write_text(text)
    (tmp_path / "out").mkdir()

    result = _import("flux", tmp_path / "flux.yaml")

    [loaded] = _loads(result.stdout, tmp_path / "out").policies
    publish = loaded.policy.spec.publish
    assert (publish.mode, publish.branch, publish.push_branch) == (
        "commit", "main", "image-updates")


def test_a_suspended_flux_image_repository_becomes_a_suspended_policy(tmp_path: Path) -> None:
    guide = (DATA / "flux-guide.yaml").read_text()
    frozen = tmp_path / "frozen.yaml"
    frozen.write_text(guide.replace("  interval: 5m\n", "  interval: 5m\n  suspend: true\n", 1))

    result = _import("flux", frozen)

    assert result.exit_code == 0, result.stderr
    (tmp_path / "out").mkdir()
    [loaded] = _loads(result.stdout, tmp_path / "out").policies
    assert loaded.policy.spec.suspend is True
    assert not [n for n in _notes(result) if "suspend" in n]


def _documents(text: str) -> list[object]:
    return list(YAML(typ="safe", pure=True).load_all(text))


def test_imageupdater_examples_from_the_docs_become_one_policy_per_image(
        tmp_path: Path) -> None:
    result = _import("argocd", DATA / "argocd-imageupdater-docs.yaml")

    assert result.exit_code == 0, result.stderr
    assert _loads(result.stdout, tmp_path).errors == ()

    def policy(name: str, spec: dict[str, object]) -> dict[str, object]:
        return {"apiVersion": "image-bot/v1", "kind": "ImagePolicy", "metadata": {"name": name},
                "spec": spec}

    main = {"mode": "commit", "branch": "main"}
    assert _documents(result.stdout) == [
        policy("nginx", {"image": "nginx", "select": {"semver": {"range": "1.20"}},
                         "filter": {"pattern": r"^[0-9]+\.[0-9]+$", "exclude": ["latest", "dev"]},
                         "publish": main}),
        policy("redis", {"image": "redis", "select": {"newest-build": {}}, "publish": main}),
        policy("staging-app-nginx", {"image": "nginx", "select": {"newest-build": {}},
                                     "publish": {"mode": "commit", "branch": "develop"}}),
        policy("api", {"image": "registry.com/myorg/api", "select": {"semver": {"range": "1.x"}},
                       "publish": {"mode": "pull-request", "branch": "main"}}),
    ]
    multi = "ImageUpdater argocd/multi-app-image-updater: "
    pr = "ImageUpdater argocd/my-pr-image-updater: "
    paths = ("an ImageUpdater does not say where the Applications' files are; set spec.paths "
             "of its policies (or pass the Applications alongside)")
    target = "not needed (references are edited where they are; narrow spec.paths)"
    assert _notes(result) == [
        f"{multi}spec.applicationRefs[0].namePattern 'production-app': {paths}",
        f"{multi}spec.writeBackConfig.gitConfig.writeBackTarget 'helmvalues:./values.yaml': "
        f"{target}",
        f"{multi}spec.writeBackConfig.gitConfig.repository 'git@github.com:myorg/myrepo.git': "
        f"goes to repositories[].url in bot.yaml",
        f"{multi}spec.applicationRefs[0].images[1].imageName: the constraint '6.2' only "
        f"applies to semver and digest; not mapped",
        f"{multi}spec.applicationRefs[0].images[1].commonUpdateSettings.pullSecret: "
        f"credentials go to registries[] of bot.yaml for docker.io (username_env/password_env)",
        f"{multi}spec.applicationRefs[1].namePattern 'staging-app': {paths}",
        f"{pr}spec.applicationRefs[0].namePattern 'my-app': {paths}",
        f"{pr}spec.applicationRefs[0].writeBackConfig.method 'git:secret:git-creds': Git "
        f"credentials go to the bot's environment (docs/kubernetes.md)",
        f"{pr}spec.applicationRefs[0].writeBackConfig.gitConfig.writeBackTarget "
        f"'helmvalues:/helm/values.yaml': {target}",
        f"{pr}spec.writeBackConfig.gitConfig.repository 'https://github.com/myorg/myrepo.git': "
        f"goes to repositories[].url in bot.yaml",
    ]
    assert result.stderr.splitlines()[-1] == "4 policies, 10 setting(s) not mapped"


_UPDATER = """\
apiVersion: argocd-image-updater.argoproj.io/v1alpha1
kind: ImageUpdater
metadata: {name: guestbook, namespace: argocd}
spec:
  applicationRefs:
    - namePattern: guestbook-*
      images:
        - alias: web
          imageName: ghcr.io/acme/web:~1.4
  writeBackConfig:
    method: git
    gitConfig: {branch: main}
"""


def _application(name: str, path: str, namespace: str = "argocd") -> str:
    return (f"---\napiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: "
            f"{{name: {name}, namespace: {namespace}}}\nspec:\n  source: {{path: {path}}}\n")


def test_an_imageupdater_takes_the_paths_of_the_applications_its_name_pattern_matches(
        tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text(
        _UPDATER + _application("guestbook-prod", "apps/prod/")
        + _application("guestbook-dev", "apps/dev") + _application("other", "apps/other")
        + _application("guestbook-elsewhere", "apps/elsewhere", namespace="team"))
    (tmp_path / "out").mkdir()

    result = _import("argocd", tmp_path / "in.yaml")

    assert result.exit_code == 0, result.stderr
    [loaded] = _loads(result.stdout, tmp_path / "out").policies
    assert loaded.policy.spec.paths == ["apps/dev/**", "apps/prod/**"]
    assert loaded.policy.spec.select.semver.range == "~1.4"
    assert _notes(result) == [  # the matched Applications need no annotations
        "Application argocd/other: no argocd-image-updater.argoproj.io/image-list annotation; "
        "skipped",
        "Application team/guestbook-elsewhere: no argocd-image-updater.argoproj.io/image-list "
        "annotation; skipped",
    ]


def test_imageupdater_settings_without_an_equivalent_are_named_by_their_key_path(
        tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text(_UPDATER.replace("  applicationRefs:\n", """\
  interval: 2m
  imagesVerification: {cosignKey: {secretName: cosign, key: cosign.pub}}
  commonUpdateSettings: {updateStrategy: name, forceUpdate: true, platforms: [linux/arm64]}
  applicationRefs:
    - namePattern: legacy
      useAnnotations: true
""").replace("          imageName: ghcr.io/acme/web:~1.4\n", """\
          imageName: ghcr.io/acme/web
          commonUpdateSettings: {allowTags: "^v1", cache: true}
          manifestTargets:
            helm: {name: web.image.name, tag: web.image.tag, pin: true}
            plugin: {spec: WEB_IMAGE}
      labelSelectors: {matchLabels: {team: web}}
      owner: web-team
"""))
    (tmp_path / "out").mkdir()

    result = _import("argocd", tmp_path / "in.yaml")

    assert result.exit_code == 0, result.stderr
    [loaded] = _loads(result.stdout, tmp_path / "out").policies
    spec = loaded.policy.spec
    assert spec.select.alphabetical is not None and spec.platforms == ["linux/arm64"]
    assert spec.paths == ["**"]  # the default: every file
    at, image = "spec.applicationRefs[1]", "spec.applicationRefs[1].images[0]"
    helm = ("not needed when the values use the usual keys (image.repository/tag); otherwise "
            "add a marker comment # {\"$imagepolicy\": \"web:tag\"}")
    assert [note.removeprefix("ImageUpdater argocd/guestbook: ")
            for note in _notes(result)] == [
        "spec.interval has no equivalent; not mapped",
        "spec.applicationRefs[0].useAnnotations: the settings are the matched Applications' "
        "annotations; pass the Applications to convert them",
        f"{at}.owner has no equivalent; not mapped",
        f"{at}.labelSelectors has no equivalent (a policy covers paths, not Applications); "
        f"not mapped",
        f"{at}.namePattern 'guestbook-*': an ImageUpdater does not say where the "
        f"Applications' files are; set spec.paths of its policies (or pass the Applications "
        f"alongside)",
        "spec.imagesVerification (signature verification) has no equivalent; not mapped",
        f"{image}.manifestTargets.plugin (a Config Management Plugin's environment) has no "
        f"equivalent; not mapped",
        f"{image}.manifestTargets.helm.pin has no equivalent; not mapped",
        f"{image}.commonUpdateSettings.cache has no equivalent; not mapped",
        f"{image}.commonUpdateSettings.allowTags '^v1' is not regexp: or any; not mapped",
        "spec.commonUpdateSettings.forceUpdate: not needed (image-bot reads Git); not mapped",
        f"{image}.manifestTargets.helm.name 'web.image.name': {helm}",
        f"{image}.manifestTargets.helm.tag 'web.image.tag': {helm}",
    ]


def test_the_migration_page_imageupdater_converts_to_the_policy_it_shows(tmp_path: Path) -> None:
    page = (DOCS / "migrating-from-argocd-image-updater.md").read_text()
    updater = re.search(r"`ImageUpdater` resource \(v1.x\):\n\n```yaml\n(.*?)```", page, re.S)
    shown = re.search(r"\(`policies/web.yaml`\):\n\n```yaml\n(.*?)```", page, re.S)
    assert updater is not None and shown is not None
    (tmp_path / "in.yaml").write_text(updater[1] + _application("web-prod", "apps/web"))

    result = _import("argocd", tmp_path / "in.yaml")

    assert result.exit_code == 0, result.stderr
    assert _documents(result.stdout) == _documents(shown[1])


def test_the_argocd_help_teaches_imageupdater_resources() -> None:
    result = CliRunner().invoke(cli.main, ["import", "argocd", "--help"])

    assert result.exit_code == 0
    assert "ImageUpdater resources (v1.x)" in result.output
    assert "spec.paths" in result.output


def test_an_application_ref_without_a_name_pattern_selects_nothing(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text(_UPDATER.replace("    - namePattern: guestbook-*\n",
                                                       "    - \n") + _application("a", "a"))

    result = _import("argocd", tmp_path / "in.yaml")

    assert result.exit_code == 1
    assert _notes(result) == [
        "ImageUpdater argocd/guestbook: spec.applicationRefs[0] has no namePattern; not "
        "converted",
        "Application argocd/a: no argocd-image-updater.argoproj.io/image-list annotation; "
        "skipped",
    ]
