"""``benchmarks/suite_loop.py``: N runs of pytest in a row, stopping at the first failing run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import suite_loop

BROKEN = "def test_fine():\n    pass\n\n\ndef test_broken():\n    assert 1 == 2, 'broken'\n"
SKIPPING = (
    "import pytest\n\n\ndef test_fine():\n    pass\n\n\n"
    "@pytest.mark.skip(reason='not here')\ndef test_skipped():\n    pass\n"
)


def sample_tests(tmp_path: Path, source: str) -> str:
    """``source`` as ``test_sample.py`` in a rootdir of its own (an ini file beside it, whatever
    /tmp holds); its path."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    path = tmp_path / "test_sample.py"
    path.write_text(source, encoding="utf-8")
    return str(path)


def test_stops_at_the_first_failing_run_and_names_the_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert suite_loop.main(["--runs", "3", sample_tests(tmp_path, BROKEN)]) == 1
    out, err = capsys.readouterr()
    assert "run 1/3: exit 1, 2 tests, 1 failed" in err
    assert "run 2/3" not in err  # it stopped
    assert "run 1 FAILED test_sample::test_broken: AssertionError: broken" in err
    assert "0 of 1 runs passed (stopped after run 1); 2 tests" in out
    assert "first failure: run 1: test_sample::test_broken" in out


def test_runs_every_time_and_tallies_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = sample_tests(tmp_path, SKIPPING)
    assert suite_loop.main(["--runs", "2", "--json", tests, "-k", "fine or skipped"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs_done"] == summary["runs_ok"] == 2
    assert summary["first_failure"] is None and summary["failing_tests"] == {}
    assert summary["skipped_tests"] == {"test_sample::test_skipped": "not here"}
