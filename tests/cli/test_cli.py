"""The CLI package: commands load lazily (what --help and validate import), errors → exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from image_bot import cli, errors, refs
from image_bot.cli import errors as cli_errors

ROOT = Path(__file__).resolve().parents[2]

# What a start-up must not pay for unless the command uses it.
NETWORK_AND_TOOLS = {"docker", "git", "github", "gitlab", "httpx", "starlette", "uvicorn",
                     "jinja2", "prometheus_client", "rich", "kubernetes", "requests"}
STAGES = {"image_bot.engine", "image_bot.registry", "image_bot.publish", "image_bot.sync",
          "image_bot.server", "image_bot.update", "image_bot.state"}

# Runs the real entry point in a fresh interpreter and reports what it imported.
_PROBE = """
import json, sys
from image_bot import cli
try:
    cli.main(sys.argv[1:], prog_name="image-bot")
except SystemExit as exc:
    code = exc.code
print()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _imported(*args: str) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60)
    output, _, last = done.stdout.rstrip("\n").rpartition("\n")
    probe = json.loads(last)
    return probe["code"], set(probe["modules"]), output + done.stderr


def _heavy(modules: set[str], forbidden: set[str]) -> list[str]:
    return sorted(m for m in modules
                  if m.split(".")[0] in forbidden or any(m == s or m.startswith(s + ".")
                                                          for s in forbidden))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["-h"]],
                         ids=["help", "version", "h"])
def test_help_and_version_import_click_and_nothing_of_the_bot(args: list[str]) -> None:
    code, modules, output = _imported(*args)
    assert code == 0, output
    assert "image-bot" in output
    assert _heavy(modules, NETWORK_AND_TOOLS | {"pydantic", "ruamel", "semver", "yaml"}) == []
    bot = sorted(m for m in modules if m.startswith("image_bot"))
    assert bot == ["image_bot", "image_bot.cli", "image_bot.cli.errors", "image_bot.cli.lazy",
                   "image_bot.errors", "image_bot.refs"]


def test_validate_imports_config_loading_and_policies_only() -> None:
    code, modules, output = _imported("validate", "policies/")
    assert code == 0, output
    count = len(list((ROOT / "policies").glob("*.yaml")))
    assert f"{count} valid policies, 0 problem(s)" in output
    assert _heavy(modules, NETWORK_AND_TOOLS | STAGES) == []
    assert {"image_bot.config.loading", "image_bot.policy.strategies"} <= modules
    # nothing logs here: neither logging nor croniter (cron schedules) is imported
    assert _heavy(modules, {"logging", "croniter"}) == []


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_cycle_imports_no_sync_agent_web_stack_or_forge_client(command: str) -> None:
    # plan and run --once (a cron job, CI) pay for the registry, Git and the writer only:
    # not the Docker SDK and Compose schema (agents), starlette (the daemon), PyGithub,
    # nor Jinja2 until a commit message is written
    code, modules, output = _imported(command, "--help")
    assert code == 0, output
    assert _heavy(modules, {"docker", "jsonschema", "starlette", "uvicorn", "github", "gitlab",
                            "jinja2", "image_bot.sync.agent", "image_bot.server"}) == []
    assert {"image_bot.engine.cycle", "httpx", "git"} <= modules


def test_a_command_loads_only_its_own_module() -> None:
    code, modules, output = _imported("set-image", "--help")
    assert code == 0, output
    commands = sorted(m for m in modules if m.startswith("image_bot.cli."))
    assert commands == ["image_bot.cli.errors", "image_bot.cli.lazy", "image_bot.cli.options",
                        "image_bot.cli.render", "image_bot.cli.set_image"]


def test_group_help_is_what_an_eager_group_of_the_same_commands_prints() -> None:
    root = click.Context(cli.main, info_name="image-bot")
    loaded = {name: cli.main.get_command(root, name) for name in cli.main.list_commands(root)}
    assert set(loaded) == set(cli.COMMANDS) and all(loaded.values())
    eager = click.Group("image-bot", commands=loaded, params=cli.main.params,
                        help=cli.main.help, context_settings=cli.main.context_settings)
    for width in ("60", "80", "200"):  # the summaries are cut to fit the width
        runner = CliRunner(env={"COLUMNS": width})
        lazy_help = runner.invoke(cli.main, ["--help"], prog_name="image-bot")
        eager_help = runner.invoke(eager, ["--help"], prog_name="image-bot")
        assert lazy_help.output == eager_help.output


def test_every_summary_is_its_commands_first_help_paragraph() -> None:
    root = click.Context(cli.main, info_name="image-bot")
    for name in cli.COMMANDS:
        command = cli.main.get_command(root, name)
        assert command is not None
        assert cli.main.summary(root, name, 10_000) == command.get_short_help_str(10_000), name


@pytest.mark.parametrize(("error", "code"), [
    (errors.ConfigError("==> File bot.yaml ==> At key: repositories: required"), 2),
    (refs.InvalidReference("'UPPER:1' is not a valid image reference"), 2),
    (errors.StateDirLocked("state dir /s is locked by pid 7 (daemon)"), 3),
    (errors.RegistryUnavailable("registry.example: 503"), 1),
    (errors.PublishError("push to main failed"), 1),
])
def test_errors_map_to_exit_codes_with_one_line_on_stderr(
        error: Exception, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited, cli_errors.handled():
        raise error
    assert exited.value.code == code
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_bug_is_not_turned_into_an_exit_code() -> None:
    with pytest.raises(KeyError), cli_errors.handled():
        raise KeyError("bug")


def test_a_command_error_exits_through_the_group(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text("repositories: []\n")
    result = CliRunner().invoke(cli.main, ["plan", "--config", str(tmp_path / "bot.yaml")])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: ==> File {tmp_path / 'bot.yaml'}")


def test_a_mistyped_command_is_answered_with_the_lazy_one_it_resembles() -> None:
    result = CliRunner().invoke(cli.main, ["statu"], prog_name="image-bot")
    assert result.exit_code == 2
    assert "Error: No such command 'statu'. Did you mean 'status'?" in result.stderr
