"""The writer inside a real cycle (real registry, real git server) and as `set-image`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import devservers
import testing
from image_bot import cli
from image_bot.update import yamlgraph

pytestmark = pytest.mark.e2e

VALUES = """\
# shared values: two images, one policy
web:
  image:
    repository: {host}/team/{image}
    tag: 1.0.0   # bumped by the bot
    digest: ""
  replicas: 2
proxy:
  image:
    repository: {host}/team/proxy
    tag: 1.0.0
pinned:
  version: 1.0.0 # {{"$imagepolicy": "{name}:tag"}}
"""

DEPLOYMENT = """\
spec:
  template:
    spec:
      containers:
        - name: web
          image: '{host}/team/{image}:1.0.0'  # single quotes stay
"""

def _policy(image: str) -> str:
    return testing.policy("web", image, pin_digest=True,
                          publish={"mode": "commit", "branch": "main"})


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_pin_digest_writes_the_registry_digest_into_every_kind_of_reference(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    host = registry.host
    devservers.push_image(registry.url, "team/pinned-web", "1.0.0")
    digest = devservers.push_image(registry.url, "team/pinned-web", "1.1.0")
    values = VALUES.format(host=host, image="pinned-web", name="web")
    deployment = DEPLOYMENT.format(host=host, image="pinned-web")
    url = config_repo({
        "deploy/values.yaml": values, "deploy/app.yaml": deployment,
        "policies/web.yaml": _policy(f"{host}/team/pinned-web"),
    })
    config = bot_config(url, registries=[{"host": host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 0, result.output
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    assert (clone / "deploy/values.yaml").read_text() == values.replace(
        "tag: 1.0.0   #", "tag: 1.1.0   #").replace('digest: ""', f'digest: "{digest}"').replace(
        "version: 1.0.0 #", "version: 1.1.0 #")
    assert (clone / "deploy/app.yaml").read_text() == deployment.replace(
        "pinned-web:1.0.0'", f"pinned-web:1.1.0@{digest}'")


def test_set_image_rewrites_files_and_folders_and_reports_json(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    (tmp_path / "deploy").mkdir()
    values = VALUES.format(host="ghcr.io", image="web", name="web")
    deployment = DEPLOYMENT.format(host="ghcr.io", image="web")
    (tmp_path / "deploy" / "values.yaml").write_text(values)
    (tmp_path / "app.yaml").write_text(deployment)
    (tmp_path / "deploy" / "template.yaml").write_text("image: ghcr.io/team/web:{{ .tag }}\n"
                                                       "a: [\n")
    monkeypatch.chdir(tmp_path)

    dry = _invoke("set-image", "deploy", "app.yaml", "ghcr.io/team/web=1.2.0", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert "would update app.yaml\nwould update deploy/values.yaml\n" in dry.output
    assert "-          image: 'ghcr.io/team/web:1.0.0'  # single quotes stay\n" in dry.output
    assert "+          image: 'ghcr.io/team/web:1.2.0'  # single quotes stay\n" in dry.output
    assert (tmp_path / "app.yaml").read_text() == deployment

    done = _invoke("set-image", "deploy", "app.yaml", "ghcr.io/team/web=1.2.0", "--json")

    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["files"] == ["app.yaml", "deploy/values.yaml"]
    assert [(c["file"], c["line"], c["old"], c["new"]) for c in report["changes"]] == [
        ("app.yaml", 6, "ghcr.io/team/web:1.0.0", "ghcr.io/team/web:1.2.0"),
        ("deploy/values.yaml", 5, "1.0.0", "1.2.0")]
    assert [s["file"] for s in report["skipped"]] == ["deploy/template.yaml"]
    assert report["refused"] == []
    assert (tmp_path / "deploy" / "values.yaml").read_text() == values.replace(
        "tag: 1.0.0   #", "tag: 1.2.0   #")

    again = _invoke("set-image", "deploy", "app.yaml", "ghcr.io/team/web=1.2.0")
    assert again.exit_code == 0
    assert "updated" not in again.output


@pytest.mark.parametrize(("argument", "expected"), [
    ("ghcr.io/team/web=ghcr.io/team/web:1.3.0@sha256:" + "a" * 64,
     "image: 'ghcr.io/team/web:1.3.0@sha256:" + "a" * 64 + "'"),
    ("ghcr.io/team/web=ghcr.io/team/web@sha256:" + "b" * 64,
     "image: 'ghcr.io/team/web@sha256:" + "b" * 64 + "'"),
    ("ghcr.io/team/web=ghcr.io/mirror/web:2.0.0", "image: 'ghcr.io/mirror/web:2.0.0'"),
])
def test_set_image_reference_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   argument: str, expected: str) -> None:
    (tmp_path / "app.yaml").write_text(DEPLOYMENT.format(host="ghcr.io", image="web"))
    monkeypatch.chdir(tmp_path)

    result = _invoke("set-image", "app.yaml", argument)

    assert result.exit_code == 0, result.output
    assert (tmp_path / "app.yaml").read_text().splitlines()[-1] == (
        f"          {expected}  # single quotes stay")


def test_set_image_refusal_and_bad_arguments(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    text = "image:\n  repository: ghcr.io/team/web\n  tag: 1.0.0\n"
    (tmp_path / "v.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)

    refused = CliRunner().invoke(cli.main, ["set-image", "v.yaml",
                                            f"ghcr.io/team/web=1.1.0@sha256:{'c' * 64}"])

    assert refused.exit_code == 1
    assert "error: v.yaml: line 2: cannot pin a digest: this helm reference" in refused.output
    assert (tmp_path / "v.yaml").read_text() == text
    for args, message in [
        (["v.yaml"], "give at least one PATH and one IMAGE=REF"),
        (["v.yaml", "ghcr.io/team/web:1=2"], "name the image without a tag or digest"),
        (["v.yaml", "ghcr.io/team/web=bad tag"], "is not a valid tag"),
        (["missing.yaml", "ghcr.io/team/web=1"], "'missing.yaml': no such file or folder"),
        (["v.yaml", "ghcr.io/team/web:1.2.0"],
         "'ghcr.io/team/web:1.2.0': no such file or folder; to set an image, write IMAGE=REF, "
         "e.g. ghcr.io/team/web=1.2.0"),
    ]:
        bad = CliRunner().invoke(cli.main, ["set-image", *args])
        assert bad.exit_code == 2, args
        assert message in bad.output, bad.output


def test_pin_digest_leaves_a_current_tag_the_registry_no_longer_has(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path],
) -> None:
    host = registry.host
    devservers.push_image(registry.url, "team/gone-web", "1.0.0")
    deployment = DEPLOYMENT.format(host=host, image="gone-web").replace("1.0.0", "1.5.0")
    url = config_repo({
        "deploy/app.yaml": deployment,
        "policies/web.yaml": _policy(f"{host}/team/gone-web"),
    })
    config = bot_config(url, registries=[{"host": host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config), "--json")

    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.output)["repositories"][0]["outcomes"]
    assert (outcome["status"], outcome["changes"]) == ("current", [])
    assert "no downgrade" in outcome["message"]


def test_a_cycle_parses_each_file_once_and_each_edited_text_once(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scan's parse is shared by every policy, the rollback check and the writer; the
    edited text is re-read once to verify it (not once for a trial and again for real)."""
    host = registry.host
    devservers.push_image(registry.url, "team/once-web", "1.0.0")
    devservers.push_image(registry.url, "team/once-web", "1.1.0")
    url = config_repo({
        "deploy/values.yaml": VALUES.format(host=host, image="once-web", name="web"),
        "deploy/app.yaml": DEPLOYMENT.format(host=host, image="once-web"),
        "policies/web.yaml": _policy(f"{host}/team/once-web"),
    })
    config = bot_config(url, registries=[{"host": host, "insecure": True}])
    composed = testing.recorded(monkeypatch, yamlgraph, "compose_all")
    loaded = testing.recorded(monkeypatch, yamlgraph, "load_all")
    yamlgraph.trees.cache_clear()

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 0, result.output
    assert len(composed) == len(set(composed)) == 2, "each file's text composed once"
    assert len(loaded) == len(set(loaded)) == 2, "each edited text re-read once"
    assert not set(loaded) & set(composed)


def test_a_digest_pinned_reference_stays_pinned_without_pin_digest(
    registry: devservers.Registry, config_repo: Callable[[dict[str, str]], str],
    bot_config: Callable[..., Path], tmp_path: Path,
) -> None:
    host = registry.host
    old = devservers.push_image(registry.url, "team/kept-pin", "1.0.0")
    new = devservers.push_image(registry.url, "team/kept-pin", "1.2.1")
    deployment = DEPLOYMENT.format(host=host, image="kept-pin").replace(
        "kept-pin:1.0.0'", f"kept-pin:1.0.0@{old}'")
    values = (f"image:\n  repository: {host}/team/kept-pin\n  tag: 1.0.0\n"
              f"  digest: \"{old}\"\n")
    url = config_repo({
        "deploy/app.yaml": deployment, "deploy/values.yaml": values,
        "policies/web.yaml": testing.policy("web", f"{host}/team/kept-pin",
                                            publish={"mode": "commit", "branch": "main"}),
    })
    config = bot_config(url, registries=[{"host": host, "insecure": True}])

    result = _invoke("run", "--once", "--config", str(config))

    assert result.exit_code == 0, result.output
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    assert (clone / "deploy/app.yaml").read_text() == deployment.replace(
        f"kept-pin:1.0.0@{old}'", f"kept-pin:1.2.1@{new}'")
    assert (clone / "deploy/values.yaml").read_text() == values.replace(
        "tag: 1.0.0", "tag: 1.2.1").replace(old, new)


def test_set_image_that_matches_nothing_fails_unless_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.yaml").write_text(DEPLOYMENT.format(host="ghcr.io", image="web"))
    monkeypatch.chdir(tmp_path)

    typo = CliRunner().invoke(cli.main, ["set-image", "app.yaml", "ghcr.io/team/wbe=1.2.0"])
    allowed = CliRunner().invoke(cli.main, ["set-image", "app.yaml", "ghcr.io/team/wbe=1.2.0",
                                            "--allow-none", "--json"])
    current = CliRunner().invoke(cli.main, ["set-image", "app.yaml", "ghcr.io/team/web=1.0.0"])

    assert typo.exit_code == 1, typo.output
    assert ("error: ghcr.io/team/wbe=1.2.0: no reference to ghcr.io/team/wbe under the given "
            "paths") in typo.output
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["unmatched"] == ["ghcr.io/team/wbe=1.2.0"]
    assert current.exit_code == 0, current.output  # already at REF: matched, nothing to do
