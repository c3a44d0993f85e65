"""Planning and running uploads of any size: chunks, limits, partial failures."""

from __future__ import annotations

import pytest

from cohortctl.customer.api import MEMBERSHIP_PATH, UPLOAD_PATH
from cohortctl.customer.client import AmplitudeClient, connect
from cohortctl.customer.uploading import (
    AMPLITUDE,
    PENDING_COHORT_ID,
    UploadSpec,
    execute,
    plan_membership,
    plan_upload,
    summarize_body,
)
from cohortctl.errors import InputError, RequestFailed
from cohortctl.retry import RetryPolicy
from cohortctl.servers.amplitude.app import STORE_KEY, TRAFFIC_KEY
from tests.credentials import API_KEY, SECRET_KEY

SPEC = UploadSpec(name="Churn", app_id=42, owner="me@x.io")


def ids(n: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_small_upload_is_one_request() -> None:
    plan = plan_upload(ids(3), SPEC)
    assert [(s.call, s.start, s.end) for s in plan.steps] == [("upload", 0, 3)]
    body = plan.body(plan.steps[0], None)
    assert body["ids"] == ["u0", "u1", "u2"] and body["id_type"] == "BY_USER_ID"


def test_large_upload_is_upload_then_adds_of_at_most_100k() -> None:
    plan = plan_upload(ids(250_000), SPEC)
    assert [(s.call, s.path, s.count) for s in plan.steps] == [
        ("upload", UPLOAD_PATH, 100_000),
        ("membership ADD", MEMBERSHIP_PATH, 100_000),
        ("membership ADD", MEMBERSHIP_PATH, 50_000),
    ]
    add = plan.body(plan.steps[2], "c1")
    assert add["cohort_id"] == "c1"
    assert add["memberships"][0]["id_type"] == "BY_NAME"
    assert add["memberships"][0]["ids"][0] == "u200000"


def test_amplitude_ids_use_by_amp_id_and_by_id() -> None:
    plan = plan_upload(ids(150_001, ""), SPEC, id_type="amplitude")
    assert plan.body(plan.steps[0], None)["id_type"] == "BY_AMP_ID"
    assert plan.body(plan.steps[1], "c")["memberships"][0]["id_type"] == "BY_ID"


def test_validate_only_sends_every_chunk_as_skip_save_upload() -> None:
    spec = UploadSpec(name="n", app_id=1, owner="o", validate_only=True)
    plan = plan_upload(ids(200_001), spec)
    assert [s.call for s in plan.steps] == ["upload"] * 3
    assert all(plan.body(s, None)["skip_save"] is True for s in plan.steps)


def test_empty_and_oversize_refused() -> None:
    with pytest.raises(InputError, match="no ids"):
        plan_upload([], SPEC)
    with pytest.raises(InputError, match=r"at most 2,000,000") as caught:
        plan_upload(ids(2_000_001), SPEC)
    assert caught.value.exit_code == 2
    plan_upload(ids(10), SPEC, max_size=10)
    with pytest.raises(InputError):
        plan_membership(ids(11), cohort_id="c", operation="add", max_size=10)


def test_dry_run_description_redacts_and_summarizes() -> None:
    plan = plan_upload(ids(100_001), SPEC)
    described = plan.describe("https://amplitude.com/")
    assert described[0]["url"] == "https://amplitude.com/api/3/cohorts/upload"
    assert described[0]["headers"]["Authorization"] == "Basic ***redacted***"
    assert described[0]["body"]["ids"] == {
        "count": 100_000,
        "first": ["u0", "u1", "u2", "u3", "u4"],
    }
    add = described[1]["body"]
    assert add["cohort_id"] == PENDING_COHORT_ID
    assert add["memberships"][0]["ids"] == {"count": 1, "first": ["u100000"]}


def test_membership_plan() -> None:
    plan = plan_membership(
        ids(100_001), cohort_id="c9", operation="remove", strict_ids=True, group_type="org"
    )
    assert [s.call for s in plan.steps] == ["membership REMOVE"] * 2
    body = plan.body(plan.steps[0], plan.cohort_id)
    assert body["cohort_id"] == "c9" and body["skip_invalid_ids"] is False
    assert body["count_group"] == "org"
    assert plan.describe("https://x")[0]["body"]["cohort_id"] == "c9"
    with pytest.raises(InputError):
        plan_membership(ids(1), cohort_id="c9", operation="delete")


def test_summarize_body_keeps_other_fields() -> None:
    body = {"name": "n", "ids": ["a", "b"], "skip_save": True}
    assert summarize_body(body, sample=1) == {
        "name": "n",
        "skip_save": True,
        "ids": {"count": 2, "first": ["a"]},
    }


# -- against the embedded fake ------------------------------------------------------------


def fake_client(server: object, **kwargs: object) -> AmplitudeClient:
    return connect(
        server.url,  # type: ignore[attr-defined]
        api_key=API_KEY,
        secret_key=SECRET_KEY,
        **{"retry": RetryPolicy(retries=3, base_delay=0.0, max_delay=0.0), **kwargs},  # type: ignore[arg-type]
    )


def test_execute_adds_up_answers_and_reports_progress(amplitude_server) -> None:
    upload_ids = [str(n) for n in range(1, 24)]
    upload_ids.insert(3, "bad")  # not an Amplitude id: skipped by the upload
    upload_ids.insert(14, "oops")  # skipped by the first membership ADD
    progress = []
    client = fake_client(amplitude_server)
    with client.http:
        plan = plan_upload(upload_ids, SPEC, chunk_size=10, id_type=AMPLITUDE)
        result = execute(client, plan, on_progress=progress.append)
    calls = [r.path for r in amplitude_server.app[TRAFFIC_KEY].requests()]
    assert calls == [UPLOAD_PATH, MEMBERSHIP_PATH, MEMBERSHIP_PATH]
    assert result.name == "Churn"
    assert result.totals == 25 and result.matched == 23 and result.size == 23
    assert result.membership_skipped_ids == 1
    assert result.invalid_ids_sample == ["bad"]
    assert [(p.done, p.ids_sent) for p in progress] == [(1, 10), (2, 20), (3, 25)]
    assert result.summary()["requests"][1] == {
        "call": "membership ADD",
        "ids": 10,
        "cohort_id": result.cohort_id,
        "skipped": 1,
    }


def test_failure_part_way_says_what_went_through(amplitude_server_factory) -> None:
    server = amplitude_server_factory(max_cohort_size=12)  # the first ADD is refused, 400
    client = fake_client(server, retry=RetryPolicy(retries=0))
    with client.http, pytest.raises(RequestFailed) as caught:
        execute(client, plan_upload(ids(15), SPEC, chunk_size=10))
    cohort_id = server.app[STORE_KEY].cohorts()[0].id
    assert "HTTP 400 invalid_request: cohort would have 15 members" in caught.value.message
    assert f"--existing-cohort-id {cohort_id}" in (caught.value.hint or "")
    assert "first 10 of 15" in (caught.value.hint or "")


def test_250k_ids_arrive_whole_via_upload_and_two_adds(amplitude_server) -> None:
    all_ids = ids(250_000)
    spec = UploadSpec(name="Big", app_id=42, owner="me@example.com")
    client = fake_client(amplitude_server)
    with client.http:
        result = execute(client, plan_upload(all_ids, spec))
    store = amplitude_server.app[STORE_KEY]
    assert store.user_ids(result.cohort_id) == set(all_ids)
    assert result.size == 250_000 and result.matched == result.totals == 250_000
    traffic = amplitude_server.app[TRAFFIC_KEY]
    assert [r.path for r in traffic.requests()] == [
        UPLOAD_PATH,
        MEMBERSHIP_PATH,
        MEMBERSHIP_PATH,
    ]
    assert traffic.max_in_flight <= 5
    assert [a.status for a in client.attempts] == [200, 200, 200]


def test_membership_remove_against_fake(amplitude_server) -> None:
    spec = UploadSpec(name="Small", app_id=42, owner="me@example.com")
    client = fake_client(amplitude_server)
    with client.http:
        uploaded = execute(client, plan_upload(ids(30), spec))
        plan = plan_membership(
            ids(12), cohort_id=uploaded.cohort_id or "", operation="remove", chunk_size=5
        )
        removed = execute(client, plan)
    assert removed.totals == 12 and removed.membership_skipped_ids == 0
    assert len(removed.requests) == 3
    store = amplitude_server.app[STORE_KEY]
    assert store.user_ids(uploaded.cohort_id) == set(ids(30)[12:])


def test_validate_only_saves_nothing_on_fake(amplitude_server) -> None:
    spec = UploadSpec(name="V", app_id=42, owner="me@example.com", validate_only=True)
    client = fake_client(amplitude_server)
    with client.http:
        result = execute(client, plan_upload(ids(25), spec, chunk_size=10))
    assert result.totals == 25 and result.matched == 25
    assert amplitude_server.app[STORE_KEY].cohorts() == []
