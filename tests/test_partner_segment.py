"""The segment profile against a reconstruction of Segment's tracking API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partners.fixtures import Receiver, TwoSyncs
from tests.partners.segment import BATCH_LIMIT, Segment

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}


def _check(cli: RunCli, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli(
        "check", "--destination", "segment", "--url", url, "--batch-size", "5",
        "--output", "json", *args, env=ENV,
    )  # fmt: skip
    return result.exit_code, json.loads(result.stdout)


def _failed(data: dict[str, Any]) -> set[str]:
    return {c["name"] for c in data["cases"] if c["result"] == "fail"}


def test_check_passes(cli: RunCli, receiver: Receiver) -> None:
    segment = Segment(PARTNER_KEY)
    server = receiver(segment.app)
    code, data = _check(cli, server.url)
    assert code == 0, data
    names = {c["name"] for c in data["cases"]}
    assert {"identify true accepted", "identify rejects a body without userId"} <= names
    trait = f"[Amplitude] cohortctl-check ({data['run_id']})"
    assert segment.members(trait) == set()
    assert any(trait in held for held in segment.traits.values())


def test_sync_20000_users_then_a_delta_ends_exact_under_500_kb(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    segment = Segment(PARTNER_KEY)
    server = receiver(segment.app)
    pad = "x" * 400  # 1000 identify events of long ids would be over 500 KB
    args = ("--destination", "segment", "--url", server.url)
    syncs = TwoSyncs(cli, tmp_path, args, ENV, suffix=f"-{pad}")
    report = syncs.sync(syncs.first)
    trait = "[Amplitude] Power users (c1)"
    assert segment.members(trait) == set(syncs.first)
    assert 0 < segment.largest_batch <= BATCH_LIMIT
    assert report["delivery"]["requests"] > 20  # split to stay under max_body_bytes
    syncs.sync(syncs.second)
    assert segment.members(trait) == set(syncs.second)


def test_broken_receivers_fail_the_right_cases(cli: RunCli, receiver: Receiver) -> None:
    any_key = receiver(Segment(PARTNER_KEY, accept_any_key=True).app)
    code, data = _check(cli, any_key.url)
    assert code == 1 and _failed(data) == {"identify rejects a wrong api key"}
    wrong_field = receiver(Segment(PARTNER_KEY, user_field="user_id").app)
    code, data = _check(cli, wrong_field.url)
    assert code == 1
    assert {"identify true accepted", "identify-batch true accepted (5 users)"} <= _failed(data)


def test_the_amplitude_trait_key_is_not_segments(cli: RunCli, receiver: Receiver) -> None:
    server = receiver(Segment(PARTNER_KEY).app)
    result = cli(
        "mock", "identify", "--destination", "amplitude", "--url", server.url,
        "--path", "/v1/identify", "-o", "json", env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "<cohort_name> (<cohort_id>)" in json.loads(result.stdout)["results"][0]["body"]
