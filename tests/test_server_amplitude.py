"""The fake Amplitude cohort API, driven over real HTTP like a client would."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.servers.amplitude.app import STORE_KEY, TRAFFIC_KEY
from cohortctl.servers.amplitude.store import CohortStore, amplitude_id_for
from cohortctl.servers.amplitude.traffic import RequestLog
from cohortctl.servers.runner import BackgroundServer
from tests.credentials import API_KEY, SECRET_KEY
from tests.servers_fixtures import Gate, client_for

UPLOAD = "/api/3/cohorts/upload"
MEMBERSHIP = "/api/3/cohorts/membership"
COHORTS = "/api/3/cohorts"

SEED_000_COHORT_FIELDS = {
    "appId",
    "archived",
    "definition",
    "description",
    "finished",
    "id",
    "name",
    "owners",
    "published",
    "size",
    "type",
    "lastMod",
    "createdAt",
    "lastComputed",
    "hidden",
    "metadata",
    "view_count",
    "popularity",
    "last_viewed",
    "chart_id",
    "edit_id",
    "is_predictive",
    "is_official_content",
    "location_id",
    "shortcut_ids",
}


def upload_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Test Cohort",
        "app_id": 153957,
        "id_type": "BY_USER_ID",
        "ids": ["alice", "bob"],
        "owner": "datamonster@amplitude.com",
        "published": True,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _MISSING}


_MISSING = object()


def store_of(server: BackgroundServer) -> CohortStore:
    assert server.app is not None
    return server.app[STORE_KEY]


def traffic_of(server: BackgroundServer) -> RequestLog:
    assert server.app is not None
    return server.app[TRAFFIC_KEY]


@pytest.fixture
def start(amplitude_server_factory: Any) -> Callable[..., BackgroundServer]:
    return amplitude_server_factory  # type: ignore[no-any-return]


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"http_code", "type", "message", "metadata"}
    assert error["http_code"] == status
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    assert SECRET_KEY not in response.text
    return error  # type: ignore[no-any-return]


def upload(api: httpx.Client, **overrides: Any) -> str:
    response = api.post(UPLOAD, json=upload_body(**overrides))
    assert response.status_code == 200, response.text
    return response.json()["cohortId"]  # type: ignore[no-any-return]


# -- auth ---------------------------------------------------------------------------------


def basic(value: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value).decode()}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer " + SECRET_KEY}, 401),
        ({"Authorization": "Basic not-base64!!"}, 401),
        (basic(b"wrong-key:" + SECRET_KEY.encode()), 401),
        (basic(API_KEY.encode() + b":wrong-secret"), 401),
        (basic(b"wrong-key:"), 401),
        (basic(API_KEY.encode() + b":"), 403),
        (basic(API_KEY.encode()), 403),
    ],
)
def test_auth_is_required_on_every_api_route(
    amplitude_server: BackgroundServer, headers: dict[str, str], status: int
) -> None:
    with httpx.Client(base_url=amplitude_server.url) as client:
        for method, path in [
            ("GET", COHORTS),
            ("POST", UPLOAD),
            ("POST", MEMBERSHIP),
            ("GET", "/api/5/cohorts/request/abc1234"),
            ("GET", "/api/5/cohorts/request-status/r1"),
            ("GET", "/api/5/cohorts/request/r1/file"),
        ]:
            response = client.request(method, path, headers=headers, json=upload_body())
            assert_error(response, status)
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert store_of(amplitude_server).cohorts() == []


def test_right_credentials_pass(api: httpx.Client) -> None:
    assert api.get(COHORTS).json() == {"cohorts": []}


# -- A1 upload ----------------------------------------------------------------------------


def test_upload_answers_like_seed_000(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    response = api.post(UPLOAD, json=upload_body(ids=["alice", "bob", "alice"]))
    assert response.status_code == 200
    body = response.json()
    cohort_id = body["cohortId"]
    assert re.fullmatch(r"[a-z0-9]{7}", cohort_id)
    assert set(body["cohortsById"]) == {cohort_id}
    cohort = body["cohortsById"][cohort_id]
    assert set(cohort) >= SEED_000_COHORT_FIELDS
    assert cohort["id"] == cohort_id
    assert cohort["appId"] == 153957
    assert cohort["name"] == "Test Cohort"
    assert cohort["owners"] == ["datamonster@amplitude.com"]
    assert cohort["published"] is True
    assert cohort["size"] == 2
    assert cohort["type"] == "manual_upload"
    assert cohort["definition"]["countGroup"] == "User"
    assert body["metadata"] == {"matched": 2, "totals": 3, "invalid_ids_sample": []}
    store = store_of(amplitude_server)
    assert store.user_ids(cohort_id) == {"alice", "bob"}
    assert (str(amplitude_id_for("alice")), "alice") in store.members(cohort_id)


def test_upload_by_amplitude_id_and_group_cohort(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    response = api.post(
        UPLOAD, json=upload_body(id_type="BY_AMP_ID", ids=["12", "0034", "12"], cg="org")
    )
    body = response.json()
    cohort = body["cohortsById"][body["cohortId"]]
    assert cohort["definition"]["countGroup"] == "org"
    assert store_of(amplitude_server).members(body["cohortId"]) == [("12", ""), ("34", "")]


def test_each_upload_creates_its_own_cohort(api: httpx.Client) -> None:
    first, second = upload(api), upload(api, name="Other")
    assert first != second
    assert {c["id"] for c in api.get(COHORTS).json()["cohorts"]} == {first, second}


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("name", _MISSING, "name: is required"),
        ("name", "", "name: must be a non-empty string"),
        ("name", "   ", "name: must be a non-empty string"),
        ("name", 5, "name: must be a string"),
        ("name", None, "name: must be a string"),
        ("app_id", _MISSING, "app_id: is required"),
        ("app_id", "153957x", "app_id: must be an integer or a string of digits"),
        ("app_id", " 153957", "app_id: must be an integer or a string of digits"),
        ("app_id", "-5", "app_id: must be an integer or a string of digits"),
        ("app_id", "", "app_id: must be an integer or a string of digits"),
        ("app_id", "0", "app_id: must be a positive integer"),
        ("app_id", "9" * 40, "app_id: must be a positive integer"),
        ("app_id", ["153957"], "app_id: must be an integer"),
        ("app_id", 1.5, "app_id: must be an integer"),
        ("app_id", 153957.0, "app_id: must be an integer"),
        ("app_id", True, "app_id: must be an integer"),
        ("app_id", 0, "app_id: must be a positive integer"),
        ("id_type", _MISSING, "id_type: is required"),
        ("id_type", "BY_NAME", "id_type: must be one of BY_AMP_ID, BY_USER_ID"),
        ("id_type", "by_user_id", "id_type: must be one of"),
        ("id_type", 1, "id_type: must be a string"),
        ("ids", _MISSING, "ids: is required"),
        ("ids", [], "ids: must hold at least one id"),
        ("ids", "alice", "ids: must be an array of strings"),
        ("ids", [1, 2], "ids[0]: must be a string"),
        ("ids", ["alice", None], "ids[1]: must be a string"),
        ("owner", _MISSING, "owner: is required"),
        ("owner", "", "owner: must be a non-empty string"),
        ("owner", "datamonster", "owner: must be the login email"),
        ("owner", ["a@b.co"], "owner: must be a string"),
        ("published", _MISSING, "published: is required"),
        ("published", "true", "published: must be a boolean"),
        ("published", 1, "published: must be a boolean"),
        ("existing_cohort_id", 1234567, "existing_cohort_id: must be a string"),
        ("existing_cohort_id", "", "existing_cohort_id: must be a non-empty string"),
        ("skip_invalid_ids", "false", "skip_invalid_ids: must be a boolean"),
        ("skip_save", 0, "skip_save: must be a boolean"),
        ("cg", 3, "cg: must be a string"),
        ("cohort_id", "abc1234", "cohort_id: unknown field"),
        ("apiKey", API_KEY, "apiKey: unknown field"),
    ],
)
def test_upload_validation(
    amplitude_server: BackgroundServer, api: httpx.Client, field: str, value: Any, fragment: str
) -> None:
    response = api.post(UPLOAD, json=upload_body(**{field: value}))
    error = assert_error(response, 400, fragment)
    assert error["type"] == "invalid_request"
    assert API_KEY not in response.text
    assert store_of(amplitude_server).cohorts() == []


def test_upload_reports_every_bad_field_at_once(api: httpx.Client) -> None:
    response = api.post(UPLOAD, json={"name": "", "app_id": "1x", "extra": 1})
    error = assert_error(response, 400, "name:", "app_id:", "extra:", "ids: is required")
    assert len(error["metadata"]["errors"]) >= 6


@pytest.mark.parametrize(
    ("content", "headers", "status", "fragment"),
    [
        (b'{"name": ', {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"[]", {"Content-Type": "application/json"}, 400, "must be a JSON object, got array"),
        (b'"x"', {"Content-Type": "application/json"}, 400, "must be a JSON object"),
        (b'{"app_id": NaN}', {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b'{"name": "a", "name": "b"}', {"Content-Type": "application/json"}, 400, "duplicate"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "application/json"),
        (b"{}", {}, 415, "application/json"),
    ],
)
def test_body_must_be_a_json_object(
    api: httpx.Client, content: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    for path in (UPLOAD, MEMBERSHIP):
        assert_error(api.post(path, content=content, headers=headers), status, fragment)


def test_upload_limit_is_100000_ids(amplitude_server: BackgroundServer, api: httpx.Client) -> None:
    too_many = [str(i) for i in range(1, 100_002)]
    response = api.post(UPLOAD, json=upload_body(id_type="BY_AMP_ID", ids=too_many))
    assert_error(response, 400, "100001 ids", "at most 100000 ids per request")
    body = upload_body(id_type="BY_AMP_ID", ids=too_many[:100_000])
    response = api.post(UPLOAD, json=body)
    assert response.status_code == 200
    assert store_of(amplitude_server).size(response.json()["cohortId"]) == 100_000


def test_invalid_ids_are_skipped_by_default(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    bad = ["abc", "-1", "1.0", " 7", "\u0661", "", "99999999999999999999"]
    response = api.post(UPLOAD, json=upload_body(id_type="BY_AMP_ID", ids=["42", *bad]))
    assert response.status_code == 200
    body = response.json()
    assert body["metadata"] == {"matched": 1, "totals": 8, "invalid_ids_sample": bad}
    assert store_of(amplitude_server).members(body["cohortId"]) == [("42", "")]


def test_invalid_ids_sample_is_at_most_10(api: httpx.Client) -> None:
    ids = ["1", *(f"x{i}" for i in range(25))]
    response = api.post(UPLOAD, json=upload_body(id_type="BY_AMP_ID", ids=ids))
    assert response.json()["metadata"]["invalid_ids_sample"] == [f"x{i}" for i in range(10)]


def test_blank_user_ids_are_invalid(amplitude_server: BackgroundServer, api: httpx.Client) -> None:
    response = api.post(UPLOAD, json=upload_body(ids=["alice", "", "  ", "\t"]))
    body = response.json()
    assert body["metadata"]["invalid_ids_sample"] == ["", "  ", "\t"]
    assert store_of(amplitude_server).user_ids(body["cohortId"]) == {"alice"}


@pytest.mark.parametrize(
    ("id_type", "ids"), [("BY_AMP_ID", ["1", "user-1"]), ("BY_USER_ID", ["alice", " "])]
)
def test_strict_ids_reject_the_whole_upload(
    amplitude_server: BackgroundServer, api: httpx.Client, id_type: str, ids: list[str]
) -> None:
    response = api.post(UPLOAD, json=upload_body(id_type=id_type, ids=ids, skip_invalid_ids=False))
    error = assert_error(response, 400, "1 invalid", "skip_invalid_ids is false")
    assert error["metadata"]["invalid_ids_sample"] == ids[1:]
    assert store_of(amplitude_server).cohorts() == []


def test_upload_with_only_invalid_ids_fails(api: httpx.Client) -> None:
    response = api.post(UPLOAD, json=upload_body(id_type="BY_AMP_ID", ids=["a", "b"]))
    assert_error(response, 400, "no valid ids")


def test_existing_cohort_id_replaces_members(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    cohort_id = upload(api, ids=["alice", "bob"])
    response = api.post(
        UPLOAD,
        json=upload_body(ids=["carol"], existing_cohort_id=cohort_id, name="Renamed"),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["cohortId"] == cohort_id
    assert body["cohortsById"][cohort_id]["size"] == 1
    assert body["cohortsById"][cohort_id]["name"] == "Renamed"
    assert store_of(amplitude_server).user_ids(cohort_id) == {"carol"}
    assert len(api.get(COHORTS).json()["cohorts"]) == 1


def test_existing_cohort_id_must_exist(api: httpx.Client) -> None:
    response = api.post(UPLOAD, json=upload_body(existing_cohort_id="nope123"))
    error = assert_error(response, 404, "nope123")
    assert error["type"] == "not_found"


def test_skip_save_validates_and_saves_nothing(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    response = api.post(UPLOAD, json=upload_body(ids=["alice", " "], skip_save=True))
    assert response.status_code == 200
    assert response.json()["metadata"] == {"matched": 1, "totals": 2, "invalid_ids_sample": [" "]}
    assert store_of(amplitude_server).cohorts() == []
    cohort_id = upload(api, ids=["alice"])
    response = api.post(
        UPLOAD, json=upload_body(ids=["zed"], existing_cohort_id=cohort_id, skip_save=True)
    )
    assert response.status_code == 200
    assert store_of(amplitude_server).user_ids(cohort_id) == {"alice"}
    bad = api.post(UPLOAD, json=upload_body(ids=["a", " "], skip_save=True, skip_invalid_ids=False))
    assert_error(bad, 400, "skip_invalid_ids is false")


def test_app_id_option_pins_the_project(start: Callable[..., BackgroundServer]) -> None:
    server = start(app_id=153957)
    with client_for(server) as client:
        assert client.post(UPLOAD, json=upload_body()).status_code == 200
        assert_error(client.post(UPLOAD, json=upload_body(app_id=42)), 400, "app_id: 42")


def test_cohort_size_limit(start: Callable[..., BackgroundServer]) -> None:
    server = start(max_cohort_size=3)
    with client_for(server) as client:
        four = ["a", "b", "c", "d"]
        assert_error(client.post(UPLOAD, json=upload_body(ids=four)), 400, "at most 3")
        cohort_id = upload(client, ids=four[:3])
        change = {"ids": ["d"], "id_type": "BY_NAME", "operation": "ADD"}
        response = client.post(MEMBERSHIP, json={"cohort_id": cohort_id, "memberships": [change]})
        assert_error(response, 400, "at most 3 per cohort")
        assert store_of(server).user_ids(cohort_id) == {"a", "b", "c"}
        # Adding someone already there keeps the size: allowed.
        change["ids"] = ["a"]
        response = client.post(MEMBERSHIP, json={"cohort_id": cohort_id, "memberships": [change]})
        assert response.status_code == 200


# -- A2 membership ------------------------------------------------------------------------


def membership(
    cohort_id: str, *changes: tuple[str, str, list[str]], **extra: Any
) -> dict[str, Any]:
    return {
        "cohort_id": cohort_id,
        "memberships": [
            {"ids": ids, "id_type": id_type, "operation": operation}
            for id_type, operation, ids in changes
        ],
        **extra,
    }


def test_membership_add_remove_and_skipped(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    store = store_of(amplitude_server)
    cohort_id = upload(api, ids=["alice"])
    response = api.post(
        MEMBERSHIP,
        json=membership(
            cohort_id,
            ("BY_NAME", "ADD", ["bob", "carol", " "]),
            ("BY_ID", "ADD", ["77", "x7"]),
        ),
    )
    assert response.status_code == 200
    assert response.json() == {
        "cohort_id": cohort_id,
        "memberships_result": [
            {"skipped_ids": [" "], "id_type": "BY_NAME", "operation": "ADD"},
            {"skipped_ids": ["x7"], "id_type": "BY_ID", "operation": "ADD"},
        ],
    }
    assert store.user_ids(cohort_id) == {"alice", "bob", "carol"}
    assert ("77", "") in store.members(cohort_id)

    # ADD twice is ADD once.
    again = api.post(MEMBERSHIP, json=membership(cohort_id, ("BY_NAME", "ADD", ["bob"])))
    assert again.status_code == 200
    assert store.size(cohort_id) == 4

    # A user added by name can be removed by its Amplitude id, and vice versa.
    bob_amp = str(amplitude_id_for("bob"))
    response = api.post(
        MEMBERSHIP,
        json=membership(
            cohort_id, ("BY_ID", "REMOVE", [bob_amp, "77"]), ("BY_NAME", "REMOVE", ["carol", "zz"])
        ),
    )
    assert response.status_code == 200
    assert store.members(cohort_id) == [(str(amplitude_id_for("alice")), "alice")]
    listed = api.get(COHORTS).json()["cohorts"][0]
    assert listed["size"] == 1


def test_membership_strict_ids_change_nothing(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    cohort_id = upload(api, ids=["alice"])
    body = membership(
        cohort_id,
        ("BY_NAME", "ADD", ["bob"]),
        ("BY_ID", "ADD", ["12", "bob"]),
        skip_invalid_ids=False,
    )
    error = assert_error(api.post(MEMBERSHIP, json=body), 400, "skip_invalid_ids is false")
    assert error["metadata"]["invalid_ids_sample"] == ["bob"]
    assert store_of(amplitude_server).user_ids(cohort_id) == {"alice"}


def test_membership_unknown_cohort(api: httpx.Client) -> None:
    response = api.post(MEMBERSHIP, json=membership("nope123", ("BY_NAME", "ADD", ["a"])))
    assert_error(response, 404, "nope123")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"memberships": [{"ids": ["a"], "id_type": "BY_NAME", "operation": "ADD"}]}, "cohort_id"),
        ({"cohort_id": 12, "memberships": []}, "cohort_id: must be a string"),
        ({"cohort_id": "c"}, "memberships: is required"),
        ({"cohort_id": "c", "memberships": []}, "memberships: must hold at least one"),
        ({"cohort_id": "c", "memberships": {}}, "memberships: must be an array"),
        ({"cohort_id": "c", "memberships": ["a"]}, "memberships[0]: must be an object"),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": [], "id_type": "BY_ID", "operation": "ADD"}],
            },
            "memberships[0].ids: must hold at least one id",
        ),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": [1], "id_type": "BY_ID", "operation": "ADD"}],
            },
            "memberships[0].ids[0]: must be a string",
        ),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": ["1"], "id_type": "BY_AMP_ID", "operation": "ADD"}],
            },
            "memberships[0].id_type: must be one of BY_ID, BY_NAME",
        ),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": ["1"], "id_type": "BY_ID", "operation": "add"}],
            },
            "memberships[0].operation: must be one of ADD, REMOVE",
        ),
        (
            {"cohort_id": "c", "memberships": [{"ids": ["1"], "id_type": "BY_ID"}]},
            "memberships[0].operation: is required",
        ),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": ["1"], "id_type": "BY_ID", "operation": "ADD", "x": 1}],
            },
            "memberships[0].x: unknown field",
        ),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": ["1"], "id_type": "BY_ID", "operation": "ADD"}],
                "id_type": "BY_ID",
            },
            "id_type: unknown field",
        ),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": ["1"], "id_type": "BY_ID", "operation": "ADD"}],
                "skip_invalid_ids": "true",
            },
            "skip_invalid_ids: must be a boolean",
        ),
        (
            {
                "cohort_id": "c",
                "memberships": [{"ids": ["1"], "id_type": "BY_ID", "operation": "ADD"}],
                "count_group": 1,
            },
            "count_group: must be a string",
        ),
    ],
)
def test_membership_validation(api: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    assert_error(api.post(MEMBERSHIP, json=body), 400, fragment)


def test_membership_limit_counts_every_id_in_the_request(
    start: Callable[..., BackgroundServer],
) -> None:
    server = start(max_ids_per_request=3)
    with client_for(server) as client:
        cohort_id = upload(client, ids=["a"])
        four = ["1", "2", "3", "4"]
        body = membership(cohort_id, ("BY_ID", "ADD", four))
        assert_error(client.post(MEMBERSHIP, json=body), 400, "4 ids: at most 3 ids per request")
        body = membership(cohort_id, ("BY_ID", "ADD", four[:2]), ("BY_ID", "REMOVE", four[2:]))
        assert_error(client.post(MEMBERSHIP, json=body), 400, "4 ids in all")


def test_membership_count_group_must_match(api: httpx.Client) -> None:
    user_cohort = upload(api)
    group_cohort = upload(api, cg="org")
    change = ("BY_NAME", "ADD", ["x"])
    assert api.post(MEMBERSHIP, json=membership(user_cohort, change)).status_code == 200
    response = api.post(MEMBERSHIP, json=membership(group_cohort, change))
    assert_error(response, 400, "count_group 'User'")
    ok = api.post(MEMBERSHIP, json=membership(group_cohort, change, count_group="org"))
    assert ok.status_code == 200


# -- concurrency --------------------------------------------------------------------------


@pytest.fixture
def gated(
    start: Callable[..., BackgroundServer],
) -> Iterator[tuple[httpx.Client, Gate, BackgroundServer]]:
    """A fake whose handlers a test can hold in flight, and a client for it."""
    gate = Gate()
    server = start(checkpoint=gate)
    try:
        with client_for(server) as client:
            yield client, gate, server
    finally:
        gate.release()


def test_second_membership_change_on_a_cohort_answers_429(
    gated: tuple[httpx.Client, Gate, BackgroundServer],
) -> None:
    api, gate, server = gated
    cohort_id = upload(api, ids=["alice"])
    other_id = upload(api, ids=["zed"])
    add = membership(cohort_id, ("BY_NAME", "ADD", ["bob"]))
    remove = membership(cohort_id, ("BY_NAME", "REMOVE", ["alice"]))
    gate.hold()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(api.post, MEMBERSHIP, json=add)
        assert gate.wait_for_held(1)
        response = api.post(MEMBERSHIP, json=remove)
        error = assert_error(response, 429, cohort_id, "one after the other")
        assert response.headers["Retry-After"] == "1"
        assert error["type"] == "too_many_requests"
        # Another cohort is not blocked by it.
        elsewhere = pool.submit(
            api.post, MEMBERSHIP, json=membership(other_id, ("BY_NAME", "ADD", ["y"]))
        )
        assert gate.wait_for_held(2)
        gate.release()
        assert first.result(timeout=30).status_code == 200
        assert elsewhere.result(timeout=30).status_code == 200
    assert store_of(server).user_ids(cohort_id) == {"alice", "bob"}
    # Once the first finished, the cohort takes changes again.
    assert api.post(MEMBERSHIP, json=remove).status_code == 200


def test_upload_replace_while_membership_runs_answers_429(
    gated: tuple[httpx.Client, Gate, BackgroundServer],
) -> None:
    api, gate, _ = gated
    cohort_id = upload(api, ids=["alice"])
    gate.hold()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            api.post, MEMBERSHIP, json=membership(cohort_id, ("BY_NAME", "ADD", ["bob"]))
        )
        assert gate.wait_for_held(1)
        response = api.post(UPLOAD, json=upload_body(existing_cohort_id=cohort_id))
        assert_error(response, 429, cohort_id)
        gate.release()
        assert first.result(timeout=30).status_code == 200


def test_sixth_concurrent_request_answers_429(
    start: Callable[..., BackgroundServer],
) -> None:
    gate = Gate()
    server = start(checkpoint=gate)
    traffic = traffic_of(server)
    gate.hold()
    try:
        with client_for(server) as api, ThreadPoolExecutor(5) as pool:
            held = [pool.submit(api.get, COHORTS) for _ in range(5)]
            assert gate.wait_for_held(5)
            response = api.post(UPLOAD, json=upload_body())
            error = assert_error(response, 429, "at most 5 in flight")
            assert response.headers["Retry-After"] == "1"
            assert error["metadata"] == {"limit": 5}
            # Unauthenticated requests are refused before they count.
            with httpx.Client(base_url=server.url) as anonymous:
                assert anonymous.get(COHORTS).status_code == 401
            gate.release()
            assert [f.result(timeout=30).status_code for f in held] == [200] * 5
            assert api.post(UPLOAD, json=upload_body()).status_code == 200
    finally:
        gate.release()
    assert traffic.max_in_flight == 6
    assert traffic.rejected == 1
    assert traffic.in_flight == 0
    rejected = [r for r in traffic.requests() if r.status == 429]
    assert len(rejected) == 1 and rejected[0].in_flight == 6
    held_records = [r for r in traffic.requests() if r.path == COHORTS and r.status == 200]
    assert len(held_records) == 5
    assert all(r.max_in_flight == 6 for r in held_records)


def test_sequential_requests_keep_in_flight_at_one(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    for _ in range(3):
        upload(api)
    traffic = traffic_of(amplitude_server)
    assert traffic.max_in_flight == 1
    assert [r.status for r in traffic.requests()] == [200, 200, 200]


def test_max_concurrent_option(start: Callable[..., BackgroundServer]) -> None:
    gate = Gate()
    server = start(max_concurrent=1, checkpoint=gate)
    gate.hold()
    try:
        with client_for(server) as client, ThreadPoolExecutor(1) as pool:
            held = pool.submit(client.get, COHORTS)
            assert gate.wait_for_held(1)
            assert_error(client.get(COHORTS), 429, "at most 1 in flight")
            gate.release()
            assert held.result(timeout=30).status_code == 200
    finally:
        gate.release()


# -- A3 list ------------------------------------------------------------------------------


def test_list_cohorts_with_and_without_sync_info(api: httpx.Client) -> None:
    cohort_id = upload(api, ids=["a", "b", "c"], published=False)
    plain = api.get(COHORTS).json()["cohorts"]
    assert len(plain) == 1
    cohort = plain[0]
    assert set(cohort) >= SEED_000_COHORT_FIELDS
    assert "syncMetadata" not in cohort
    assert cohort["id"] == cohort_id
    assert cohort["size"] == 3
    assert cohort["published"] is False
    with_sync = api.get(COHORTS, params={"includeSyncInfo": "true"}).json()["cohorts"]
    assert with_sync[0]["syncMetadata"] == []
    assert_error(api.get(COHORTS, params={"includeSyncInfo": "yes"}), 400, "includeSyncInfo")


def test_unknown_route_and_method(api: httpx.Client) -> None:
    assert_error(api.get("/api/3/nothing"), 404)
    error = assert_error(api.delete(COHORTS), 405)
    assert error["type"] == "method_not_allowed"


# -- A3 export ----------------------------------------------------------------------------


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_export_flow_with_polls(start: Callable[..., BackgroundServer]) -> None:
    server = start(export_polls=2)
    with client_for(server) as client:
        cohort_id = upload(client, ids=["alice", 'bob "the, builder"'])
        client.post(MEMBERSHIP, json=membership(cohort_id, ("BY_ID", "ADD", ["5"])))
        started = client.get(f"/api/5/cohorts/request/{cohort_id}")
        assert started.status_code == 202
        request_id = started.json()["request_id"]
        assert started.json() == {"request_id": request_id, "cohort_id": cohort_id}
        status_path = f"/api/5/cohorts/request-status/{request_id}"
        file_path = f"/api/5/cohorts/request/{request_id}/file"

        assert_error(client.get(file_path), 400, "not completed yet")
        for _ in range(2):
            polled = client.get(status_path)
            assert polled.status_code == 202
            assert polled.json() == {
                "request_id": request_id,
                "cohort_id": cohort_id,
                "async_status": "JOB INPROGRESS",
            }
        done = client.get(status_path)
        assert done.status_code == 200
        assert done.json()["async_status"] == "JOB COMPLETED"

        response = client.get(file_path)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        assert response.text.splitlines()[0] == '"amplitude_id","user_id"'
        assert response.text.splitlines()[1] == '"5",""'
        rows = read_csv(response.text)
        assert sorted(rows[1:]) == sorted(
            [
                ["5", ""],
                [str(amplitude_id_for("alice")), "alice"],
                [str(amplitude_id_for('bob "the, builder"')), 'bob "the, builder"'],
            ]
        )


def test_export_with_property_keys(api: httpx.Client) -> None:
    cohort_id = upload(api, ids=["alice"])
    started = api.get(
        f"/api/5/cohorts/request/{cohort_id}",
        params=[("props", "1"), ("propKeys", "country"), ("propKeys", "plan")],
    )
    request_id = started.json()["request_id"]
    api.get(f"/api/5/cohorts/request-status/{request_id}")
    assert api.get(f"/api/5/cohorts/request-status/{request_id}").status_code == 200
    rows = read_csv(api.get(f"/api/5/cohorts/request/{request_id}/file").text)
    assert rows[0] == ["amplitude_id", "user_id", "country", "plan"]
    assert rows[1][1:] == ["alice", "", ""]
    assert_error(api.get(f"/api/5/cohorts/request/{cohort_id}?props=yes"), 400, "props")
    assert_error(api.get(f"/api/5/cohorts/request/{cohort_id}?propKeys=x"), 400, "props=1")


def test_export_unknown_ids(api: httpx.Client) -> None:
    assert_error(api.get("/api/5/cohorts/request/nope123"), 404, "nope123")
    assert_error(api.get("/api/5/cohorts/request-status/r404"), 404, "r404")
    assert_error(api.get("/api/5/cohorts/request/r404/file"), 404, "r404")


def test_at_most_4_exports_run_in_parallel(api: httpx.Client) -> None:
    cohort_id = upload(api)
    request_ids = [
        api.get(f"/api/5/cohorts/request/{cohort_id}").json()["request_id"] for _ in range(4)
    ]
    assert_error(api.get(f"/api/5/cohorts/request/{cohort_id}"), 429, "at most 4 in parallel")
    for _ in range(2):
        api.get(f"/api/5/cohorts/request-status/{request_ids[0]}")
    assert api.get(f"/api/5/cohorts/request/{cohort_id}").status_code == 202


def test_export_redirect_to_signed_url(start: Callable[..., BackgroundServer]) -> None:
    now = [1000.0]
    server = start(export_polls=0, export_redirect=True, clock=lambda: now[0])
    with client_for(server) as client:
        cohort_id = upload(client, ids=["alice"])
        request_id = client.get(f"/api/5/cohorts/request/{cohort_id}").json()["request_id"]
        assert client.get(f"/api/5/cohorts/request-status/{request_id}").status_code == 200
        response = client.get(f"/api/5/cohorts/request/{request_id}/file")
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith(f"{server.url}/signed/")
    with httpx.Client() as anonymous:
        signed = anonymous.get(location)
        assert signed.status_code == 200
        assert read_csv(signed.text)[1] == [str(amplitude_id_for("alice")), "alice"]
        now[0] += 61
        assert_error(anonymous.get(location), 403, "expired")
        assert_error(anonymous.get(f"{server.url}/signed/forged"), 403, "not valid")
    signed_requests = [r for r in traffic_of(server).requests() if r.path.startswith("/signed/")]
    assert signed_requests and not any(r.authorization_sent for r in signed_requests)


# -- persistence --------------------------------------------------------------------------


def test_state_survives_a_restart_with_a_file_db(
    start: Callable[..., BackgroundServer], tmp_path: Path
) -> None:
    db = str(tmp_path / "fake.sqlite")
    first = start(db=db, export_polls=0)
    with client_for(first) as client:
        cohort_id = upload(client, ids=["alice", "bob"])
        client.post(MEMBERSHIP, json=membership(cohort_id, ("BY_ID", "ADD", ["9"])))
        request_id = client.get(f"/api/5/cohorts/request/{cohort_id}").json()["request_id"]
        client.get(f"/api/5/cohorts/request-status/{request_id}")
        before = client.get(COHORTS).json()
    first.stop()

    second = start(db=db, export_polls=0)
    with client_for(second) as client:
        assert client.get(COHORTS).json() == before
        rows = read_csv(client.get(f"/api/5/cohorts/request/{request_id}/file").text)
        assert len(rows) == 4
        assert upload(client, name="Another") != cohort_id
    assert store_of(second).user_ids(cohort_id) == {"alice", "bob"}


def test_at_most_60_export_requests_per_10_minutes(start: Callable[..., BackgroundServer]) -> None:
    now = [5000.0]
    server = start(export_polls=0, clock=lambda: now[0])
    with client_for(server) as client:
        cohort_id = upload(client, ids=["alice"])

        def request_export() -> httpx.Response:
            response = client.get(f"/api/5/cohorts/request/{cohort_id}")
            if response.status_code == 202:  # finish it, so the 4-in-parallel limit stays out
                client.get(f"/api/5/cohorts/request-status/{response.json()['request_id']}")
            return response

        for minute in range(60):
            now[0] = 5000.0 + minute * 9
            assert request_export().status_code == 202
        refused = request_export()
        assert_error(refused, 429, "at most 60 per project")
        assert int(refused.headers["Retry-After"]) >= 1
        now[0] = 5000.0 + 600.5  # the first request leaves the window
        assert request_export().status_code == 202
