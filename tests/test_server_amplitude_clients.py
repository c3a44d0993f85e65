"""The fake Amplitude API as third-party clients use it: user search, app_id as a string,
export properties, sync destinations, and Segment's Amplitude Cohorts destination replayed.

The Segment requests below are the ones ``@segment/action-destinations`` 3.497.0
(``dist/destinations/amplitude-cohorts``) sends: read from its source, replayed byte for
byte in what matters (paths, query strings, JSON bodies, headers, ``app_id`` as a string).
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from cohortctl.servers.amplitude.store import CohortStore, amplitude_id_for
from cohortctl.servers.runner import BackgroundServer
from tests.credentials import API_KEY, SECRET_KEY
from tests.servers_fixtures import client_for
from tests.test_server_amplitude import (
    COHORTS,
    MEMBERSHIP,
    UPLOAD,
    assert_error,
    read_csv,
    store_of,
    traffic_of,
    upload,
    upload_body,
)

USERSEARCH = "/api/2/usersearch"


def test_app_id_may_be_a_string_of_digits(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    cohort_id = upload(api, app_id="153957")
    assert store_of(amplitude_server).cohort(cohort_id).app_id == 153957  # type: ignore[union-attr]
    assert api.get(COHORTS).json()["cohorts"][0]["appId"] == 153957


def test_app_id_pin_applies_to_strings_too(amplitude_server_factory: Any) -> None:
    server = amplitude_server_factory(app_id=153957)
    with client_for(server) as client:
        assert client.post(UPLOAD, json=upload_body(app_id="153957")).status_code == 200
        assert_error(client.post(UPLOAD, json=upload_body(app_id="42")), 400, "app_id: 42")


# -- user search --------------------------------------------------------------------------


def test_usersearch_finds_members_by_user_id_prefix_and_amplitude_id(api: httpx.Client) -> None:
    cohort_id = upload(api, ids=["1001", "1002", "2001", "alice"])
    api.post(
        MEMBERSHIP,
        json={
            "cohort_id": cohort_id,
            "memberships": [{"ids": ["77"], "id_type": "BY_ID", "operation": "ADD"}],
        },
    )
    prefix = api.get(USERSEARCH, params={"user": "1"})
    assert prefix.status_code == 200
    assert prefix.json() == {
        "matches": [
            {"user_id": "1001", "amplitude_id": amplitude_id_for("1001")},
            {"user_id": "1002", "amplitude_id": amplitude_id_for("1002")},
        ],
        "type": "match_user_prefix",
    }
    exact = api.get(USERSEARCH, params={"user": "alice"}).json()
    assert exact["matches"] == [{"user_id": "alice", "amplitude_id": amplitude_id_for("alice")}]
    assert exact["type"] == "match_user_or_device_id"
    by_amplitude_id = api.get(USERSEARCH, params={"user": "77"}).json()
    assert by_amplitude_id["matches"] == [{"user_id": None, "amplitude_id": 77}]
    derived = str(amplitude_id_for("2001"))
    assert api.get(USERSEARCH, params={"user": derived}).json()["matches"] == [
        {"user_id": "2001", "amplitude_id": amplitude_id_for("2001")}
    ]


def test_usersearch_knows_nobody_outside_its_cohorts(api: httpx.Client) -> None:
    assert api.get(USERSEARCH, params={"user": "owner@example.com"}).json()["matches"] == []
    upload(api, ids=["alice"])
    assert api.get(USERSEARCH, params={"user": "bob"}).json()["matches"] == []
    assert_error(api.get(USERSEARCH), 400, "user is required")
    assert_error(api.get(USERSEARCH, params={"user": " "}), 400, "user is required")
    assert api.get(USERSEARCH, params={"user": "a"}, auth=None).status_code == 401


def test_usersearch_finds_users_with_properties(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    store_of(amplitude_server).set_user_properties({"plan": "pro"}, user_id="zoe")
    assert api.get(USERSEARCH, params={"user": "zo"}).json()["matches"] == [
        {"user_id": "zoe", "amplitude_id": amplitude_id_for("zoe")}
    ]


# -- export with properties ---------------------------------------------------------------


def _export(api: httpx.Client, cohort_id: str, params: Any = None) -> list[list[str]]:
    started = api.get(f"/api/5/cohorts/request/{cohort_id}", params=params)
    assert started.status_code == 202, started.text
    request_id = started.json()["request_id"]
    while api.get(f"/api/5/cohorts/request-status/{request_id}").status_code != 200:
        pass
    return read_csv(api.get(f"/api/5/cohorts/request/{request_id}/file").text)


def test_props_1_adds_the_properties_the_fake_holds(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    store = store_of(amplitude_server)
    cohort_id = upload(api, ids=["alice", "bob"])
    store.set_user_properties({"plan": "pro", "seats": 3, "beta": True}, user_id="alice")
    store.set_user_properties({"country": "FR", "tags": ["a", "b"]}, user_id="bob")
    store.set_user_properties({"plan": "free"}, user_id="carol")  # not a member

    rows = _export(api, cohort_id, {"props": "1"})
    assert rows[0] == ["amplitude_id", "user_id", "beta", "country", "plan", "seats", "tags"]
    by_user = {row[1]: row for row in rows[1:]}
    assert by_user["alice"][2:] == ["true", "", "pro", "3", ""]
    assert by_user["bob"][2:] == ["", "FR", "", "", '["a", "b"]']

    chosen = _export(api, cohort_id, [("props", "1"), ("propKeys", "plan")])
    assert chosen[0] == ["amplitude_id", "user_id", "plan"]
    assert sorted(row[1:] for row in chosen[1:]) == [["alice", "pro"], ["bob", ""]]
    assert _export(api, cohort_id)[0] == ["amplitude_id", "user_id"]


def test_sync_destinations_appear_with_include_sync_info(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    first = upload(api, ids=["alice"])
    second = upload(api, ids=["bob"])
    sync = {"target": "braze", "frequency": "daily", "last_successful": 1700000000}
    store_of(amplitude_server).set_sync_metadata(first, [sync])
    cohorts = {
        c["id"]: c for c in api.get(COHORTS, params={"includeSyncInfo": "true"}).json()["cohorts"]
    }
    assert cohorts[first]["syncMetadata"] == [sync]
    assert cohorts[second]["syncMetadata"] == []


def test_an_export_nobody_polls_stops_counting_after_a_minute() -> None:
    now = [1000.0]
    store = CohortStore(clock=lambda: now[0])
    cohort = store.save_upload(
        name="c",
        app_id=1,
        owner="o@example.com",
        published=True,
        count_group="User",
        id_type="BY_USER_ID",
        members=[(1, "a")],
    )
    for _ in range(4):
        store.create_export(cohort.id, None)
    assert store.exports_polled_at_most(1, within=60) == 4
    now[0] += 61
    assert store.exports_polled_at_most(1, within=60) == 0
    assert store.exports_polled_at_most(1) == 4


# -- Segment's "Amplitude Cohorts" destination, replayed ------------------------------------


def _segment_client(server: BackgroundServer) -> httpx.Client:
    """Segment's ``extendRequest``: these two headers on every request, GETs included."""
    token = base64.b64encode(f"{API_KEY}:{SECRET_KEY}".encode()).decode()
    return httpx.Client(
        base_url=server.url,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        timeout=30,
    )


def test_segment_amplitude_cohorts_destination_requests(
    amplitude_server: BackgroundServer, api: httpx.Client
) -> None:
    # The customer's project already holds users (Segment needs one as a seed to create).
    existing = upload(api, ids=["3141", "user-a", "5926"])
    settings = {"app_id": "153957", "default_owner_email": "owner@example.com"}

    with _segment_client(amplitude_server) as segment:
        # testAuthentication: GET usersearch?user={default_owner_email}, any 2xx passes.
        auth = segment.get(f"{USERSEARCH}?user={settings['default_owner_email']}")
        assert auth.status_code == 200, auth.text

        # createAudience, no seed user given: fetchSeedUserId searches 1..9, three at a time,
        # and takes the first match's user_id.
        seed = None
        for batch in (["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"]):
            with ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda p: segment.get(f"{USERSEARCH}?user={p}"), batch))
            assert all(a.status_code == 200 for a in answers)
            found = [m["user_id"] for a in answers for m in a.json()["matches"] if m["user_id"]]
            if found:
                seed = found[0]
                break
        assert seed == "3141"

        created = segment.post(
            UPLOAD,
            json={
                "name": "Segment Audience",
                "app_id": settings["app_id"],
                "id_type": "BY_USER_ID",
                "ids": [seed],
                "owner": settings["default_owner_email"],
                "published": True,
            },
        )
        assert created.status_code == 200, created.text
        cohort_id = created.json()["cohortId"]
        assert cohort_id and cohort_id != existing

        # removeSeedUser
        removed = segment.post(
            MEMBERSHIP,
            json={
                "cohort_id": cohort_id,
                "skip_invalid_ids": True,
                "memberships": [{"ids": [seed], "id_type": "BY_NAME", "operation": "REMOVE"}],
            },
        )
        assert removed.status_code == 200, removed.text
        assert store_of(amplitude_server).size(cohort_id) == 0

        # getAudience: GET /api/5/cohorts/request/{externalId}, answer's cohort_id must match.
        # Segment never polls these exports: they stop counting against the 4 in parallel
        # after a minute (see test_an_export_nobody_polls_stops_counting_after_a_minute).
        for _ in range(2):
            looked_up = segment.get(f"/api/5/cohorts/request/{cohort_id}")
            assert looked_up.status_code == 202, looked_up.text
            assert looked_up.json()["cohort_id"] == cohort_id
        assert segment.get("/api/5/cohorts/request/nope123").status_code == 404

        # syncAudience (performBatch): ADD the users who entered, then REMOVE those who left,
        # reading memberships_result[0].skipped_ids.
        def sync(operation: str, ids: list[str]) -> list[str]:
            answer = segment.post(
                MEMBERSHIP,
                json={
                    "cohort_id": cohort_id,
                    "skip_invalid_ids": True,
                    "memberships": [{"ids": ids, "id_type": "BY_NAME", "operation": operation}],
                },
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["memberships_result"][0]["skipped_ids"]  # type: ignore[no-any-return]

        assert sync("ADD", ["u1", "u2", "u3"]) == []
        assert sync("REMOVE", ["u2"]) == []
        assert sync("ADD", ["u4", " "]) == [" "]
    assert store_of(amplitude_server).user_ids(cohort_id) == {"u1", "u3", "u4"}
    statuses = [r.status for r in traffic_of(amplitude_server).requests()]
    assert statuses.count(404) == 1 and all(s < 300 for s in statuses if s != 404)
