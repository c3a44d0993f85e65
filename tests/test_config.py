from __future__ import annotations

import json
from pathlib import Path

import pytest

from cohortctl.config import Config, ensure_safe_url, is_loopback_host
from cohortctl.errors import ConfigError
from tests.credentials import API_KEY, SECRET_KEY


def write_config(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_precedence_flag_env_profile_default(isolated_env: Path) -> None:
    write_config(
        isolated_env,
        "default_profile: staging\nprofiles:\n  staging:\n    region: eu\n    app_id: 42\n",
    )
    cfg = Config.load(env={"COHORTCTL_CONFIG": str(isolated_env), "AMPLITUDE_APP_ID": "7"})
    assert cfg.resolve("app_id").value == "7"
    assert cfg.resolve("app_id").source == "env AMPLITUDE_APP_ID"
    assert cfg.resolve("app_id", 9).source == "flag"
    assert cfg.resolve("region").value == "eu"
    assert "profile 'staging'" in cfg.resolve("region").source
    assert cfg.resolve("owner").source == "default"


def test_unknown_profile_and_unknown_key(isolated_env: Path) -> None:
    write_config(isolated_env, "profiles:\n  a:\n    api_kee: x\n")
    env = {"COHORTCTL_CONFIG": str(isolated_env)}
    with pytest.raises(ConfigError, match="not found"):
        Config.load("b", env=env)
    with pytest.raises(ConfigError, match="unknown keys: api_kee"):
        Config.load("a", env=env)


def test_bad_yaml_names_file_and_line(isolated_env: Path) -> None:
    write_config(isolated_env, "profiles:\n  a: [\n")
    with pytest.raises(ConfigError, match=r"cohortctl-config.yaml:\d+: invalid YAML"):
        Config.load(env={"COHORTCTL_CONFIG": str(isolated_env)})


def test_insecure_http_refused_except_loopback() -> None:
    ensure_safe_url("http://127.0.0.1:8080", allow_insecure_http=False)
    ensure_safe_url("http://localhost:1", allow_insecure_http=False)
    ensure_safe_url("http://[::1]:1", allow_insecure_http=False)
    ensure_safe_url("https://amplitude.com", allow_insecure_http=False)
    ensure_safe_url("http://staging.example.com", allow_insecure_http=True)
    with pytest.raises(ConfigError, match="plain http"):
        ensure_safe_url("http://staging.example.com", allow_insecure_http=False)
    assert not is_loopback_host("10.0.0.1")


def test_config_show_redacts_and_names_sources(cli, isolated_env: Path) -> None:
    write_config(
        isolated_env, f"profiles:\n  default:\n    secret_key: {SECRET_KEY}\n    owner: me@x.io\n"
    )
    result = cli(
        "config", "show", "-o", "json", credentials=False, env={"AMPLITUDE_API_KEY": API_KEY}
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["profile"] == "default"
    assert data["settings"]["api_key"] == {
        "value": "***redacted***",
        "set": True,
        "source": "env AMPLITUDE_API_KEY",
        "env": "AMPLITUDE_API_KEY",
    }
    assert data["settings"]["secret_key"]["source"].startswith("profile 'default'")
    assert data["settings"]["owner"]["value"] == "me@x.io"
    table = cli("config", "show", credentials=False, env={"AMPLITUDE_API_KEY": API_KEY})
    assert table.exit_code == 0 and "env AMPLITUDE_API_KEY" in table.stdout


def test_config_show_unknown_profile_exits_2(cli) -> None:
    result = cli("config", "show", "--profile", "nope")
    assert result.exit_code == 2
    assert "profile 'nope' not found" in result.stderr


def test_config_with_keys_readable_by_others_warns(cli, isolated_env: Path) -> None:
    write_config(isolated_env, f"profiles:\n  default:\n    secret_key: {SECRET_KEY}\n")
    isolated_env.chmod(0o644)
    shared = cli("config", "show", credentials=False)
    assert shared.exit_code == 0
    assert f"chmod 600 {isolated_env}" in shared.stderr
    isolated_env.chmod(0o600)
    private = cli("config", "show", credentials=False)
    assert "chmod 600" not in private.stderr


def test_config_in_a_directory_the_user_cannot_enter(tmp_path: Path) -> None:
    """A config path behind a directory without permission: one line and exit 2 (real process).

    Runs the CLI as an unprivileged user (root reads everything), so it needs root and setpriv.
    """
    import os
    import shutil
    import subprocess
    import sys

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the CLI as a user without access")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "config.yaml").write_text("profiles: {}\n", encoding="utf-8")
    locked.chmod(0o700)
    tmp_path.chmod(0o755)
    script = "import sys; from cohortctl.cli import main; sys.exit(main())"
    env = {"PATH": os.environ.get("PATH", ""), "COHORTCTL_CONFIG": str(locked / "config.yaml")}
    done = subprocess.run(
        [setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups",
         sys.executable, "-c", script, "config", "show"],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )
    if "Permission denied" in done.stderr and "python" in done.stderr.split(":")[0]:
        pytest.skip("the unprivileged user cannot run this Python")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(locked / "config.yaml") in lines[0], done.stderr
