"""The webhook template renderer, held byte for byte to real FreeMarker 2.3 (the oracle)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cohortctl.errors import InputError
from cohortctl.partner.webhooks.freemarker import (
    TemplateError,
    WebhookTemplate,
    json_string,
    parse_template,
    render,
)
from tests import freemarker_oracle

BODY: dict[str, Any] = {
    "cohort_name": "My Test Cohort",
    "cohort_id": "7khm89cz",
    "in_cohort": True,
    "computed_time": "1692206763",
    "message_id": "9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0",
    "users": [
        {"user_id": "user_one@example.com", "user_properties": {"plan": "pro", "seats": 12}},
        {"user_id": 'quote"back\\slash</script>', "user_properties": {}},
        {"user_id": "ünïcødé\u2028line\x01ctl", "user_properties": {"a": None, "b": [1, 2.5]}},
    ],
}
LEAVING = {**BODY, "in_cohort": False, "users": [{"user_id": "u1"}]}
EMPTY = {**BODY, "users": []}

DOC_DEFAULT = """{
  "cohort_name": "${input.cohort_name}",
  "cohort_id": "${input.cohort_id}",
  "in_cohort": ${input.in_cohort?c},
  "computed_time": "${input.computed_time}",
  "message_id": "${input.message_id}",
  "users": [
    <#list input.users as user>
    {
      "user_id": "${user.user_id?json_string}",
      "user_properties": ${UtilClass.toJsonString(user.user_properties)}
    }<#if user_has_next>,</#if>
    </#list>
  ]
}
"""
DOC_PER_USER = """[
<#list input.users as user>
  {"cohortId": "${input.cohort_id}", "userId": "${user.user_id?json_string}",
   "inCohort": ${input.in_cohort?c}}<#sep>,</#sep>
</#list>
]"""
DOC_SPEC_LINE = (
    '{"name": "${input.cohort_name}", "in": ${input.in_cohort?c}, "users": ['
    '<#list input.users as user>{"user_id": "${user.user_id?json_string}"}<#sep>,</#list>]}'
)
DOC_USERS_JSON = '{"users": ${UtilClass.toJsonString(input.users)}, "n": "${input.cohort_id}"}'

# (template, input) pairs; each renders (or fails) as real FreeMarker does.
NUMBER = "${input.x} ${input.x?c}"  # a decimal as FreeMarker prints it, and ?c
CASES: list[tuple[str, Any]] = [
    (DOC_DEFAULT, BODY),
    (DOC_DEFAULT, LEAVING | {"users": [{"user_id": "u1", "user_properties": {}}]}),
    (DOC_DEFAULT, EMPTY),
    (DOC_PER_USER, BODY),
    (DOC_PER_USER, EMPTY),
    (DOC_SPEC_LINE, BODY),
    (DOC_USERS_JSON, BODY),
    # ?json_string escaping, character by character
    ("${input.s?json_string}", {"s": "a\"b\\c/d</e<!f<?g]]>h-->i>j'k\tl\nm\rn\x08o\x0cp"}),
    ("${input.s?json_string}", {"s": "/start"}),
    ("${input.s?json_string}", {"s": ">start"}),
    ("${input.s?json_string}", {"s": "-->"}),
    ("${input.s?json_string}", {"s": "a->"}),
    ("${input.s?json_string}", {"s": "ends<"}),
    ("${input.s?json_string}", {"s": "".join(chr(c) for c in range(0, 0x40))}),
    ("${input.s?json_string}", {"s": "".join(chr(c) for c in range(0x7B, 0xB0))}),
    ("${input.s?json_string}", {"s": "\u2027\u2028\u2029\u202a😀€"}),
    ("${input.s?json_string}", {"s": ""}),
    ("${input.n?json_string}", {"n": 1234567}),
    # ?c and ${} of numbers and booleans
    ("${input.t?c} ${input.f?c}", {"t": True, "f": False}),
    ("${input.t?string} ${input.f?string}", {"t": True, "f": False}),
    ('${input.t?string("yes", "no")} ${input.f?string("yes", "no")}', {"t": True, "f": False}),
    ("${input.t}", {"t": True}),
    ("${input.n} ${input.n?c} ${input.n?string}", {"n": 1234567}),
    *[("${input.n} ${input.n?c}", {"n": n}) for n in (-42, 0, 9007199254740993)],
    *[
        (NUMBER, {"x": x})
        for x in (1234.5678, 0.1, 2.5, -3.75, 0.0005, 0.0015, 1e-7, 12345678.9, 3.0, -0.0001)
    ],
    ("${input.s?c}", {"s": "text"}),
    ("${input.s?string}", {"s": "text"}),
    ('${3} ${1.5} ${"lit\\"q"} ${\'single\'}', {}),
    # lists, nesting, sep and has_next
    (
        "<#list input.rows as row>[<#list row as cell>${cell}<#sep>;</#sep></#list>]"
        "<#if row_has_next>|</#if></#list>",
        {"rows": [[1, 2, 3], [], ["a"], [True and "x", "y"]]},
    ),
    ("<#list input.xs as x>${x}<#sep>, </#list>.", {"xs": ["a", "b", "c"]}),
    ("<#list input.xs as x>${x}<#sep>, </#list>.", {"xs": []}),
    ("<#list input.xs as x>${x_index}:${x}<#if x?has_next>+</#if></#list>", {"xs": ["a", "b"]}),
    ("<#list input.xs as x>${x}<#sep>,</#sep>!</#list>", {"xs": ["a", "b"]}),
    (
        "<#list input.a as x><#list input.b as y>${x}${y}<#if x_has_next || y_has_next>,</#if>"
        "</#list></#list>",
        {"a": ["1", "2"], "b": ["x", "y"]},
    ),
    ("<#list input.xs as x>${x.k}</#list>", {"xs": [{"k": "v"}, {"k": "w"}]}),
    # if / elseif / else, conditions
    ("<#if input.b>yes<#else>no</#if>", {"b": True}),
    ("<#if input.b>yes<#else>no</#if>", {"b": False}),
    ("<#if input.n == 1>one<#elseif input.n == 2>two<#else>many</#if>", {"n": 2}),
    ("<#if input.n == 1>one<#elseif input.n == 2>two<#else>many</#if>", {"n": 7}),
    ('<#if input.s == "a" && !input.b>A<#elseif input.s != "a">N</#if>', {"s": "a", "b": False}),
    ('<#if input.s = "a">eq</#if>', {"s": "a"}),
    ("<#if input.x??>has<#else>none</#if>", {"y": 1}),
    ("<#if input.x??>has<#else>none</#if>", {"x": None}),
    ("<#if input.x??>has<#else>none</#if>", {"x": 0}),
    ("<#if (input.a.b)??>has<#else>none</#if>", {}),
    ("<#if input.a.b??>has<#else>none</#if>", {}),
    ("<#if (input.b)>p</#if>", {"b": True}),
    ("<#if input.s>p</#if>", {"s": "true"}),
    ('<#if input.n == "1">p</#if>', {"n": 1}),
    # white-space stripping around tag-only lines
    ("a\n  <#if input.b>\n  x\n  </#if>\nb\n", {"b": True}),
    ("a\n  <#if input.b>x</#if>  \nb", {"b": True}),
    ("  <#-- a comment -->\n  <#if input.b>\r\n\tx\r\n</#if>\n", {"b": True}),
    ("<#list input.xs as x>\n  ${x}\n</#list>\n", {"xs": ["a", "b"]}),
    ("<#list input.xs as x>\n  ${x}<#sep>,\n</#list>\n", {"xs": ["a", "b"]}),
    ("[#if x]literal[/#if] <#-- c --> x", {}),
    ("  ${input.s}  <#if input.b></#if>\n", {"s": "v", "b": True}),
    # UtilClass.toJsonString
    ("${UtilClass.toJsonString(input)}", {"b": True, "l": [1, 2.5, "x", None], "o": {}}),
    ("${UtilClass.toJsonString(input.s)}", {"s": 'q"\n\\'}),
    # more white-space stripping: else/elseif lines, nested blocks, comments, CRLF, tabs
    (
        '{\n  <#if input.b>\n    "a": 1\n  <#elseif input.c>\n    "a": 2\n  <#else>\n'
        '    "a": 3\n  </#if>\n}\n',
        {"b": False, "c": True},
    ),
    (
        "[\n<#list input.xs as x>\n  <#if x_has_next>\n  ${x},\n  <#else>\n  ${x}\n"
        "  </#if>\n</#list>\n]",
        {"xs": ["1", "2", "3"]},
    ),
    ("\t<#list input.xs as x>\r\n\t\t${x}<#sep>,</#sep>\r\n\t</#list>\r\n", {"xs": ["a", "b"]}),
    ("<#-- c1 -->\n<#-- c2 -->\n${input.s}\n<#-- c3 --> \n", {"s": "v"}),
    ("a <#if input.b>x</#if>\n  <#if input.b>\n  y\n  </#if>  \nz", {"b": True}),
    ("<#list input.xs as x>${x}</#list>\n\n  <#if input.b></#if>\n\nend", {"xs": ["a"], "b": True}),
    ("<#if input.b>\n<#list input.xs as x>\n${x}\n</#list>\n</#if>\n", {"b": True, "xs": ["q"]}),
    (
        '<#list input.users as user>\n{"id": "${user.user_id}"}<#sep>,\n</#sep>\n</#list>',
        {"users": [{"user_id": "a"}, {"user_id": "b"}]},
    ),
    # numbers in more shapes
    ("${input.n} ${input.n?c} ${input.n?string}", {"n": 123456789012}),
    ("${input.x?string} ${input.x?json_string}", {"x": 1234.5}),
    *[(NUMBER, {"x": x}) for x in (1e20, 0.123456789012345678, -1234567.891)],
    ("<#if input.n == 2.0>eq<#else>ne</#if>", {"n": 2}),
    ("<#if input.a == input.b>eq<#else>ne</#if>", {"a": "x", "b": "x"}),
    ("<#if !input.a && (input.b || input.c)>yes</#if>", {"a": False, "b": False, "c": True}),
    ("<#if input.t == true>t</#if>", {"t": True}),
    # toJsonString of nested and unusual values
    ("${UtilClass.toJsonString(input.o)}", {"o": {"a": {"b": [1, {"c": "d"}]}, "e": []}}),
    ("${UtilClass.toJsonString(input.o)}", {"o": {"q": "\u2028<\\/script>\u00e9"}}),
    ("${UtilClass.toJsonString(input.l)}", {"l": [True, False, 0, -5, 2.25]}),
    (
        "<#list input.users as u>${UtilClass.toJsonString(u)}<#sep>;</#list>",
        {"users": [{"user_id": "a", "user_properties": {}}, {"user_id": "b"}]},
    ),
    # string literal escapes
    ('${"tab\\tnl\\nq\\"a\\\\"}', {}),
    ("${'it\\'s'}", {}),
    # missing values
    ("${input.nope}", {}),
    ("${input.a.b}", {"a": {}}),
    ("${input.o}", {"o": {"k": 1}}),
    ("<#list input.o as x>${x}</#list>", {"o": "str"}),
]


@pytest.fixture(scope="module")
def oracle() -> list[dict[str, Any]]:
    reason = freemarker_oracle.missing_reason()
    if reason is not None:
        pytest.skip(f"FreeMarker oracle unavailable: {reason}")
    return freemarker_oracle.render_all(CASES)


def _ours(template: str, data: Any) -> dict[str, Any]:
    try:
        return {"ok": True, "output": render(parse_template(template), {"input": data})}
    except TemplateError as exc:
        return {"ok": False, "error": exc.message}


@pytest.mark.parametrize("index", range(len(CASES)))
def test_renders_as_real_freemarker(index: int, oracle: list[dict[str, Any]]) -> None:
    template, data = CASES[index]
    expected = oracle[index]
    ours = _ours(template, data)
    if expected["ok"]:
        assert ours == {"ok": True, "output": expected["output"]}, template
    else:
        assert not ours["ok"], f"FreeMarker refuses it ({expected['error'][:120]}), we rendered"


def test_the_doc_templates_render_valid_json() -> None:
    for template in (DOC_DEFAULT, DOC_PER_USER, DOC_SPEC_LINE, DOC_USERS_JSON):
        text, body = WebhookTemplate.parse(template, "doc.ftl").render(BODY)
        assert json.loads(text) == body


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{\n<#assign x = 1>\n}", "doc.ftl:2: <#assign> is not supported"),
        ('{"a": "${input.cohort_name?upper_case}"}', "doc.ftl:1: the built-in ?upper_case"),
        ('{"a": "${input.a + input.b}"}', "the + operator"),
        ('{"a": "${input.a!"x"}"}', "the default value operator"),
        ("<@my.macro/>", "user-defined directive <@my.macro>"),
        ("#{input.n}", "#{...}"),
        ("\n\n<#if input.in_cohort>", "doc.ftl:3: <#if> is not closed"),
        ("<#list input.users as k, v></#list>", "<#list ... as key, value>"),
        ("<#if input.a gt 1>x</#if>", "the gt comparison"),
        ("<#if input.a > 1>x</#if>", "doc.ftl:1"),
        ("<#sep>", "<#sep> outside <#list>"),
        ("${UtilClass.other(input)}", "UtilClass only has toJsonString"),
    ],
)
def test_unsupported_constructs_name_the_construct_and_line(template: str, named: str) -> None:
    with pytest.raises(InputError) as caught:
        WebhookTemplate.parse(template, "doc.ftl").render(BODY)
    assert named in str(caught.value)


def test_output_that_is_not_json_shows_where() -> None:
    template = WebhookTemplate.parse('{"users": [<#list input.users as u>"${u.user_id}"</#list>]}')
    with pytest.raises(TemplateError) as caught:
        template.render({"users": [{"user_id": "a"}, {"user_id": "b"}]})
    message = str(caught.value)
    assert "not JSON" in message and "line 1 column" in message and '"a""b"' in message


def test_json_string_leaves_plain_text_alone() -> None:
    assert json_string("plain text 123") == "plain text 123"
    assert json_string("a</b") == "a<\\/b"
