"""check holds list-create to what Amplitude's readers take (spec part B); answers labelled."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partners.fixtures import Receiver, write_ids

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
GOOD = "Basic " + base64.b64encode(f"{PARTNER_KEY}:".encode()).decode()


def shaped(
    answer: Callable[[str], Any],
) -> tuple[Callable[[], web.Application], dict[str, set[str]]]:
    """A lenient list receiver whose create answers ``answer(list_id)``."""
    lists: dict[str, set[str]] = {}

    async def create(request: web.Request) -> web.StreamResponse:
        list_id = f"L{len(lists) + 1}"
        lists[list_id] = set()
        return web.json_response(answer(list_id))

    async def change(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization", "") != GOOD:
            return web.json_response({"error": "bad key"}, status=401)
        list_id = request.match_info["list_id"]
        if list_id not in lists:
            return web.json_response({"error": "unknown list"}, status=404)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"code": "E_JSON"}, status=400)
        if "userIds" not in body:
            return web.json_response({"code": "E_FIELD"}, status=400)
        return web.json_response({})

    def app() -> web.Application:
        a = web.Application()
        a.router.add_post("/lists", create)
        a.router.add_post("/lists/{list_id}/{op}", change)
        return a

    return app, lists


def _check(cli: RunCli, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("check", "--url", url, "--batch-size", "3", "-o", "json", *args, env=ENV)
    return result.exit_code, json.loads(result.stdout)


def _case(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in data["cases"] if c["name"] == name)


@pytest.mark.parametrize("key", ["id", "list_id", "data.id"])
def test_an_id_only_under_a_fallback_name_fails(cli: RunCli, receiver: Receiver, key: str) -> None:
    def answer(list_id: str) -> Any:
        return {"data": {"id": list_id}} if key == "data.id" else {key: list_id}

    app, _ = shaped(answer)
    code, data = _check(cli, receiver(app).url)
    create = _case(data, "list-create accepted")
    assert code == 1 and create["result"] == "fail"
    assert (
        f"only under '{key}'" in create["detail"] and "Amplitude reads 'listId'" in create["detail"]
    )
    assert _case(data, "list-add accepted")["result"] == "pass"  # the run still goes on
    code, data = _check(cli, receiver(app).url, "--list-id-path", key)
    assert _case(data, "list-create accepted")["result"] == "pass"
    assert f"response.{key}" in data["warnings"][0]


def test_flat_only_is_a_warning_and_both_readers_shape_passes_clean(
    cli: RunCli, receiver: Receiver
) -> None:
    flat, _ = shaped(lambda list_id: {"listId": list_id})
    code, data = _check(cli, receiver(flat).url)
    assert code == 0
    assert len(data["warnings"]) == 1
    assert '{"listId": "L", "response": {"listId": "L"}}' in data["warnings"][0]
    both, _ = shaped(lambda list_id: {"listId": list_id, "response": {"listId": list_id}})
    code, data = _check(cli, receiver(both).url)
    assert code == 0 and data["warnings"] == []


def test_the_embedded_receiver_answers_the_shape_both_readers_take(
    cli: RunCli, partner_server: Any
) -> None:
    code, data = _check(cli, partner_server.url)
    assert code == 0 and data["warnings"] == []


def test_mock_and_sync_read_a_fallback_but_warn(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    app, _lists = shaped(lambda list_id: {"id": list_id})
    server = receiver(app)
    result = cli("mock", "flow", "--url", server.url, "-o", "json", env=ENV)
    assert result.exit_code == 0, result.output
    create = json.loads(result.stdout)["results"][0]
    assert (
        create["extra"]["list_id"] == "L1"
        and "Amplitude reads 'listId'" in create["extra"]["warning"]
    )
    snapshot = write_ids(tmp_path / "s.txt", ["a", "b"])
    result = cli("sync", str(snapshot), "--url", server.url, "--cohort-name", "C", "--cohort-id",
                 "c1", "--state", str(tmp_path / "s.db"), env=ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: the list id is only under 'id'" in result.stderr


def test_classifications_label_answers_and_check_lists_the_unclassified(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    app, _ = shaped(lambda list_id: {"listId": list_id, "response": {"listId": list_id}})
    server = receiver(app)
    file = tmp_path / "d.yaml"
    file.write_text(
        "name: shaped\ncalls:\n  list-create: {path: /lists}\n"
        "  list-add: {path: '/lists/$listId/add'}\n  list-remove: {path: '/lists/$listId/remove'}\n"
        "errors:\n  - {status: 400, sub_code: E_JSON, reason: Not JSON}\n"
        "  - {status: 400, sub_code: E_FIELD, reason: Missing userIds, message: send userIds}\n",
        encoding="utf-8",
    )
    code, data = _check(cli, server.url, "--destination", str(file))
    assert code == 0, data
    assert _case(data, "list-add rejects malformed JSON")["actual"] == "400 Not JSON"
    missing = _case(data, "list-add rejects a body without userIds")
    assert missing["actual"] == "400 Missing userIds: send userIds"
    assert data["unclassified"] == [401, 404]
    result = cli("check", "--url", server.url, "--destination", str(file), "--batch-size", "2",
                 env=ENV)  # fmt: skip
    assert "unclassified: 401, 404" in result.stderr


def test_a_404_page_or_a_404_to_list_create_is_no_such_route(
    cli: RunCli, receiver: Receiver
) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="<html><h1>Not Found</h1></html>",
                            content_type="text/html")  # fmt: skip

    def app() -> web.Application:
        a = web.Application()
        a.router.add_route("*", "/{tail:.*}", page)
        return a

    server = receiver(app)
    result = cli("mock", "list-add", "--url", server.url, "--list-id", "L", "-o", "json", env=ENV)
    assert json.loads(result.stdout)["results"][0]["meaning"] == (
        "no such route (check the base URL and paths)"
    )
