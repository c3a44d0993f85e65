"""Each `mock` call offers and accepts only the options it uses."""

from __future__ import annotations

import pytest

from tests.conftest import RunCli

UNUSED = [
    ("list-create", "--list-id", "42"),
    ("list-create", "--ids", "ids.csv"),
    ("list-create", "--batch-size", "10"),
    ("list-create", "--member", None),
    ("list-add", "--not-member", None),
    ("list-remove", "--list-id-path", "id"),
    ("identify", "--batch-size", "10"),
    ("identify", "--list-id", "42"),
    ("identify-batch", "--list-id", "42"),
]


@pytest.mark.parametrize(("call", "option", "value"), UNUSED)
def test_an_option_the_call_does_not_use_is_a_usage_error_naming_it(
    cli: RunCli, call: str, option: str, value: str | None
) -> None:
    args = ["mock", call, "--url", "http://127.0.0.1:9", "--dry-run", option]
    result = cli(*args, *([value] if value is not None else []))
    assert result.exit_code == 2, result
    assert f"No such option '{option}'" in result.stderr
    help_text = cli("mock", call, "--help", env={"COLUMNS": "160"}).stdout
    assert f"{option} " not in help_text and f"{option}\n" not in help_text


def test_the_options_a_call_uses_still_work(cli: RunCli) -> None:
    result = cli("mock", "list-add", "--url", "http://127.0.0.1:9", "--list-id", "42",
                 "--id", "u1", "--batch-size", "5", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result
    result = cli("mock", "identify", "--url", "http://127.0.0.1:9", "--not-member",
                 "--id", "u1", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result
