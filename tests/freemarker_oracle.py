"""Real FreeMarker 2.3 (Debian's libfreemarker-java) as the oracle for the webhook renderer.

:func:`render_all` renders many (template, input) cases in one JVM run of
``tests/oracle/FreemarkerOracle.java`` (Java 11+ single-file source launch).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).parent / "oracle" / "FreemarkerOracle.java"
JARS = ("/usr/share/java/freemarker.jar", "/usr/share/java/freemarker-2.3.jar")


def missing_reason() -> str | None:
    """Why the oracle cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "no java on PATH (apt-get install default-jre-headless libfreemarker-java)"
    if _jar() is None:
        return "no FreeMarker jar in /usr/share/java (apt-get install libfreemarker-java)"
    return None


def _jar() -> str | None:
    return next((jar for jar in JARS if os.path.exists(jar)), None)


def render_all(cases: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """FreeMarker's result for each (template, input): {"ok", "output"} or {"ok", "error"}."""
    payload = [{"template": template, "input": data} for template, data in cases]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(payload), encoding="utf-8")
        done = subprocess.run(
            ["java", "-cp", str(_jar()), str(HARNESS), str(path)],
            capture_output=True,
            timeout=300,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"FreeMarker oracle failed: {done.stderr.decode(errors='replace')}")
    results: list[dict[str, Any]] = json.loads(done.stdout.decode("utf-8"))
    return results
