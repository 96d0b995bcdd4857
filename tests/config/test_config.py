"""Config loading: breadcrumb errors, broken documents isolated, our own policies/ valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from image_bot import cli
from image_bot.config import loading
from image_bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata: {name: good}
spec:
  image: ghcr.io/x/good
  select: {semver: {range: "^1"}}
"""


def test_every_shipped_policy_is_valid() -> None:
    result = CliRunner().invoke(cli.main, ["validate", str(ROOT / "policies")])
    assert result.exit_code == 0, result.output
    shipped = len(list((ROOT / "policies").glob("*.yaml")))
    assert f"{shipped} valid polic" in result.output


def test_errors_are_breadcrumbs_and_good_policies_still_load(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD + "---\n" + GOOD.replace("good", "other").replace(
        'range: "^1"', "rnge: 1"))
    (tmp_path / "b.yaml").write_text("kind: ImagePolicy\n  x: [\n")
    (tmp_path / "c.yaml").write_text(GOOD.replace("ghcr.io/x/good", "ghcr.io/x/good:1.0"))

    policy_set = loading.load_policies(tmp_path)

    assert [p.policy.name for p in policy_set.policies] == ["good"]
    assert [str(e) for e in policy_set.errors] == [
        "==> File a.yaml ==> At ImagePolicy(name='other') ==> At key: spec.select.semver.range:"
        " Field required; ==> At key: spec.select.semver.rnge: unknown key; did you mean "
        "`range`?",
        "==> File b.yaml: invalid YAML (line 2, column 4): mapping values are not allowed here",
        "==> File c.yaml ==> At ImagePolicy(name='good') ==> At key: spec.image: must name the "
        "image without a tag or digest",
    ]


def test_duplicate_names_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    errors = loading.load_policies(tmp_path).errors
    assert [str(e) for e in errors] == [
        "==> File b.yaml ==> At ImagePolicy(name='good') ==> At key: metadata.name: duplicate "
        "name, first defined in a.yaml"]


def test_bot_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text("repositories:\n  - branch: main\n")
    with pytest.raises(ConfigError) as caught:
        loading.load_bot_config(path)
    assert str(caught.value) == f"==> File {path} ==> At key: repositories[0].url: Field required"


def test_daemon_peers_are_http_urls(tmp_path: Path) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text("repositories: [{url: https://git.example.com/c.git}]\n"
                    "daemon: {peers: [http://shard-1:8080, 'ftp://shard-2']}\n")
    with pytest.raises(ConfigError) as caught:
        loading.load_bot_config(path)
    assert str(caught.value) == (
        f"==> File {path} ==> At key: daemon.peers[1]: 'ftp://shard-2': expected the http:// "
        "or https:// base URL of another image-bot daemon, e.g. http://image-bot-shard-1:8080")
    path.write_text("repositories: [{url: https://git.example.com/c.git}]\n"
                    "daemon: {peers: [http://shard-1:8080/, https://shard-2.example]}\n")
    assert loading.load_bot_config(path).daemon.peers == ["http://shard-1:8080/",
                                                          "https://shard-2.example"]


def test_relative_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text("repositories: [{url: 'file:///x'}]\nstate_dir: .image-bot\n")
    assert loading.load_bot_config(path).state_dir == tmp_path / ".image-bot"


def test_validate_command_reports_bad_range(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD.replace('"^1"', '">>1"'))
    result = CliRunner().invoke(cli.main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert ("==> File p.yaml ==> At ImagePolicy(name='good') ==> At key: "
            "spec.select.semver.range: invalid semver range '>>1'") in result.output


def test_every_problem_is_listed_with_the_nearest_known_key(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD.replace("semver:", "semvr:").replace(
        "image:", "imag:"))

    [error] = loading.load_policies(tmp_path).errors

    assert isinstance(error, loading.PolicyInvalid)
    assert (error.policy, error.file) == ("good", "p.yaml")
    assert "(and" not in str(error)
    assert "==> At key: spec.select.semvr: unknown key; did you mean `semver`?" in str(error)
    assert "==> At key: spec.imag: unknown key; did you mean `image`?" in str(error)


def test_a_missing_policy_directory_is_named_relative_to_the_checkout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        loading.load_policies(tmp_path / "policies", display_root=tmp_path)
    assert str(caught.value) == "==> Directory policies: policy directory does not exist"


def test_policy_files_read_the_same_with_libyaml_and_the_pure_parser(tmp_path: Path) -> None:
    """Policies are parsed by libyaml where installed; what it reads must be what the pure
    parser reads (and YAML libyaml refuses falls back to the pure parser)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    texts = [p.read_text() for p in sorted((ROOT / "policies").glob("*.yaml"))]
    texts += [p.read_text() for p in sorted((ROOT / "tests/data").rglob("*.yaml"))
              if "ImagePolicy" in p.read_text()]
    assert len(texts) >= 5
    for text in texts:
        pure = list(YAML(typ="safe", pure=True).load_all(text))
        try:
            fast = list(YAML(typ="safe").load_all(text))
        except YAMLError:
            continue  # refused by libyaml: the loader falls back to the pure parser
        assert fast == pure
    # a flow mapping with a registry port: libyaml refuses it, the policy still loads
    flow = GOOD.replace("spec:\n  image: ghcr.io/x/good\n  select: {semver: {range: \"^1\"}}\n",
                        "spec: {image: localhost:5000/x/good, select: {semver: {range: ^1}}}\n")
    with pytest.raises(YAMLError):
        list(YAML(typ="safe").load_all(flow))
    (tmp_path / "flow.yaml").write_text(flow)
    [loaded] = loading.load_policies(tmp_path).policies
    assert loaded.policy.spec.image == "localhost:5000/x/good"
