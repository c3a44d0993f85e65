"""The partner receiver over real loopback HTTP: every answer provoked, every state checked."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.partner import payloads
from cohortctl.servers.partner import database as partner_database
from cohortctl.servers.partner.app import RECEIVER_KEY, ReceiverSettings, TokenBucket
from cohortctl.servers.partner.store import PartnerLog, PartnerStore
from cohortctl.servers.partner.validation import (
    InvalidPayload,
    check_user_ids,
    plain_json,
    validate_list_members,
)
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import assert_no_secrets
from tests.credentials import PARTNER_KEY, PARTNER_SECRET
from tests.partner_fixtures import PartnerFactory

NAME, COHORT = "Churn risk", "c42"
KEY = payloads.cohort_label(NAME, COHORT)
BASIC = (PARTNER_KEY, "")


def client(server: BackgroundServer, auth: Any = BASIC, **kwargs: Any) -> httpx.Client:
    kwargs.setdefault("timeout", 10)
    return httpx.Client(base_url=server.url, auth=auth, **kwargs)


def view(server: BackgroundServer, path: str, **params: Any) -> Any:
    response = httpx.get(f"{server.url}/_cohortctl/{path}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def new_list(c: httpx.Client, name: str = NAME) -> str:
    response = c.post("/lists", json=payloads.list_create(name, COHORT))
    assert response.status_code == 200, response.text
    return str(response.json()["listId"])


# --- list-based sync -------------------------------------------------------------------------


def test_create_add_remove_and_the_state_views(partner_server: BackgroundServer) -> None:
    with client(partner_server) as c:
        list_id = new_list(c)
        added = c.post(f"/lists/{list_id}/add", json=payloads.list_members(["u3", "u1", "u2"]))
        assert added.status_code == 200
        assert added.json() == {"listId": list_id, "added": 3, "size": 3}
        removed = c.post(f"/lists/{list_id}/remove", json=payloads.list_members(["u1", "x"]))
        assert removed.json() == {"listId": list_id, "removed": 1, "size": 2}
    assert view(partner_server, f"lists/{list_id}") == {
        "listId": list_id,
        "name": KEY,
        "members": ["u2", "u3"],
    }
    state = view(partner_server, "state")
    assert state["lists"] == [{"listId": list_id, "name": KEY, "size": 2}]
    assert state["counters"] == {
        "requests": 3,
        "by_status": {"200": 3},
        "users_received": 5,
    }
    assert view(partner_server, "health") == {"ok": True}


def test_adds_are_idempotent_and_same_name_returns_the_same_list(
    partner_server: BackgroundServer,
) -> None:
    with client(partner_server) as c:
        list_id = new_list(c)
        assert new_list(c) == list_id
        assert new_list(c, "Other") != list_id
        body = payloads.list_members(["a", "b"])
        assert c.post(f"/lists/{list_id}/add", json=body).json()["added"] == 2
        again = c.post(f"/lists/{list_id}/add", json=body).json()
        assert again == {"listId": list_id, "added": 0, "size": 2}
        gone = c.post(f"/lists/{list_id}/remove", json=payloads.list_members(["zz"])).json()
        assert gone == {"listId": list_id, "removed": 0, "size": 2}
    assert len(view(partner_server, "state")["lists"]) == 2


def test_unicode_and_escaped_ids_are_stored_as_sent(partner_server: BackgroundServer) -> None:
    ids = ["josé", "用户", 'quote"d', "back\\slash", "userIds"]
    with client(partner_server) as c:
        list_id = new_list(c)
        # ensure_ascii (httpx's default) sends \\u escapes: the receiver decodes in Python
        assert c.post(f"/lists/{list_id}/add", json=payloads.list_members(ids)).json()["added"] == 5
    assert view(partner_server, f"lists/{list_id}")["members"] == sorted(ids)


def test_duplicate_user_ids_key_stores_what_was_validated(partner_server: BackgroundServer) -> None:
    with client(partner_server) as c:
        list_id = new_list(c)
        context = json.dumps(payloads.context())
        body = f'{{"userIds": ["first"], "userIds": ["last"], "context": {context}}}'
        headers = {"Content-Type": "application/json"}
        response = c.post(f"/lists/{list_id}/add", content=body, headers=headers)
        assert response.status_code == 200
    assert view(partner_server, f"lists/{list_id}")["members"] == ["last"]


def test_unknown_list_is_404_and_changes_nothing(partner_server: BackgroundServer) -> None:
    with client(partner_server) as c:
        for list_id in ("999", "no-such-list"):
            response = c.post(f"/lists/{list_id}/add", json=payloads.list_members(["u1"]))
            assert response.status_code == 404
            assert response.json() == {"error": "unknown list", "listId": list_id}
    missing = httpx.get(f"{partner_server.url}/_cohortctl/lists/999")
    assert missing.status_code == 404
    assert view(partner_server, "state")["counters"]["by_status"] == {"404": 2}


# --- property-based sync ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/identify", "/batch"])
def test_identify_single_and_batch_on_both_paths(
    partner_server: BackgroundServer, path: str
) -> None:
    with client(partner_server) as c:
        single = c.post(path, json=payloads.identify("u1", NAME, COHORT, member=True))
        assert single.json() == {"updated": 1}
        batch = payloads.identify_batch(["u2", "u3"], NAME, COHORT, member=True)
        assert c.post(path, json=batch).json() == {"updated": 2}
        left = c.post(path, json=payloads.identify_batch(["u1"], NAME, COHORT, member=False))
        assert left.status_code == 200
    assert view(partner_server, "traits", key=KEY) == {
        "key": KEY,
        "true": ["u2", "u3"],
        "false": ["u1"],
    }
    assert view(partner_server, "state")["traits"] == {"users": 3, "keys": [KEY]}
    assert view(partner_server, "traits", key="nope") == {"key": "nope", "true": [], "false": []}


# --- 400: strict validation ------------------------------------------------------------------

CONTEXT = payloads.context()
GOOD_IDENTIFY = payloads.identify("u1", NAME, COHORT, member=True)
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("/lists", [], "(body)"),
    ("/lists", {"context": CONTEXT}, "name"),
    ("/lists", {"name": "", "context": CONTEXT}, "name"),
    ("/lists", {"name": 7, "context": CONTEXT}, "name"),
    ("/lists", {"name": "n", "context": CONTEXT, "extra": 1}, "extra"),
    ("/lists", {"name": "n"}, "context"),
    ("/lists", {"name": "n", "context": "x"}, "context"),
    ("/lists", {"name": "n", "context": {}}, "context.integration"),
    (
        "/lists",
        {"name": "n", "context": {"integration": {"name": "Other", "version": "1.0.0"}}},
        "context.integration.name",
    ),
    (
        "/lists",
        {"name": "n", "context": {"integration": {"name": payloads.INTEGRATION_NAME}}},
        "context.integration.version",
    ),
    ("/lists/{id}/add", {"userIds": "u1", "context": CONTEXT}, "userIds"),
    ("/lists/{id}/add", {"userIds": [], "context": CONTEXT}, "userIds"),
    ("/lists/{id}/add", {"userIds": ["a", "b", "c", 4], "context": CONTEXT}, "userIds[3]"),
    ("/lists/{id}/add", {"userIds": ["a", ""], "context": CONTEXT}, "userIds[1]"),
    ("/lists/{id}/remove", {"userIds": ["a", "b\nc"], "context": CONTEXT}, "userIds[1]"),
    ("/lists/{id}/add", {"userIds": ["a\x7f"], "context": CONTEXT}, "userIds[0]"),
    ("/lists/{id}/add", {"userIds": ["é", "x\x85"], "context": CONTEXT}, "userIds[1]"),
    ("/lists/{id}/add", {"userIds": [None], "context": CONTEXT}, "userIds[0]"),
    ("/lists/{id}/add", {"userIds": ["a"]}, "context"),
    ("/lists/{id}/add", {"userIds": ["a"], "context": CONTEXT, "name": "x"}, "name"),
    ("/identify", {**GOOD_IDENTIFY, "type": "track"}, "type"),
    ("/identify", {**GOOD_IDENTIFY, "userId": ""}, "userId"),
    ("/identify", {**GOOD_IDENTIFY, "userId": 5}, "userId"),
    ("/identify", {**GOOD_IDENTIFY, "traits": {}}, "traits"),
    ("/identify", {**GOOD_IDENTIFY, "traits": {KEY: "true"}}, f"traits[{KEY!r}]"),
    ("/identify", {**GOOD_IDENTIFY, "traits": {KEY: 1}}, f"traits[{KEY!r}]"),
    (
        "/identify",
        {**GOOD_IDENTIFY, "traits": {"cohort name:123": True}},
        "traits['cohort name:123']",
    ),
    ("/identify", {k: v for k, v in GOOD_IDENTIFY.items() if k != "context"}, "context"),
    ("/identify", {**GOOD_IDENTIFY, "extra": True}, "extra"),
    ("/batch", {"batch": []}, "batch"),
    ("/batch", {"batch": {}}, "batch"),
    ("/batch", {"batch": [GOOD_IDENTIFY, {**GOOD_IDENTIFY, "userId": ""}]}, "batch[1].userId"),
    ("/batch", {"batch": [GOOD_IDENTIFY, "x"]}, "batch[1]"),
    ("/batch", {"batch": [GOOD_IDENTIFY], "context": CONTEXT}, "context"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_BODIES)
def test_each_validation_rule_is_a_400_naming_the_field(
    partner_server: BackgroundServer, path: str, body: Any, field: str
) -> None:
    with client(partner_server) as c:
        list_id = new_list(c)
        response = c.post(path.replace("{id}", list_id), json=body)
    assert response.status_code == 400, response.text
    data = response.json()
    assert data["error"] == "invalid request"
    assert data["field"] == field
    assert data["reason"]
    assert view(partner_server, f"lists/{list_id}")["members"] == []
    assert view(partner_server, "state")["traits"]["users"] == 0


@pytest.mark.parametrize(
    ("content", "content_type", "field"),
    [
        (b"{not json", "application/json", "(body)"),
        (b'{"name": NaN}', "application/json", "(body)"),
        (b"\xff\xfe", "application/json", "(body)"),
        (b"[" * 100_000, "application/json", "(body)"),
        (json.dumps(payloads.list_create(NAME, COHORT)).encode(), "text/plain", "Content-Type"),
    ],
)
def test_bad_json_is_400(
    partner_server: BackgroundServer, content: bytes, content_type: str, field: str
) -> None:
    with client(partner_server) as c:
        response = c.post("/lists", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_validation_fast_path_and_slow_path_agree() -> None:
    good = ["a", "josé", "用户", "😀", "x y"]
    assert check_user_ids(good) is good
    for bad, index in ((["a", "\ud800"], 1), (["\x00"], 0), (["ok", "é\x9f"], 1)):
        with pytest.raises(InvalidPayload) as caught:
            check_user_ids(bad)
        assert caught.value.field == f"userIds[{index}]"


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("bad", ["a\x7f", "a\x00", "\x85", "tab\there"])
def test_plain_json_never_hides_a_bad_character(ensure_ascii: bool, bad: str) -> None:
    text = json.dumps(payloads.list_members(["ok", bad]), ensure_ascii=ensure_ascii)
    plain = plain_json(text)
    assert not plain
    with pytest.raises(InvalidPayload) as caught:
        validate_list_members(json.loads(text), plain=plain)
    assert caught.value.field == "userIds[1]"
    assert plain_json(json.dumps(payloads.list_members(["user-1", "x y"])))


# --- 401: auth -------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH_CASES: list[tuple[str, dict[str, str], int]] = [
    ("basic", basic(PARTNER_KEY, ""), 200),
    ("basic", basic("wrong", ""), 401),
    ("basic", basic(PARTNER_KEY, "unexpected"), 401),
    ("basic", {"Authorization": "Basic !!!"}, 401),
    ("basic", {}, 401),
    ("basic", {"api_key": PARTNER_KEY}, 401),
    ("header", {"api_key": PARTNER_KEY, "app_id": "153957"}, 200),
    ("header", {"api_key": "wrong"}, 401),
    ("header", basic(PARTNER_KEY, ""), 401),
    ("bearer", {"Authorization": f"Bearer {PARTNER_KEY}"}, 200),
    ("bearer", {"Authorization": "Bearer wrong"}, 401),
    ("bearer", basic(PARTNER_KEY, ""), 401),
    ("any", basic(PARTNER_KEY, ""), 200),
    ("any", {"api_key": PARTNER_KEY}, 200),
    ("any", {"Authorization": f"Bearer {PARTNER_KEY}"}, 200),
    ("any", {"Authorization": "Bearer wrong"}, 401),
    ("any", {}, 401),
    ("none", {}, 200),
    ("none", basic("whatever", "x"), 200),
]


@pytest.mark.parametrize(("auth", "headers", "status"), AUTH_CASES)
def test_each_auth_mode(
    partner_server_factory: PartnerFactory, auth: str, headers: dict[str, str], status: int
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, auth=auth)
    with client(server, auth=None) as c:
        response = c.post("/lists", json=payloads.list_create(NAME, COHORT), headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["error"] == "unauthorized"
        assert view(server, "state")["lists"] == []


def test_basic_with_a_secret(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, secret=PARTNER_SECRET)
    body = payloads.list_create(NAME, COHORT)
    with client(server, auth=(PARTNER_KEY, PARTNER_SECRET)) as c:
        assert c.post("/lists", json=body).status_code == 200
    with client(server, auth=(PARTNER_KEY, "")) as c:
        response = c.post("/lists", json=body)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_no_api_key_accepts_any_credentials(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory()
    body = payloads.list_create(NAME, COHORT)
    with client(server, auth=("anything", "at-all")) as c:
        assert c.post("/lists", json=body).status_code == 200
    with client(server, auth=None) as c:
        assert c.post("/lists", json=body).status_code == 200


def test_auth_is_checked_before_the_body(partner_server: BackgroundServer) -> None:
    with client(partner_server, auth=None) as c:
        response = c.post("/lists", content=b"{not json")
    assert response.status_code == 401


def test_the_journal_never_holds_credentials(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, secret=PARTNER_SECRET, auth="any")
    with client(server, auth=(PARTNER_KEY, PARTNER_SECRET)) as c:
        list_id = new_list(c)
        c.post(f"/lists/{list_id}/add", json=payloads.list_members(["u1"]))
        c.post("/lists", json={}, headers={"api_key": PARTNER_SECRET})
    with client(server, auth=None) as c:
        c.post("/lists", json={}, headers={"Authorization": f"Bearer {PARTNER_SECRET}"})
        c.post("/lists", json={}, headers={"api_key": PARTNER_KEY, "app_id": "1"})
    journal = view(server, "journal", limit=100)
    rows = journal["requests"]
    assert [r["status"] for r in rows] == [200, 200, 400, 401, 400]
    assert rows[1]["path"] == f"/lists/{list_id}/add" and rows[1]["users"] == 1
    assert set(rows[0]) == {"at", "method", "path", "status", "reason", "users", "bytes"}
    assert_no_secrets(json.dumps(journal), json.dumps(view(server, "state")))


def test_the_journal_is_bounded_and_newest_last(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(journal_limit=3)
    with client(server, auth=None) as c:
        for index in range(5):
            c.post("/lists", json=payloads.list_create(f"n{index}", COHORT))
    rows = view(server, "journal", limit=100)["requests"]
    assert len(rows) == 3
    assert [r["reason"] for r in rows] == ["list created"] * 3
    assert view(server, "journal", limit=1)["requests"] == rows[-1:]


# --- 404 with known users --------------------------------------------------------------------


def test_unknown_users_are_404_and_nothing_is_applied(
    partner_server_factory: PartnerFactory,
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, known_users=["k1", "k2"])
    with client(server) as c:
        list_id = new_list(c)
        response = c.post(f"/lists/{list_id}/add", json=payloads.list_members(["k1", "x1", "x2"]))
        assert response.status_code == 404
        assert response.json() == {"error": "unknown users", "count": 2, "userIds": ["x1", "x2"]}
        batch = payloads.identify_batch(["k2", "x3"], NAME, COHORT, member=True)
        assert c.post("/batch", json=batch).status_code == 404
        # an unknown list is named before unknown users
        other = c.post("/lists/77/add", json=payloads.list_members(["x1"]))
        assert other.json()["error"] == "unknown list"
        assert (
            c.post(f"/lists/{list_id}/add", json=payloads.list_members(["k1"])).status_code == 200
        )
    assert view(server, f"lists/{list_id}")["members"] == ["k1"]
    assert view(server, "state")["traits"]["users"] == 0


# --- 429, injected faults --------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, rate_limit=0.01)
    with client(server) as c:
        assert c.post("/lists", json=payloads.list_create(NAME, COHORT)).status_code == 200
        throttled = c.post("/lists", json=payloads.list_create(NAME, COHORT))
    assert throttled.status_code == 429
    retry_after = int(throttled.headers["Retry-After"])
    assert 1 <= retry_after <= 100
    assert throttled.json()["error"] == "rate limited"


def test_rate_limit_comes_before_auth(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, rate_limit=0.01)
    with client(server, auth=None) as c:
        assert c.post("/lists", json={}).status_code == 401
        assert c.post("/lists", json={}).status_code == 429


def test_token_bucket_refills_with_the_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, clock=lambda: now[0])
    assert bucket.take() is None and bucket.take() is None
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() is None
    slow = TokenBucket(0.25, clock=lambda: now[0])
    assert slow.take() is None
    assert slow.take() == pytest.approx(4.0)


@pytest.mark.parametrize("status", [503, 500, 418])
def test_injected_failure(partner_server_factory: PartnerFactory, status: int) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, fail_rate=1, fail_status=status)
    with client(server) as c:
        response = c.post("/lists", json=payloads.list_create(NAME, COHORT))
    assert response.status_code == status
    assert response.json() == {"error": "injected failure", "status": status}
    assert view(server, "state")["lists"] == []


def test_fail_rate_is_repeatable_with_a_seed(partner_server_factory: PartnerFactory) -> None:
    def statuses() -> list[int]:
        server = partner_server_factory(fail_rate=0.5, seed=7)
        with client(server, auth=None) as c:
            return [c.post("/lists", json=payloads.list_create(NAME, COHORT)).status_code
                    for _ in range(20)]  # fmt: skip

    first = statuses()
    assert first == statuses()
    assert {200, 503} == set(first)


def test_injected_reset_drops_the_connection(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, reset_rate=1)
    with client(server) as c, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        c.post("/lists", json=payloads.list_create(NAME, COHORT))
    rows = view(server, "journal")["requests"]
    assert rows[0]["status"] is None and "reset" in rows[0]["reason"]
    assert view(server, "state")["counters"]["by_status"] == {"reset": 1}


def test_delay_holds_the_answer(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=1000)
    with client(server, timeout=0.1) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/lists", json=payloads.list_create(NAME, COHORT))


def test_delay_then_answer(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=20)
    with client(server) as c:
        assert c.post("/lists", json=payloads.list_create(NAME, COHORT)).status_code == 200


# --- contract-breaking switches (for the conformance checker's own tests) ----------------------


def test_contract_breaking_switches(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(
        api_key=PARTNER_KEY, accept_any_key=True, accept_bad_bodies=True, never_404=True
    )
    with client(server, auth=("wrong", "")) as c:
        assert c.post("/lists", json={"bad": True}).status_code == 200
        assert c.post("/lists/9/add", json=payloads.list_members(["u"])).status_code == 200
        list_id = new_list(c)
    assert view(server, "state")["lists"] == [{"listId": list_id, "name": KEY, "size": 0}]


# --- persistence, reset, unknown routes --------------------------------------------------------


def test_a_file_db_survives_a_restart(
    partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    db = str(tmp_path / "receiver.sqlite")
    first = partner_server_factory(api_key=PARTNER_KEY, db=db)
    with client(first) as c:
        list_id = new_list(c)
        c.post(f"/lists/{list_id}/add", json=payloads.list_members(["u1", "u2"]))
        c.post("/identify", json=GOOD_IDENTIFY)
    first.stop()
    second = partner_server_factory(api_key=PARTNER_KEY, db=db)
    assert view(second, f"lists/{list_id}")["members"] == ["u1", "u2"]
    assert view(second, "traits", key=KEY)["true"] == ["u1"]
    assert view(second, "state")["counters"]["requests"] == 3
    with client(second) as c:
        assert new_list(c) == list_id
        assert new_list(c, "Another") != list_id


def everything(server: BackgroundServer, list_ids: list[str], keys: list[str]) -> Any:
    """Every read-only view of a receiver, to compare two of them."""
    return {
        "state": view(server, "state"),
        "lists": [view(server, f"lists/{list_id}") for list_id in list_ids],
        "traits": [view(server, "traits", key=key) for key in keys],
        "journal": view(server, "journal", limit=100),
    }


def fill(server: BackgroundServer) -> tuple[list[str], list[str]]:
    """Lists, adds, removes, repeated adds and traits set then flipped: (list ids, keys)."""
    other_key = payloads.cohort_label("Whales", "c7")
    with client(server) as c:
        first, second = new_list(c), new_list(c, "Second")
        for ids in (["u1", "u2", "u3"], ["u3", "u4"], ["u2", "u2", "u5"]):
            assert c.post(f"/lists/{first}/add", json=payloads.list_members(ids)).is_success
        assert c.post(f"/lists/{first}/remove", json=payloads.list_members(["u1", "x"])).is_success
        assert c.post(f"/lists/{second}/add", json=payloads.list_members(["v1"])).is_success
        c.post("/batch", json=payloads.identify_batch(["u1", "u2"], NAME, COHORT, member=True))
        c.post("/identify", json=payloads.identify("u1", NAME, COHORT, member=False))
        c.post("/identify", json=payloads.identify("u9", "Whales", "c7", member=True))
        c.post("/lists/77/add", json=payloads.list_members(["u1"]))  # 404, journaled only
    return [first, second], [KEY, other_key]


@pytest.mark.parametrize("compact", [False, True])
def test_a_restart_reproduces_lists_members_and_traits(
    partner_server_factory: PartnerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compact: bool,
) -> None:
    if compact:
        monkeypatch.setattr(partner_database, "COMPACT_AFTER", 1)
    db = str(tmp_path / "receiver.sqlite")
    first = partner_server_factory(api_key=PARTNER_KEY, db=db)
    list_ids, keys = fill(first)
    before = everything(first, list_ids, keys)
    assert before["lists"][0]["members"] == ["u2", "u3", "u4", "u5"]
    assert before["traits"][0] == {"key": KEY, "true": ["u2"], "false": ["u1"]}
    first.stop()
    second = partner_server_factory(api_key=PARTNER_KEY, db=db)
    assert everything(second, list_ids, keys) == before
    with sqlite3.connect(db) as conn:
        (ops,) = conn.execute("SELECT count(*) FROM ops").fetchone()
        (chunks,) = conn.execute("SELECT count(*) FROM snapshot_members").fetchone()
    assert (ops, chunks > 0) == ((0, True) if compact else (8, False))
    with client(second) as c:
        body = payloads.list_members(["u6"])
        assert c.post(f"/lists/{list_ids[0]}/add", json=body).json()["size"] == 5
    after = everything(second, list_ids, keys)
    second.stop()
    third = partner_server_factory(api_key=PARTNER_KEY, db=db)
    assert everything(third, list_ids, keys) == after
    with client(third) as c:
        assert new_list(c, "Third") not in list_ids


def test_a_reset_is_stored_too(partner_server_factory: PartnerFactory, tmp_path: Path) -> None:
    db = str(tmp_path / "receiver.sqlite")
    first = partner_server_factory(api_key=PARTNER_KEY, db=db)
    list_ids, _ = fill(first)
    assert httpx.post(f"{first.url}/_cohortctl/reset").json() == {"ok": True}
    first.stop()
    second = partner_server_factory(api_key=PARTNER_KEY, db=db)
    assert view(second, "state")["lists"] == []
    assert view(second, "journal")["requests"] == []
    with client(second) as c:
        assert new_list(c) not in list_ids  # list ids are never reused


def test_a_database_of_the_earlier_layout_is_migrated(
    partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            """
            CREATE TABLE lists (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                                created_at REAL NOT NULL, size INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE members (list_id INTEGER NOT NULL, user_id TEXT NOT NULL,
                                  PRIMARY KEY (list_id, user_id)) WITHOUT ROWID;
            CREATE TABLE traits (key TEXT NOT NULL, user_id TEXT NOT NULL,
                                 value INTEGER NOT NULL, updated_at REAL NOT NULL,
                                 PRIMARY KEY (key, user_id)) WITHOUT ROWID;
            """
        )
        conn.execute("INSERT INTO lists(name, created_at, size) VALUES (?, 0, 2)", (KEY,))
        conn.executemany("INSERT INTO members VALUES (1, ?)", [("a",), ("b",)])
        conn.execute("INSERT INTO traits VALUES (?, 'a', 0, 0)", (KEY,))
    server = partner_server_factory(api_key=PARTNER_KEY, db=str(db))
    assert view(server, "lists/1") == {"listId": "1", "name": KEY, "members": ["a", "b"]}
    assert view(server, "traits", key=KEY) == {"key": KEY, "true": [], "false": ["a"]}
    with client(server) as c:
        assert c.post("/lists/1/add", json=payloads.list_members(["c"])).json()["size"] == 3
    server.stop()
    again = partner_server_factory(api_key=PARTNER_KEY, db=str(db))
    assert view(again, "lists/1")["members"] == ["a", "b", "c"]


class CommitHook:
    """Wraps a receiver's log writes (on its writer thread): hold them, or make SQLite fail."""

    def __init__(self, store: PartnerStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: PartnerLog = store.log
        self.write = self.log.write
        self.hold = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()
        self.failures = 0
        monkeypatch.setattr(self.log, "write", self._write)

    def _write(self, group: Any) -> None:
        failing = self.failures > 0
        self.failures -= failing
        if self.hold.is_set():
            self.hold.clear()
            self.held.set()
            assert self.release.wait(timeout=30)
        if not failing:
            return self.write(group)
        conn = self.log._conn
        conn.execute("PRAGMA query_only = ON")  # SQLite itself refuses the writes
        try:
            return self.write(group)
        finally:
            conn.execute("PRAGMA query_only = OFF")


def receiver_store(server: BackgroundServer) -> PartnerStore:
    assert server.app is not None
    store = server.app[RECEIVER_KEY].store
    assert store is not None
    return store


def test_a_failed_commit_answers_5xx_and_keeps_nothing(
    partner_server_factory: PartnerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "receiver.sqlite")
    server = partner_server_factory(api_key=PARTNER_KEY, db=db)
    hook = CommitHook(receiver_store(server), monkeypatch)
    with client(server) as c:
        list_id = new_list(c)
        assert c.post(f"/lists/{list_id}/add", json=payloads.list_members(["a"])).is_success
        hook.failures = 1
        failed = c.post(f"/lists/{list_id}/add", json=payloads.list_members(["b", "c"]))
        assert failed.status_code == 500
        assert failed.json()["error"] == "storage failure"
        hook.failures = 1
        assert c.post("/identify", json=GOOD_IDENTIFY).status_code == 500
        hook.failures = 1
        assert c.post("/lists", json=payloads.list_create("New", "c9")).status_code == 500
    assert view(server, f"lists/{list_id}")["members"] == ["a"]
    state = view(server, "state")
    assert [item["name"] for item in state["lists"]] == [KEY]
    assert state["traits"] == {"users": 0, "keys": []}
    assert state["counters"]["by_status"] == {"200": 2, "500": 3}
    with client(server) as c:  # the next commits work, and the next list gets the next id
        assert c.post(f"/lists/{list_id}/add", json=payloads.list_members(["c"])).is_success
        assert new_list(c, "New") == str(int(list_id) + 1)
    before = everything(server, [list_id], [KEY])
    server.stop()
    assert everything(partner_server_factory(db=db), [list_id], [KEY]) == before


def test_a_group_commit_acknowledges_nothing_it_could_not_commit(
    partner_server_factory: PartnerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY)
    store = receiver_store(server)
    hook = CommitHook(store, monkeypatch)
    with client(server) as c:
        list_id = new_list(c)
    add = f"/lists/{list_id}/add"

    def post(ids: list[str]) -> int:
        with client(server) as c:
            return c.post(add, json=payloads.list_members(ids)).status_code

    queued = threading.Semaphore(0)
    submit = store._submit

    async def counted(change: Any) -> Any:
        task = asyncio.ensure_future(submit(change))
        await asyncio.sleep(0)  # the task's first step (it queues the change) ran before this
        queued.release()
        return await task

    monkeypatch.setattr(store, "_submit", counted)
    hook.hold.set()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, ["a"])
        assert hook.held.wait(timeout=30)  # the first add's commit is under way, held
        others = [pool.submit(post, [f"b{n}", "a"]) for n in range(3)]
        assert all(queued.acquire(timeout=30) for _ in range(4))  # the first add's, then 3
        assert store.pending == 3  # queued behind the held commit: one group
        hook.failures = 1
        hook.release.set()
        statuses = [first.result(timeout=30)] + [f.result(timeout=30) for f in others]
    assert statuses == [200, 500, 500, 500]
    assert view(server, f"lists/{list_id}")["members"] == ["a"]
    assert view(server, "state")["lists"][0]["size"] == 1


def test_reset_forgets_everything(partner_server: BackgroundServer) -> None:
    with client(partner_server) as c:
        new_list(c)
        assert httpx.post(f"{partner_server.url}/_cohortctl/reset").json() == {"ok": True}
    assert view(partner_server, "state") == {
        "lists": [],
        "traits": {"users": 0, "keys": []},
        "counters": {"requests": 0, "by_status": {}, "users_received": 0},
    }


def test_unknown_routes_and_methods(partner_server: BackgroundServer) -> None:
    with client(partner_server) as c:
        assert c.post("/nowhere", json={}).status_code == 404
        assert c.get("/lists").status_code == 405
    bad_limit = httpx.get(f"{partner_server.url}/_cohortctl/journal", params={"limit": "x"})
    assert bad_limit.status_code == 400
    assert httpx.get(f"{partner_server.url}/_cohortctl/traits").status_code == 400


def test_settings_reject_impossible_values() -> None:
    for bad in (
        {"auth": "digest"},
        {"fail_rate": 2},
        {"reset_rate": -0.1},
        {"rate_limit": 0},
        {"fail_status": 42},
        {"delay_ms": -1},
    ):
        with pytest.raises(ValueError):
            ReceiverSettings(**bad)
    assert ReceiverSettings(known_users=["a"]).known_users == frozenset({"a"})  # type: ignore[arg-type]
