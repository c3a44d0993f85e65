"""The Amplitude client: pure body builders, error parsing, retries, export download."""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.customer.api import membership_body, parse_error_body, upload_body
from cohortctl.customer.client import AmplitudeClient, connect
from cohortctl.customer.export import download_cohort
from cohortctl.errors import CohortctlError, InputError, RequestFailed, TransportFailed
from cohortctl.retry import RetryPolicy
from cohortctl.servers.amplitude.app import TRAFFIC_KEY
from cohortctl.servers.amplitude.store import amplitude_id_for
from tests.credentials import API_KEY, SECRET_KEY

Handler = Callable[[httpx.Request], httpx.Response]
BASE = "https://amplitude.test"


def make_client(
    handler: Handler, *, retries: int = 3, sleeps: list[float] | None = None
) -> AmplitudeClient:
    record = sleeps if sleeps is not None else []
    return connect(
        BASE,
        api_key=API_KEY,
        secret_key=SECRET_KEY,
        retry=RetryPolicy(retries=retries, base_delay=1.0, max_delay=60.0),
        sleep=record.append,
        transport=httpx.MockTransport(handler),
    )


def assert_clean(error: CohortctlError) -> None:
    text = f"{error} {error.hint or ''} {getattr(error, 'body', '')}"
    assert API_KEY not in text and SECRET_KEY not in text
    assert base64.b64encode(f"{API_KEY}:{SECRET_KEY}".encode()).decode() not in text


# -- bodies -------------------------------------------------------------------------------


def test_upload_body_minimal_has_only_required_fields() -> None:
    body = upload_body(
        name="Churn",
        app_id=153957,
        id_type="BY_USER_ID",
        ids=["a", "b"],
        owner="me@x.io",
        published=True,
    )
    assert body == {
        "name": "Churn",
        "app_id": 153957,
        "id_type": "BY_USER_ID",
        "ids": ["a", "b"],
        "owner": "me@x.io",
        "published": True,
    }


def test_upload_body_optional_fields_only_when_asked() -> None:
    body = upload_body(
        name="n",
        app_id=1,
        id_type="BY_AMP_ID",
        ids=["1"],
        owner="o",
        published=False,
        existing_cohort_id="1a2bc3d",
        strict_ids=True,
        validate_only=True,
        group_type="company",
    )
    assert body["existing_cohort_id"] == "1a2bc3d"
    assert body["skip_invalid_ids"] is False
    assert body["skip_save"] is True
    assert body["cg"] == "company"
    assert body["published"] is False


@pytest.mark.parametrize("app_id", ["153957", 1.5, True, None])
def test_upload_body_app_id_must_be_int(app_id: object) -> None:
    with pytest.raises(InputError, match="app_id must be an integer"):
        upload_body(
            name="n", app_id=app_id, id_type="BY_USER_ID", ids=["a"], owner="o", published=True
        )  # type: ignore[arg-type]


def test_membership_body() -> None:
    assert membership_body("c1", ["u1"], id_type="BY_NAME", operation="ADD") == {
        "cohort_id": "c1",
        "memberships": [{"ids": ["u1"], "id_type": "BY_NAME", "operation": "ADD"}],
    }
    body = membership_body(
        "c1", ["7"], id_type="BY_ID", operation="REMOVE", strict_ids=True, group_type="org"
    )
    assert body["skip_invalid_ids"] is False and body["count_group"] == "org"
    with pytest.raises(InputError):
        membership_body("c1", ["7"], id_type="BY_USER_ID", operation="ADD")
    with pytest.raises(InputError):
        membership_body("c1", ["7"], id_type="BY_ID", operation="DELETE")


# -- errors -------------------------------------------------------------------------------


def test_parse_both_error_shapes() -> None:
    new = {"error": {"http_code": 400, "type": "invalid_request", "message": "bad", "metadata": {}}}
    old = {"error": {"message": "nope", "code": 1234, "metadata": {}}}
    assert parse_error_body(json.dumps(new)) == ("invalid_request", "bad")
    assert parse_error_body(json.dumps(old)) == ("1234", "nope")
    assert parse_error_body("<html>oops</html>") == (None, None)
    assert parse_error_body('{"error": "plain"}') == (None, "plain")


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_names_status_type_message_and_hints_env(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"http_code": status, "type": "unauthorized", "message": "Invalid API key"}
        return httpx.Response(status, json={"error": error})

    client = make_client(handler)
    with pytest.raises(RequestFailed) as caught:
        client.list_cohorts()
    error = caught.value
    assert error.status == status and error.error_type == "unauthorized"
    assert f"HTTP {status} unauthorized: Invalid API key" in error.message
    assert error.hint and "AMPLITUDE_API_KEY" in error.hint and "AMPLITUDE_SECRET_KEY" in error.hint
    assert error.exit_code == 1
    assert_clean(error)
    assert len(client.attempts) == 1


def test_basic_auth_and_json_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"cohort_id": "abc", "metadata": {"matched": 1}})

    body = upload_body(
        name="n", app_id=1, id_type="BY_USER_ID", ids=["a"], owner="o", published=True
    )
    answer = make_client(handler).upload(body)
    assert answer.cohort_id == "abc" and answer.matched == 1  # older ``cohort_id`` key
    request = seen[0]
    assert request.url == f"{BASE}/api/3/cohorts/upload"
    expected = base64.b64encode(f"{API_KEY}:{SECRET_KEY}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert json.loads(request.content) == body


# -- retries ------------------------------------------------------------------------------


def test_429_retried_honouring_retry_after_then_success() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"type": "x"}}),
            httpx.Response(503),
            httpx.Response(200, json={"cohorts": [{"id": "c1"}]}),
        ]
    )
    sleeps: list[float] = []
    client = make_client(lambda request: next(answers), sleeps=sleeps)
    assert client.list_cohorts() == [{"id": "c1"}]
    # Retry-After wins for the 429; the 503 gets the policy's second step (2 s).
    assert sleeps == [7.0, 2.0]
    assert [a.status for a in client.attempts] == [429, 503, 200]


def test_429_exhausted_reports_status_and_hint() -> None:
    sleeps: list[float] = []
    client = make_client(lambda r: httpx.Response(429), retries=2, sleeps=sleeps)
    with pytest.raises(RequestFailed, match=r"HTTP 429.*after 2 retries") as caught:
        client.list_cohorts()
    assert caught.value.hint and "5 concurrent" in caught.value.hint
    assert sleeps == [1.0, 2.0]


def test_network_error_retried_then_transport_failed() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    sleeps: list[float] = []
    client = make_client(handler, retries=3, sleeps=sleeps)
    with pytest.raises(TransportFailed) as caught:
        client.list_cohorts()
    assert caught.value.kind == "connection refused"
    assert "after 4 attempts" in caught.value.message
    assert len(calls) == 4 and sleeps == [1.0, 2.0, 4.0]
    assert_clean(caught.value)


def test_creating_upload_not_resent_after_5xx_but_replace_is() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502, text="bad gateway")

    body = upload_body(
        name="n", app_id=1, id_type="BY_USER_ID", ids=["a"], owner="o", published=True
    )
    with pytest.raises(RequestFailed) as caught:
        make_client(handler).upload(body)
    assert len(calls) == 1 and "cohorts list" in (caught.value.hint or "")
    calls.clear()
    with pytest.raises(RequestFailed):
        make_client(handler, retries=2).upload({**body, "existing_cohort_id": "c1"})
    assert len(calls) == 3


def test_creating_upload_resent_after_refused_connection() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"cohortId": "new"})

    body = upload_body(
        name="n", app_id=1, id_type="BY_USER_ID", ids=["a"], owner="o", published=True
    )
    assert make_client(handler).upload(body).cohort_id == "new"


def test_timeout_not_retried_for_creating_upload() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    body = upload_body(
        name="n", app_id=1, id_type="BY_USER_ID", ids=["a"], owner="o", published=True
    )
    client = make_client(handler)
    with pytest.raises(TransportFailed) as caught:
        client.upload(body)
    assert caught.value.kind == "timeout" and len(client.attempts) == 1


# -- export -------------------------------------------------------------------------------

# -- export download, against the embedded fake ------------------------------------------


@pytest.fixture
def exporting(amplitude_server_factory: Any) -> Callable[..., tuple[AmplitudeClient, str, Any]]:
    """``start(**fake_options)``: a client of a fake holding cohort alice, carol and an
    Amplitude-id-only member 222; returns the client, the cohort id and the server."""
    clients: list[AmplitudeClient] = []

    def start(**options: Any) -> tuple[AmplitudeClient, str, Any]:
        server = amplitude_server_factory(**options)
        client = connect(
            server.url,
            api_key=API_KEY,
            secret_key=SECRET_KEY,
            retry=RetryPolicy(retries=3, base_delay=1.0, max_delay=60.0),
            sleep=lambda seconds: None,
        )
        clients.append(client)
        body = upload_body(
            name="Seed", app_id=1, id_type="BY_USER_ID", ids=["alice", "carol"],
            owner="me@x.io", published=True,
        )  # fmt: skip
        cohort_id = client.upload(body).cohort_id
        client.membership(membership_body(cohort_id, ["222"], id_type="BY_ID", operation="ADD"))
        return client, cohort_id, server

    yield start
    for client in clients:
        client.http.close()


def test_download_polls_with_backoff_and_writes_csv(
    exporting: Callable[..., tuple[AmplitudeClient, str, Any]], tmp_path: Path
) -> None:
    client, cohort_id, _ = exporting(export_polls=4)
    sleeps: list[float] = []
    client.sleep = sleeps.append
    client.poll_max_delay = 4.0
    dest = tmp_path / "members.csv"
    result = download_cohort(client, cohort_id, dest, timeout=100)
    rows = list(csv.DictReader(dest.read_text().splitlines()))
    assert sorted(r["user_id"] for r in rows) == ["", "alice", "carol"]
    assert result.rows == 3 and result.polls == 5
    assert sleeps == [1.0, 2.0, 4.0, 4.0]  # doubling, capped
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_download_redirect_drops_authorization(
    exporting: Callable[..., tuple[AmplitudeClient, str, Any]], tmp_path: Path
) -> None:
    client, cohort_id, server = exporting(export_polls=0, export_redirect=True)
    dest = tmp_path / "ids.txt"
    result = download_cohort(client, cohort_id, dest, ids_only=True)
    assert sorted(dest.read_text().split()) == ["alice", "carol"]
    assert result.members_written == 2 and result.skipped_without_id == 1
    traffic = server.app[TRAFFIC_KEY].requests()
    signed = [r for r in traffic if r.path.startswith("/signed/")]
    assert len(signed) == 1 and not signed[0].authorization_sent
    assert all(r.authorization_sent for r in traffic if r.path.startswith("/api/"))


def test_download_amplitude_ids_only(
    exporting: Callable[..., tuple[AmplitudeClient, str, Any]], tmp_path: Path
) -> None:
    client, cohort_id, _ = exporting(export_polls=0)
    dest = tmp_path / "amp.txt"
    download_cohort(client, cohort_id, dest, ids_only=True, amplitude_ids=True)
    expected = sorted([str(amplitude_id_for("alice")), str(amplitude_id_for("carol")), "222"])
    assert sorted(dest.read_text().split()) == expected


def test_export_timeout_is_transport_failed(
    exporting: Callable[..., tuple[AmplitudeClient, str, Any]], tmp_path: Path
) -> None:
    client, cohort_id, _ = exporting(export_polls=10**6)
    now = [0.0]
    client.clock = lambda: now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    client.sleep = sleep
    with pytest.raises(TransportFailed, match="not ready") as caught:
        download_cohort(client, cohort_id, tmp_path / "x.csv", timeout=10)
    assert caught.value.kind == "timeout" and now[0] == 10
    assert not (tmp_path / "x.csv").exists()


def test_bad_cohort_id_is_input_error(tmp_path: Path) -> None:
    client = make_client(lambda r: httpx.Response(500))
    with pytest.raises(InputError):
        client.request_export("../admin")
