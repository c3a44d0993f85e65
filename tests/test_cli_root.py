"""The root command: lazy loading, start-up imports, completion, and a reader closing stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import typer.main

from cohortctl.cli import COMMANDS, app, load_command
from tests.conftest import RunCli

HEAVY = ("aiohttp", "httpx", "rich", "cohortctl.servers", "uvloop", "yaml")


def _modules_loaded_by(*args: str) -> set[str]:
    """Run ``cohortctl ARGS`` in a fresh interpreter; the top-level modules it imported."""
    code = (
        "import sys\n"
        f"sys.argv = ['cohortctl', *{list(args)!r}]\n"
        "from cohortctl.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stderr.split("\n"))


def test_help_and_version_import_no_http_stack_server_or_rich() -> None:
    for args in (("--help",), ("--version",), ()):
        loaded = _modules_loaded_by(*args)
        heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
        assert not heavy, f"cohortctl {' '.join(args)} imported {heavy}"
        assert not any(m.startswith("cohortctl.cli.") for m in loaded), sorted(loaded)


def test_running_one_command_loads_only_that_command() -> None:
    loaded = _modules_loaded_by("wait", "--help")
    assert "cohortctl.cli.wait" in loaded
    assert "cohortctl.cli.mock" not in loaded and "cohortctl.cli.sync" not in loaded


def test_root_help_lists_every_command_with_its_registered_help(cli: RunCli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name, entry in COMMANDS.items():
        assert f"{name}  " in result.stdout and entry.short_help in result.stdout


def test_every_registered_target_loads_and_has_help() -> None:
    for name in COMMANDS:
        command = load_command(name)
        assert command.name == name
        assert command.help, name


def test_a_command_registered_with_typer_still_works() -> None:
    # A neighbour may still add a group the old way: the root lists and finds it too.
    extra = typer.Typer()

    @extra.command("hello")
    def hello() -> None:
        """Say hello."""

    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    root.add_command(typer.main.get_command(extra), "extra")
    ctx = click.Context(root)
    assert "extra" in root.list_commands(ctx) and root.get_command(ctx, "extra") is not None


def test_did_you_mean_still_works(cli: RunCli) -> None:
    result = cli("mokc")
    assert result.exit_code == 2
    assert "mock" in result.stderr


def test_version(cli: RunCli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("cohortctl ")


def test_completion_is_offered_and_completes_lazily_loaded_commands() -> None:
    env = {**os.environ, "_COHORTCTL_COMPLETE": "complete_bash", "COMP_CWORD": "2"}
    env["COMP_WORDS"] = "cohortctl mock list-"
    done = subprocess.run(
        [sys.executable, "-c", "from cohortctl.cli import main; main()"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["list-create", "list-add", "list-remove"]
    # The shell is named, not detected: detection walks up to a parent shell, and a run
    # started without one (a CI runner, a detached loop) would fail for nothing.
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = subprocess.run(
        [sys.executable, "-m", "cohortctl", "--show-completion", "bash"],
        capture_output=True, text=True, timeout=60, env=named,
    )  # fmt: skip
    assert script.returncode == 0 and "_cohortctl_completion" in script.stdout


def test_an_undetectable_shell_is_one_line_not_a_traceback() -> None:
    code = (
        "import shellingham, sys\n"
        "def fail(*args, **kwargs):\n"
        "    raise shellingham.ShellDetectionFailure()\n"
        "shellingham.detect_shell = fail\n"
        "sys.argv = ['cohortctl', '--show-completion']\n"
        "from cohortctl.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot tell which shell")
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_a_reader_closing_stdout_ends_quietly_with_exit_0(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    # 2,000 requests shown are about 600 kB: ten times a pipe's buffer, so writes do fail.
    ids.write_text("".join(f"user-{n}\n" for n in range(2_000)), encoding="utf-8")
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cohortctl", "mock", "list-add", "--url", "http://127.0.0.1:9",
         "--list-id", "1", "--ids", str(ids), "--batch-size", "1", "--dry-run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, stderr
    assert first
    assert stderr == "", stderr
