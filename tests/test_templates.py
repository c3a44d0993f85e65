from __future__ import annotations

import json
from pathlib import Path

import pytest

from cohortctl.errors import InputError
from cohortctl.partner import payloads
from cohortctl.partner.templates import (
    BUILTIN_VARIABLES,
    Template,
    Unresolved,
    parse_var,
    parse_vars,
    render_url,
    variables,
)


def values(**overrides: object) -> dict[str, object]:
    base = variables(
        ids=["u1", "u2"],
        cohort_name="Churn risk",
        cohort_id="c9",
        list_id="L1",
        member=True,
        custom={"app": "42", "region": "eu-1"},
    )
    base.update(overrides)
    return base


def test_bare_items_becomes_a_json_array() -> None:
    text, body = Template('{"user_ids": $items}').render(values())
    assert body == {"user_ids": ["u1", "u2"]}
    assert json.loads(text) == body


def test_quoted_items_also_becomes_an_array() -> None:
    assert Template('{"ids": "$items", "b": "${items}"}').render(values())[1] == {
        "ids": ["u1", "u2"],
        "b": ["u1", "u2"],
    }


def test_items_inside_a_longer_string_are_comma_joined() -> None:
    assert Template('{"q": "ids=$items"}').render(values())[1] == {"q": "ids=u1,u2"}


def test_variables_inside_strings_are_json_escaped() -> None:
    tricky = 'a "quoted" \\ back\nslash'
    body = Template('{"x": "<$userId>", "y": "$listId"}').render(
        values(userId=tricky, listId='L"1')
    )[1]
    assert body == {"x": f"<{tricky}>", "y": 'L"1'}


def test_cohort_name_is_slugified() -> None:
    name = "Café au lait: top 10% ✓"
    body = Template('{"n": "$amplitude_cohort_name", "i": $amplitude_cohort_id}').render(
        variables(ids=["u"], cohort_name=name, cohort_id="123", list_id=None, member=True)
    )[1]
    assert body["n"] == payloads.slugify_cohort_name(name) == "Cafe--au-lait--top-10---"
    assert body["i"] == "123"  # a built-in id stays a string even when it looks numeric


def test_bare_member_custom_json_and_plain_custom_values() -> None:
    body = Template('{"m": $member, "app": $app, "r": $region, "t": "${app}x"}').render(
        values(member=False)
    )[1]
    assert body == {"m": False, "app": 42, "r": "eu-1", "t": "42x"}


def test_dollar_dollar_is_a_literal_dollar_and_escapes_pass_through() -> None:
    body = Template('{"price": "$$5 and $$items", "s": "a\\"$listId"}').render(values())[1]
    assert body == {"price": "$5 and $items", "s": 'a"L1'}


def test_dollar_before_a_non_name_stays() -> None:
    assert Template('{"p": "$5"}').render(values())[1] == {"p": "$5"}


def test_unknown_variable_lists_known_ones() -> None:
    with pytest.raises(InputError) as info:
        Template('{"a": $itemz, "b": "$nope"}', "t.json").render(values())
    message = str(info.value)
    assert message.startswith("t.json: unknown template variable(s) $itemz, $nope")
    for name in BUILTIN_VARIABLES:
        assert f"${name}" in message
    assert "$app" in message


def test_invalid_json_after_substitution_names_file_line_and_column() -> None:
    template = Template('{\n  "user_ids": $items,\n  "x": oops\n}', "partner.json")
    with pytest.raises(InputError) as info:
        template.render(values())
    assert str(info.value).startswith("partner.json:3:")
    assert '"x": oops' in str(info.value)


def test_names_and_from_file(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"a": $items, "b": "$$x ${listId}"}', encoding="utf-8")
    assert Template.from_file(path).names() == {"items", "listId"}
    with pytest.raises(InputError, match="cannot read"):
        Template.from_file(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text(" \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        Template.from_file(tmp_path / "empty.json")


def test_unresolved_list_id_renders_as_placeholder() -> None:
    v = values(listId=Unresolved("{listId}"))
    assert Template('{"l": $listId}').render(v)[1] == {"l": "{listId}"}
    assert render_url("/lists/$listId/add", v) == "/lists/{listId}/add"


def test_render_url_quotes_values() -> None:
    v = values(listId="a/b c", userId="ü@x")
    assert render_url("/lists/$listId/add", v) == "/lists/a%2Fb%20c/add"
    assert render_url("/lists/{listId}/u/${userId}", v) == "/lists/a%2Fb%20c/u/%C3%BC%40x"
    assert render_url("/c/$amplitude_cohort_id?ids=$items&p=$$", v) == "/c/c9?ids=u1%2Cu2&p=$"
    with pytest.raises(InputError, match=r"--path: unknown template variable\(s\) \$cohort"):
        render_url("/x/$cohort", v)


def test_parse_var() -> None:
    assert parse_var("tenant=a=b") == ("tenant", "a=b")
    assert parse_vars(["a=1", "$b=2", "a=3"]) == {"a": "3", "b": "2"}
    for bad in ["novalue", "1a=2", "=x", "a-b=1"]:
        with pytest.raises(InputError, match="--var"):
            parse_var(bad)
    with pytest.raises(InputError, match="built-in"):
        parse_var("items=1")
