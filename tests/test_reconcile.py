"""``cohortctl.customer.reconcile`` against the embedded fake Amplitude API over loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cohortctl.customer.api import ADD, BY_ID, BY_NAME, REMOVE
from cohortctl.customer.client import AmplitudeClient, connect
from cohortctl.customer.cohorts import Members, read_members
from cohortctl.customer.reconcile import (
    APPLY,
    ReconcileEvent,
    plan_changes,
    reconcile,
)
from cohortctl.customer.uploading import UploadSpec, execute, plan_upload
from cohortctl.errors import CheckFailed, InputError, RequestFailed
from cohortctl.retry import RetryPolicy
from cohortctl.servers.amplitude.app import STORE_KEY, TRAFFIC_KEY
from cohortctl.servers.amplitude.store import CohortStore, amplitude_id_for
from cohortctl.servers.runner import BackgroundServer
from tests.credentials import API_KEY, SECRET_KEY

EXPORT_PATHS = ("/api/5/cohorts/request/", "/api/5/cohorts/request-status/")
MEMBERSHIP = "/api/3/cohorts/membership"
UPLOAD = "/api/3/cohorts/upload"
LIST = "/api/3/cohorts"


def client_for(server: BackgroundServer) -> AmplitudeClient:
    return connect(
        server.url,
        api_key=API_KEY,
        secret_key=SECRET_KEY,
        retry=RetryPolicy(retries=2, base_delay=0.0, max_delay=0.0),
        sleep=lambda seconds: None,
        poll_delay=0.0,
        poll_max_delay=0.0,
    )


@pytest.fixture
def client(amplitude_server: BackgroundServer) -> Iterator[AmplitudeClient]:
    amplitude = client_for(amplitude_server)
    yield amplitude
    amplitude.http.close()


def store(server: BackgroundServer) -> CohortStore:
    assert server.app is not None
    return server.app[STORE_KEY]


def create(client: AmplitudeClient, ids: list[str]) -> str:
    spec = UploadSpec(name="Reconciled", app_id=153957, owner="me@example.com")
    result = execute(client, plan_upload(ids, spec))
    assert result.cohort_id
    return result.cohort_id


def test_250000_ids_then_10_percent_out_and_10_percent_new(
    amplitude_server: BackgroundServer, client: AmplitudeClient
) -> None:
    first = [f"user-{n:06d}" for n in range(250_000)]
    cohort_id = create(client, first)
    assert amplitude_server.app is not None
    traffic = amplitude_server.app[TRAFFIC_KEY]
    logged_before = len(traffic.requests())

    kept = [i for n, i in enumerate(first) if n % 10 != 3]  # 10 % removed
    new = [f"new-{n:06d}" for n in range(25_000)]  # 10 % new
    wanted = kept[:100_000] + new + kept[100_000:]
    events: list[ReconcileEvent] = []
    result = reconcile(client, cohort_id, wanted, on_event=events.append)

    assert store(amplitude_server).user_ids(cohort_id) == set(wanted)
    assert len(result.to_add) == 25_000 and len(result.to_remove) == 25_000
    assert result.to_add[:2] == ["new-000000", "new-000001"]  # file order
    assert set(result.to_remove) == {i for n, i in enumerate(first) if n % 10 == 3}
    assert result.unchanged == 225_000
    assert result.ids_sent == 50_000
    assert result.replace_ids == 250_000 and result.replace_requests == 3
    assert [(r["call"], r["ids"]) for r in result.requests] == [
        ("membership ADD", 25_000),
        ("membership REMOVE", 25_000),
    ]
    assert result.size_before == result.members_exported == 250_000
    assert result.size_after == result.expected_size == 250_000
    assert result.changed is None
    assert [e.done for e in events if e.phase == APPLY] == [0, 25_000, 50_000]

    after = traffic.requests()[logged_before:]
    assert after, "reconcile sent nothing"
    # After the first upload: exports, membership changes and cohort-list reads; no upload.
    assert not [r for r in after if r.path == UPLOAD]
    assert {r.path for r in after if r.method == "POST"} == {MEMBERSHIP}
    for record in after:
        assert record.path.startswith(EXPORT_PATHS) or record.path in (MEMBERSHIP, LIST), record
        assert record.max_in_flight == 1  # one request after another
    assert all(r.status < 300 for r in after)


def test_already_equal_sends_nothing(
    amplitude_server: BackgroundServer, client: AmplitudeClient
) -> None:
    cohort_id = create(client, ["a", "b", "c"])
    result = reconcile(client, cohort_id, ["c", "b", "a"])
    assert result.requests == [] and result.changes == 0
    assert result.size_after == 3 and result.changed is None


def test_dry_run_exports_but_changes_nothing(
    amplitude_server: BackgroundServer, client: AmplitudeClient
) -> None:
    cohort_id = create(client, ["a", "b", "c"])
    assert amplitude_server.app is not None
    traffic = amplitude_server.app[TRAFFIC_KEY]
    logged = len(traffic.requests())
    result = reconcile(client, cohort_id, ["b", "c", "d", "e"], dry_run=True)
    assert result.to_add == ["d", "e"] and result.to_remove == ["a"]
    assert result.planned_requests == 2 and result.requests == []
    assert store(amplitude_server).user_ids(cohort_id) == {"a", "b", "c"}
    methods = {(r.method, r.path.split("/")[3]) for r in traffic.requests()[logged:]}
    assert all(method == "GET" for method, _ in methods)
    summary = result.summary()
    assert summary["to_add"] == {"count": 2, "first": ["d", "e"]}
    assert summary["to_remove"]["count"] == 1 and summary["dry_run"] is True


def test_amplitude_ids_and_members_without_a_user_id(
    amplitude_server: BackgroundServer, client: AmplitudeClient
) -> None:
    cohort_id = create(client, ["alice", "bob"])
    client.membership(
        {
            "cohort_id": cohort_id,
            "memberships": [{"ids": ["77"], "id_type": BY_ID, "operation": ADD}],
        }
    )
    # User mode: the member known only by Amplitude id is not in the file: removed BY_ID.
    result = reconcile(client, cohort_id, ["bob", "carol"])
    assert result.to_remove == ["alice"] and result.to_remove_by_amplitude_id == ["77"]
    assert [r["id_type"] for r in result.requests] == [BY_NAME, BY_NAME, BY_ID]
    assert store(amplitude_server).user_ids(cohort_id) == {"bob", "carol"}
    assert store(amplitude_server).size(cohort_id) == 2

    wanted = [str(amplitude_id_for("bob")), "99"]
    by_amp = reconcile(client, cohort_id, wanted, id_type="amplitude")
    assert by_amp.to_add == ["99"] and by_amp.to_remove == [str(amplitude_id_for("carol"))]
    assert {r["id_type"] for r in by_amp.requests} == {BY_ID}
    assert store(amplitude_server).amplitude_ids(cohort_id) == set(wanted)


def test_unknown_cohort_is_a_clear_error_before_any_export(
    amplitude_server: BackgroundServer, client: AmplitudeClient
) -> None:
    with pytest.raises(CheckFailed, match="cohort 'nope123' not found") as caught:
        reconcile(client, "nope123", ["a"])
    assert "cohortctl cohorts list" in (caught.value.hint or "")
    assert amplitude_server.app is not None
    paths = {r.path for r in amplitude_server.app[TRAFFIC_KEY].requests()}
    assert paths == {LIST}


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        ([], {}, "empty file would remove every member"),
        (["a", "b", "c"], {"max_size": 2}, "at most 2 users per cohort"),
        (["a"], {"id_type": "email"}, "user or amplitude"),
    ],
)
def test_refused_before_anything_is_sent(
    amplitude_server: BackgroundServer,
    client: AmplitudeClient,
    ids: list[str],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(InputError, match=message):
        reconcile(client, "abc1234", ids, **kwargs)
    assert amplitude_server.app is not None
    assert amplitude_server.app[TRAFFIC_KEY].requests() == []


@pytest.fixture
def someone_else(amplitude_server: BackgroundServer) -> Iterator[Callable[[str], None]]:
    """``add_x(cohort_id)``: another client adds user ``x`` to the cohort, behind our back."""
    sneaky = client_for(amplitude_server)

    def add_x(cohort_id: str) -> None:
        sneaky.membership(
            {
                "cohort_id": cohort_id,
                "memberships": [{"ids": ["x"], "id_type": BY_NAME, "operation": ADD}],
            }
        )

    yield add_x
    sneaky.http.close()


def test_cohort_changed_during_the_export_sends_nothing(
    amplitude_server: BackgroundServer,
    client: AmplitudeClient,
    someone_else: Callable[[str], None],
) -> None:
    cohort_id = create(client, ["a", "b"])

    def meanwhile(event: ReconcileEvent) -> None:
        if event.phase == "exported":  # someone adds a member right after the export
            someone_else(cohort_id)

    with pytest.raises(CheckFailed, match="changed while it was exported") as caught:
        reconcile(client, cohort_id, ["a", "c"], on_event=meanwhile)
    assert "nothing was sent" in caught.value.message
    assert store(amplitude_server).user_ids(cohort_id) == {"a", "b", "x"}


def test_cohort_changed_while_changes_were_sent_is_reported(
    client: AmplitudeClient, someone_else: Callable[[str], None]
) -> None:
    cohort_id = create(client, ["a", "b"])

    def meanwhile(event: ReconcileEvent) -> None:
        if event.phase == APPLY and event.call == "membership ADD":
            someone_else(cohort_id)

    result = reconcile(client, cohort_id, ["a", "c"], on_event=meanwhile)
    assert result.changed and "changed while reconciling" in result.changed
    assert result.size_after == 3 and result.expected_size == 2


@pytest.fixture
def small_client(
    amplitude_server_factory: Callable[..., BackgroundServer],
) -> Iterator[AmplitudeClient]:
    """A client of a fake that takes at most 2 ids per request."""
    amplitude = client_for(amplitude_server_factory(max_ids_per_request=2))
    yield amplitude
    amplitude.http.close()


def create_small(client: AmplitudeClient, ids: list[str]) -> str:
    spec = UploadSpec(name="Small", app_id=1, owner="me@example.com")
    result = execute(client, plan_upload(ids, spec, chunk_size=2))
    assert result.cohort_id
    return result.cohort_id


def test_a_failure_part_way_says_how_far_it_got(small_client: AmplitudeClient) -> None:
    cohort_id = create_small(small_client, ["a", "b", "c"])
    # The ADD of 2 ids goes through; the REMOVE of 3 is refused by the fake's limit of 2.
    with pytest.raises(RequestFailed) as caught:
        reconcile(small_client, cohort_id, ["d", "e"], chunk_size=3)
    assert caught.value.status == 400
    assert "2 of 5 changes were already applied" in (caught.value.hint or "")
    assert "running the same reconcile again is safe" in (caught.value.hint or "")


def test_a_failure_at_the_first_change_has_no_partial_hint(small_client: AmplitudeClient) -> None:
    cohort_id = create_small(small_client, ["a"])
    with pytest.raises(RequestFailed) as caught:
        reconcile(small_client, cohort_id, ["a", "b", "c", "d"], chunk_size=3)
    assert "already applied" not in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("max_size", "order"),
    [
        (100, [f"{ADD} a1 a2", f"{ADD} a3 a4", f"{REMOVE} r1 r2", f"{REMOVE} r3 r4"]),
        (6, [f"{ADD} a1 a2", f"{REMOVE} r1 r2", f"{ADD} a3 a4", f"{REMOVE} r3 r4"]),
    ],
    ids=["room", "tight"],
)
def test_plan_adds_first_removes_earlier_only_to_stay_within_the_limit(
    max_size: int, order: list[str]
) -> None:
    removes = [(BY_NAME, ["r1", "r2", "r3", "r4"])]
    plan = plan_changes(4, ["a1", "a2", "a3", "a4"], removes, chunk_size=2, max_size=max_size)
    assert [" ".join([c.operation, *c.ids]) for c in plan] == order


def test_read_members_streams_quoted_newlines_and_reports_bad_exports() -> None:
    lines = ['"amplitude_id","user_id","plan"\n', '"1","a ""b""\n', 'c","pro"\n', '"2",""\n']
    members = read_members(iter(lines))
    assert isinstance(members, Members)
    assert list(members.ids) == ['a "b"\nc'] and members.without_id == ["2"]
    assert members.rows == 2
    with pytest.raises(CheckFailed, match="no 'user_id' column"):
        read_members(iter(['"amplitude_id"\n', '"1"\n']))


def test_a_failed_final_size_check_says_the_changes_were_sent(
    amplitude_server: BackgroundServer, client: AmplitudeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    cohort_id = create(client, ["a", "b"])
    calls = []
    real = client.list_cohorts

    def list_cohorts(include_sync_info: bool = False) -> list[dict[str, Any]]:
        calls.append(include_sync_info)
        if len(calls) == 3:
            raise RequestFailed("list cohorts: Amplitude answered HTTP 503", status=503)
        return real(include_sync_info)

    monkeypatch.setattr(client, "list_cohorts", list_cohorts)
    with pytest.raises(RequestFailed) as caught:
        reconcile(client, cohort_id, ["b", "c"])
    assert "all 2 changes were sent" in (caught.value.hint or "")
    assert store(amplitude_server).user_ids(cohort_id) == {"b", "c"}
