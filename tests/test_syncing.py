"""Sync orchestration over real HTTP on 127.0.0.1: the embedded receiver and an independent one.

The independent receiver (:class:`FlakyPartner`) is written here from the spec alone, keeps
membership in memory, refuses any batch over the batch size, and injects 429s (with
``Retry-After``), 503s and dropped connections on a fixed schedule.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from cohortctl.http.fast import Answer
from cohortctl.partner import payloads
from cohortctl.partner.destination import AuthMode, Destination
from cohortctl.partner.templates import Template
from cohortctl.retry import RetryPolicy
from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync.dry_run import plan_cohort
from cohortctl.sync.hooks import SyncHooks
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.results import FAILED, INTERRUPTED, OK, SyncRun
from cohortctl.sync.run import sync_cohort
from cohortctl.sync.schedule import run_schedule, sync_all
from cohortctl.sync.settings import SyncMode, SyncSettings
from cohortctl.sync.state import ADD, REMOVE, SyncState, plan_diff
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory

FAST = RetryPolicy(retries=30, base_delay=0.001, max_delay=0.004)
NAME, COHORT_ID = "Power Users", "c42"
TRAIT = payloads.cohort_label(NAME, COHORT_ID)
BIG = 200_000


def users(start: int, stop: int) -> list[str]:
    return [f"user-{i:07d}" for i in range(start, stop)]


def cohort_file(tmp_path: Path, ids: list[str]) -> CohortSpec:
    """The test cohort, its snapshot ``ids`` written to ``c.txt``."""
    return CohortSpec(NAME, COHORT_ID, str(write_ids(tmp_path / "c.txt", ids)))


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def delta(ids: list[str]) -> list[str]:
    """10% of ``ids`` leave, 10% new users join."""
    n = len(ids)
    return [u for i, u in enumerate(ids) if i % 10 != 3] + users(n, n + n // 10)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def destination(url: str, **kwargs: Any) -> Destination:
    return Destination(base_url=url, auth=AuthMode.basic, api_key=PARTNER_KEY, **kwargs)


def settings(tmp_path: Path, mode: SyncMode, **kwargs: Any) -> SyncSettings:
    return SyncSettings(mode=mode, state_path=tmp_path / "state.sqlite", **kwargs)


# -- an independent receiver ------------------------------------------------------------------

DROP = "drop"
Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


@dataclass
class FlakyPartner:
    """Lists and traits in memory; every ``every``-th request gets the next injected fault."""

    batch_size: int = 1000
    every: int = 7
    faults: tuple[int | str, ...] = (429, 503, DROP)
    fail_users: set[str] = field(default_factory=set)  # 503 for any batch holding one of them
    reject_users: dict[str, int] = field(default_factory=dict)  # final status per user
    lists: dict[str, set[str]] = field(default_factory=dict)
    traits: dict[str, bool] = field(default_factory=dict)
    requests: int = 0
    injected: int = 0
    largest: int = 0
    bodies: list[Any] = field(default_factory=list)
    keep_bodies: bool = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/lists", self._faulty(self.create))
        app.router.add_post("/lists/{list_id}/{op}", self._faulty(self.members))
        app.router.add_post("/batch", self._faulty(self.identify))
        app.router.add_post("/identify", self._faulty(self.identify))
        return app

    def _faulty(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """``handler`` with its JSON body, behind the injected faults."""

        async def handle(request: web.Request) -> web.StreamResponse:
            fault = self._fault(request)
            if fault is not None:
                return fault
            return await handler(request, await request.json())

        return handle

    def _fault(self, request: web.Request) -> web.Response | None:
        self.requests += 1
        if self.every and self.requests % self.every == 0:
            fault = self.faults[self.injected % len(self.faults)]
            self.injected += 1
            if fault == DROP:
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=599)
            headers = {"Retry-After": "0"} if fault == 429 else None
            return web.json_response({"error": "injected"}, status=int(fault), headers=headers)
        return None

    async def create(self, request: web.Request, body: Any) -> web.StreamResponse:
        list_id = f"L{len(self.lists) + 1}"
        self.lists[list_id] = set()
        assert body["name"].startswith("[Amplitude] ")
        return web.json_response({"listId": list_id})

    def _check(self, ids: list[str]) -> web.Response | None:
        self.largest = max(self.largest, len(ids))
        if len(ids) > self.batch_size:
            return web.json_response({"error": "batch too large"}, status=413)
        if self.fail_users.intersection(ids):
            return web.json_response({"error": "down for these"}, status=503)
        for uid in ids:
            if uid in self.reject_users:
                return web.json_response({"error": "no"}, status=self.reject_users[uid])
        return None

    async def members(self, request: web.Request, body: Any) -> web.StreamResponse:
        if self.keep_bodies:
            self.bodies.append(body)
        ids = body.get("userIds", body.get("user_ids"))
        problem = self._check(ids)
        if problem is not None:
            return problem
        members = self.lists.get(request.match_info["list_id"])
        if members is None:
            return web.json_response({"error": "unknown list"}, status=404)
        if request.match_info["op"] == "add":
            members.update(ids)
        else:
            members.difference_update(ids)
        return web.json_response({"ok": True})

    async def identify(self, request: web.Request, body: Any) -> web.StreamResponse:
        calls = body.get("batch", [body])
        problem = self._check([c["userId"] for c in calls])
        if problem is not None:
            return problem
        for call in calls:
            self.traits[call["userId"]] = call["traits"][TRAIT]
        return web.json_response({"ok": True})


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyPartner, str]]:
    partner = FlakyPartner()
    with BackgroundServer(partner.app) as server:
        yield partner, server.url


@pytest.fixture
def steady(flaky: tuple[FlakyPartner, str]) -> tuple[FlakyPartner, str]:
    """The receiver without injected faults."""
    flaky[0].every = 0
    return flaky


# -- the embedded receiver ----------------------------------------------------------------------


def receiver_members(url: str, list_id: str) -> set[str]:
    return set(get_json(f"{url}/_cohortctl/lists/{list_id}")["members"])


def receiver_traits(url: str) -> dict[str, list[str]]:
    return get_json(f"{url}/_cohortctl/traits?key={urllib.parse.quote(TRAIT)}")  # type: ignore[no-any-return]


def journal(url: str) -> list[dict[str, Any]]:
    return get_json(f"{url}/_cohortctl/journal?limit=10000")["requests"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", [SyncMode.list, SyncMode.property])
def test_first_sync_then_delta_leaves_the_receiver_holding_the_snapshot(
    tmp_path: Path, partner_server: BackgroundServer, mode: SyncMode
) -> None:
    url = partner_server.url
    first = users(0, BIG)
    snapshot = write_ids(tmp_path / "cohort.txt", first)
    cohort = CohortSpec(NAME, COHORT_ID, str(snapshot))
    config = settings(tmp_path, mode)

    result = sync_cohort(destination(url), cohort, config)
    assert result.status == OK and result.added == BIG and result.removed == 0
    assert result.report.requests == BIG // 1000 + (mode is SyncMode.list)

    second = delta(first)
    write_ids(snapshot, second)
    again = sync_cohort(destination(url), cohort, config)
    assert again.status == OK
    assert (again.entered, again.left) == (BIG // 10, BIG // 10)
    assert (again.added, again.removed) == (BIG // 10, BIG // 10)
    assert again.report.requests == 2 * (BIG // 10) // 1000

    if mode is SyncMode.list:
        assert result.list_created and again.list_id == result.list_id
        assert receiver_members(url, str(again.list_id)) == set(second)
    else:
        traits = receiver_traits(url)
        assert set(traits["true"]) == set(second)
        assert set(traits["false"]) == set(first) - set(second)
    sizes = [r["users"] for r in journal(url) if r["path"] != "/lists"]
    assert sizes and max(sizes) <= 1000
    with SyncState.open(config.state_file, again.destination) as state:
        assert set(state.members()) == set(second)


@pytest.mark.parametrize("mode", [SyncMode.list, SyncMode.property])
def test_429_503_and_resets_from_the_embedded_receiver_still_converge(
    tmp_path: Path, partner_server_factory: PartnerFactory, mode: SyncMode
) -> None:
    server = partner_server_factory(
        api_key=PARTNER_KEY,
        fail_rate=0.1,
        fail_status=503,
        reset_rate=0.05,
        rate_limit=3000,
        seed=7,
    )
    first = users(0, 50_000)
    snapshot = write_ids(tmp_path / "cohort.txt", first)
    cohort = CohortSpec(NAME, COHORT_ID, str(snapshot))
    config = settings(tmp_path, mode, policy=FAST, workers=8)
    result = sync_cohort(destination(server.url), cohort, config)
    assert result.status == OK, result.report.failed_by
    assert result.report.retries > 0
    assert {"503", "connection reset"} <= set(result.report.attempt_failures)
    second = delta(first)
    write_ids(snapshot, second)
    assert sync_cohort(destination(server.url), cohort, config).status == OK
    if mode is SyncMode.list:
        assert receiver_members(server.url, str(result.list_id)) == set(second)
    else:
        assert set(receiver_traits(server.url)["true"]) == set(second)


@pytest.mark.parametrize("mode", [SyncMode.list, SyncMode.property])
def test_independent_receiver_with_faults_converges_at_200k(
    tmp_path: Path, flaky: tuple[FlakyPartner, str], mode: SyncMode
) -> None:
    partner, url = flaky
    first = users(0, BIG)
    snapshot = write_ids(tmp_path / "cohort.txt", first)
    cohort = CohortSpec(NAME, COHORT_ID, str(snapshot))
    config = settings(tmp_path, mode, policy=FAST, workers=16)
    assert sync_cohort(destination(url), cohort, config).status == OK
    second = delta(first)
    write_ids(snapshot, second)
    result = sync_cohort(destination(url), cohort, config)
    assert result.status == OK
    failures = result.report.attempt_failures
    assert {"429", "503", "connection reset"} <= set(failures), failures
    assert partner.largest <= 1000
    if mode is SyncMode.list:
        assert list(partner.lists) == ["L1"] and partner.lists["L1"] == set(second)
    else:
        assert {u for u, v in partner.traits.items() if v} == set(second)
        assert {u for u, v in partner.traits.items() if not v} == set(first) - set(second)


def test_exhausted_retries_fail_the_batch_and_the_next_run_sends_exactly_the_rest(
    tmp_path: Path, steady: tuple[FlakyPartner, str]
) -> None:
    partner, url = steady
    ids = users(0, 5_000)
    partner.fail_users = {ids[2_500]}  # batch 2 answers 503 every time
    cohort = cohort_file(tmp_path, ids)
    config = settings(tmp_path, SyncMode.list, policy=RetryPolicy(2, 0.001, 0.001))
    result = sync_cohort(destination(url), cohort, config)
    assert result.status == FAILED
    assert result.report.failed_by == {"503": 1}
    (failure,) = result.report.failures
    assert (failure.key, failure.attempts, len(failure.user_ids)) == ("list-add:2", 3, 1000)
    assert result.retry_file is not None and result.retry_users == 1000
    assert Path(result.retry_file).read_text().split() == ids[2000:3000]
    assert result.added == 4_000

    partner.fail_users = set()
    partner.keep_bodies = True
    again = sync_cohort(destination(url), cohort, config)
    assert again.status == OK and again.entered == 1000 and again.report.requests == 1
    assert partner.bodies[0]["userIds"] == ids[2000:3000]
    assert partner.lists["L1"] == set(ids)
    assert not Path(result.retry_file).exists()  # a stale retry file is removed


def test_400_and_404_are_reported_per_batch_without_retries(
    tmp_path: Path, steady: tuple[FlakyPartner, str]
) -> None:
    partner, url = steady
    ids = users(0, 3_000)
    partner.reject_users = {ids[10]: 404, ids[2_999]: 400}
    cohort = cohort_file(tmp_path, ids)
    retry_file = tmp_path / "failed.txt"
    config = settings(tmp_path, SyncMode.list, retry_file=retry_file)
    result = sync_cohort(destination(url), cohort, config)
    assert result.status == FAILED
    assert result.report.retries == 0
    assert {f.key: f.reason for f in result.report.failures} == {
        "list-add:0": "404",
        "list-add:2": "400",
    }
    assert retry_file.read_text().split() == ids[0:1000] + ids[2000:3000]
    assert result.to_dict()["failures"][0]["users"] == 1000


def test_the_default_retry_schedule_is_amplitudes(
    tmp_path: Path, steady: tuple[FlakyPartner, str]
) -> None:
    partner, url = steady
    ids = users(0, 10)
    partner.fail_users = {ids[0]}
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    cohort = cohort_file(tmp_path, ids)
    result = sync_cohort(
        destination(url), cohort, settings(tmp_path, SyncMode.list), SyncHooks(sleep=sleep)
    )
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128]
    assert result.report.retry_delays == waits
    assert result.to_dict()["delivery"]["retry_delays_s"] == waits
    assert result.report.requests == 1 + 9  # list-create, then 1 + 8 retries


def test_payload_template_is_used_for_add_and_remove(
    tmp_path: Path, steady: tuple[FlakyPartner, str]
) -> None:
    partner, url = steady
    partner.keep_bodies = True
    template = Template('{"user_ids": $items, "cohort": "$amplitude_cohort_id"}', "t.json")
    ids = users(0, 1500)
    snapshot = write_ids(tmp_path / "c.txt", ids)
    cohort = CohortSpec(NAME, COHORT_ID, str(snapshot))
    config = settings(
        tmp_path,
        SyncMode.list,
        templates={payloads.LIST_ADD: template, payloads.LIST_REMOVE: template},
    )
    assert sync_cohort(destination(url), cohort, config).status == OK
    write_ids(snapshot, ids[:1000])
    assert sync_cohort(destination(url), cohort, config).status == OK
    assert partner.bodies[0] == {"user_ids": ids[:1000], "cohort": COHORT_ID}
    assert partner.lists["L1"] == set(ids[:1000])


def test_single_identify_calls_with_no_batch(
    tmp_path: Path, steady: tuple[FlakyPartner, str]
) -> None:
    partner, url = steady
    ids = users(0, 50)
    cohort = cohort_file(tmp_path, ids)
    config = settings(tmp_path, SyncMode.property, batch=False)
    result = sync_cohort(destination(url), cohort, config)
    assert result.status == OK and result.report.requests == 50
    assert partner.largest == 1 and set(partner.traits) == set(ids)


def test_plan_with_two_cohorts_syncs_each_with_its_own_requests(
    tmp_path: Path, partner_server: BackgroundServer
) -> None:
    a = CohortSpec("A", "ca", str(write_ids(tmp_path / "a.txt", users(0, 1500))))
    b = CohortSpec("B", "cb", str(write_ids(tmp_path / "b.txt", users(1000, 1200))))
    run = sync_all(destination(partner_server.url), [a, b], settings(tmp_path, SyncMode.list))
    assert run.ok and [c.added for c in run.cohorts] == [1500, 200]
    lists = get_json(f"{partner_server.url}/_cohortctl/state")["lists"]
    assert [(x["name"], x["size"]) for x in lists] == [
        ("[Amplitude] A: ca", 1500),
        ("[Amplitude] B: cb", 200),
    ]


def test_dry_run_sends_nothing_and_creates_no_state(
    tmp_path: Path, partner_server: BackgroundServer
) -> None:
    cohort = CohortSpec(NAME, COHORT_ID, str(write_ids(tmp_path / "c.txt", users(0, 2500))))
    config = settings(tmp_path, SyncMode.list)
    plan = plan_cohort(destination(partner_server.url), cohort, config)
    assert plan.calls == {payloads.LIST_CREATE: 1, payloads.LIST_ADD: 3}
    assert plan.first_requests[1]["body"]["userIds"][0] == "user-0000000"
    assert journal(partner_server.url) == []
    assert not config.state_file.exists()


def test_schedule_repeats_until_max_runs_with_injected_sleep() -> None:
    waits: list[float] = []
    announced: list[float] = []
    now = [1000.0]

    def run_once(number: int) -> SyncRun:
        now[0] += 5
        return SyncRun()

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    runs = run_schedule(
        run_once,
        every=3600,
        max_runs=3,
        sleep=sleep,
        clock=lambda: now[0],
        on_wait=announced.append,
    )
    assert len(runs) == 3
    assert waits == [3595, 3595]
    assert announced == [4600, 8200]
    assert len(run_schedule(run_once, every=None, sleep=sleep, clock=lambda: now[0])) == 1


def test_a_batch_in_flight_at_ctrl_c_does_not_stay_at_the_partner_after_the_next_run(
    tmp_path: Path, steady: tuple[FlakyPartner, str]
) -> None:
    """Ctrl-C while an add's answer is on its way: the partner applied it, the state does not
    know; the next run must not leave those users at the partner when they left the cohort."""
    partner, url = steady
    cohort = cohort_file(tmp_path, users(0, 3000))
    config = settings(tmp_path, SyncMode.list, batch_size=500, workers=1)
    cut = CutOffTransport(after_adds=3)
    first = sync_cohort(destination(url), cohort, config, SyncHooks(transport=cut))
    assert first.status == INTERRUPTED and first.added == 1000
    assert len(partner.lists["L1"]) == 1500  # the third add arrived, its answer did not

    write_ids(Path(cohort.snapshot), users(2000, 2600))
    second = sync_cohort(destination(url), cohort, config)
    assert second.status == OK
    assert partner.lists["L1"] == set(users(2000, 2600))
    with SyncState.open(config.state_file, second.destination) as state:
        assert sorted(state.members()) == users(2000, 2600)


class CutOffTransport:
    """Sends for real; after the ``after_adds``-th list-add was answered, Ctrl-C (the answer
    never reaches the sync)."""

    def __init__(self, after_adds: int) -> None:
        self.after_adds = after_adds
        self.adds = 0

    async def send(self, method: str, url: str, body: bytes) -> Answer:
        async with httpx.AsyncClient() as client:
            response = await client.request(
                method, url, content=body, headers={"Content-Type": "application/json"}
            )
        if url.endswith("/add"):
            self.adds += 1
            if self.adds == self.after_adds:
                raise KeyboardInterrupt
        return Answer(response.status_code, response.content)

    async def close(self) -> None:
        return None


def test_a_stopped_runs_unconfirmed_batches_are_settled_by_the_next_diff(tmp_path: Path) -> None:
    with SyncState.open(tmp_path / "s.sqlite", "k") as state:
        state.confirm_added(["a", "b"])
        # A run planned to remove a and add c, then stopped before either was confirmed.
        state.plan_batches(REMOVE, ["a"], 10)
        state.plan_batches(ADD, ["c"], 10)
        back = plan_diff(["a", "b"], state)  # a stays, c is not in the cohort
        assert (back.entered, back.left) == (["a"], ["c"])
        same = plan_diff(["b", "c"], state)  # a left, c is in the cohort
        assert (same.entered, same.left) == (["c"], ["a"])
