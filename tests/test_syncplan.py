from __future__ import annotations

from pathlib import Path

import pytest

from cohortctl.errors import InputError
from cohortctl.sync.plan import load_plan


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_plan_resolves_snapshots_relative_to_the_file(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """
destination: {url: "http://127.0.0.1:9", mode: property}
cohorts:
  - {name: Power Users, id: 7y6y3ij, snapshot: power.csv}
  - {name: Churn, id: 12345, snapshot: /abs/churn.csv.gz, column: user_id}
""",
        )
    )
    assert plan.destination == {"url": "http://127.0.0.1:9", "mode": "property"}
    assert [c.id for c in plan.cohorts] == ["7y6y3ij", "12345"]
    assert plan.cohorts[0].snapshot == str(tmp_path / "power.csv")
    assert plan.cohorts[1].snapshot == "/abs/churn.csv.gz"
    assert plan.cohorts[1].column == "user_id"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cohorts: []", "'cohorts' must be a non-empty list"),
        ("cohorts:\n  - {name: a, id: b}", r"cohorts\[1\]: 'snapshot' is required"),
        ("cohorts:\n  - {name: a, id: b, snapshot: s, colour: red}", "unknown keys: colour"),
        (
            "cohorts:\n  - {name: a, id: b, snapshot: s}\n  - {name: c, id: b, snapshot: t}",
            "listed twice",
        ),
        ("destination: {url: x, speed: 3}\ncohorts: []", "unknown destination keys: speed"),
        ("cohorts: [\n", r"plan.yaml:\d+: invalid YAML"),
        ("- a\n- b\n", "a plan is a mapping"),
    ],
)
def test_bad_plans_are_input_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_plan(write(tmp_path, text))


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="plan file not found"):
        load_plan(tmp_path / "nope.yaml")
