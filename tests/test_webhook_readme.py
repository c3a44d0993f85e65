"""The README's "Cohort Webhooks" section, walked as a new user would: every command of its
``console`` blocks, as written, in one fresh shell (no cohortctl settings in the environment),
against the embedded receiver the section starts. Only the port differs (a free one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cohortctl.partner.webhooks.freemarker import WebhookTemplate

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Cohort Webhooks"
PORT = "8080"


def section_commands(readme: str) -> list[str]:
    """The shell commands of the section's ``console`` blocks, in order: ``$ `` lines with
    their ``\\`` continuations and the body of a ``<<'EOF'`` here-document."""
    start = readme.index(f"\n{SECTION}\n")
    end = readme.find("\n## ", start + len(SECTION) + 2)
    text = readme[start : end if end != -1 else None]
    commands: list[str] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        current: list[str] = []
        heredoc: str | None = None
        for raw in textwrap.dedent(block).splitlines():
            line = raw.strip()
            if heredoc is not None:
                current.append(raw)
                if line != heredoc:
                    continue
            elif not current and not line.startswith("$ "):
                continue  # output shown in the block
            else:
                current.append(line.removeprefix("$ ") if not current else line)
                if line.endswith("\\"):
                    continue
                opened = re.search(r"<<\s*'?(\w+)'?", line)
                if opened is not None:
                    heredoc = opened.group(1)
                    continue
            commands.append("\n".join(current))
            current, heredoc = [], None
    return commands


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_section_has_the_commands_of_a_whole_rehearsal() -> None:
    commands = section_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    starts = [" ".join(c.split()[:3]) for c in commands]
    for expected in (
        "cohortctl serve partner",
        "cohortctl mock webhook",
        "cohortctl mock flow",
        "cohortctl sync cohort.csv",
        "cohortctl check --mode",
        "cohortctl destination show",
    ):
        assert expected in starts, (expected, starts)
    assert any(c.rstrip().endswith("&") for c in commands)  # the receiver, in the background


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to run the README")
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README reads the state with curl")
def test_every_command_of_the_section_works_as_written(tmp_path: Path) -> None:
    commands = section_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    port = str(_free_port())
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for number, command in enumerate(commands):
        lines += [f"echo '>>> README command {number}' >&2", re.sub(rf"\b{PORT}\b", port, command)]
    script = "\n".join(lines)
    bin_dir = str(Path(sys.executable).parent)  # the cohortctl this test suite installs
    env = {
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")]),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n--- stdout ---\n{done.stdout[-4000:]}"
    assert "Traceback" not in done.stdout + done.stderr
    secret = re.search(r"export HOOK_SECRET=(\S+)", script)
    assert secret is not None
    assert secret.group(1) not in done.stdout + done.stderr
    decoder = json.JSONDecoder()
    at = done.stdout.index('{"cohort_id": "c7"')  # what curl printed (no newline after it)
    state = decoder.raw_decode(done.stdout, at)[0]
    assert state["members"] == ["user_one@example.com", "user_two@example.com"]
    assert state["properties"]["user_one@example.com"] == {"plan": "pro", "seats": "12"}
    assert (tmp_path / "webhook.xml").exists()


def test_the_sections_templates_render_as_real_freemarker() -> None:
    from cohortctl.partner.webhooks.payload import template_input
    from tests import freemarker_oracle
    from tests.test_webhook_freemarker import BODY

    reason = freemarker_oracle.missing_reason()
    if reason is not None:
        pytest.skip(f"FreeMarker oracle unavailable: {reason}")
    commands = section_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    templates = [
        c.split("\n", 1)[1].rsplit("\n", 1)[0] for c in commands if re.match(r"cat > \S+\.ftl", c)
    ]
    assert templates
    data = template_input(BODY)
    expected = freemarker_oracle.render_all([(t, data) for t in templates])
    for template, oracle in zip(templates, expected, strict=True):
        text, body = WebhookTemplate.parse(template, "README").render(data)
        assert oracle == {"ok": True, "output": text}
        assert [u["user_id"] for u in body["users"]] == [u["user_id"] for u in BODY["users"]]
