"""`image-bot import flux|argocd`: the examples of the Flux and Argo CD Image Updater
documentation (vendored under tests/data/importers) become valid policies; every setting that
does not carry over is printed, never dropped."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner, Result

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
