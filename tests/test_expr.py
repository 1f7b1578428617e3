"""The condition language: types, errors with positions, total evaluation, traces."""

from __future__ import annotations

from typing import Any

import pytest

from agent.rules.events import Event, make_event
from agent.rules.expr import (
    EVENT,
    HOST,
    INT_LIMIT,
    TRACE,
    Compiled,
    Scope,
    Slots,
    compile_expr,
)
from agent.rules.testing import HostModel
from agent.rules.types import BOOL, FLOAT, INT, NODESET, STR
from agent.state import HostView

VCPU_SCOPE = Scope(
    {"host": ("host", HOST), "event": ("event", EVENT), "vcpu": ("vcpu", 3),
     "domain": ("domain", 4)},
    ("vcpu.off_node", "tick"),
)


def host() -> HostView:
    model = HostModel(
        {"nodes": 2, "cpus": 4, "memory_mib": 8192},
        [
            {"domid": 1, "name": "web", "vcpus": 3, "memory_mib": 2048, "soft": [0],
             "run": [0, 1, 0], "rate": [1.0, 0.5, 0.0]},
            {"domid": 2, "name": "db", "vcpus": 2, "memory_mib": 4096, "soft": [1],
             "memory": [1024, 3072]},
        ],
    )
    return model.observe(10.0)


HOST_VIEW = host()


def compile_ok(text: str, want: str | None = None) -> Compiled:
    compiled, errors = compile_expr(text, VCPU_SCOPE, Slots(5), want)
    assert errors == [], errors
    assert compiled is not None
    return compiled


def run(text: str, vcpu: tuple[int, int] = (1, 1), event: Event | None = None) -> Any:
    compiled = compile_ok(text)
    env: list[Any] = [None] * 16
    v = HOST_VIEW.vcpu_by_key[vcpu]
    env[HOST], env[EVENT], env[3], env[4] = HOST_VIEW, event or make_event("tick"), v, v.domain
    fast = compiled.fast(env)
    env[TRACE] = []
    assert compiled.traced(env) == fast or fast != fast  # traced twin agrees (NaN aside)
    return fast


def errors_of(text: str, want: str | None = BOOL) -> list[tuple[int, str]]:
    compiled, errors = compile_expr(text, VCPU_SCOPE, Slots(5), want)
    assert compiled is None
    return [(e.index, e.message) for e in errors]


# -- evaluation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("vcpu.node", 1),
        ("vcpu.on_soft", False),
        ("not vcpu.on_soft and vcpu.run_rate >= 0.5", True),
        ("vcpu.run_rate > 0.5 or domain.name == 'web'", True),
        ("0 <= vcpu.run_rate < 1", True),
        ("1 < vcpu.run_rate < 2", False),
        ("vcpu.home_node in domain.soft_nodes", True),
        ("vcpu.node not in vcpu.soft_nodes", True),
        ("'we' in domain.name", True),
        ("domain.name in ('web', 'db')", True),
        ("domain.soft_nodes | {1}", frozenset({0, 1})),
        ("{0, 1} - domain.soft_nodes", frozenset({1})),
        ("{0, 1} & domain.soft_nodes", frozenset({0})),
        ("7 // 2 + 7 % 2 * 10", 13),
        ("7 / 2", 3.5),
        ("vcpu.id / 0", 0.0),
        ("vcpu.id // 0 + vcpu.id % 0", 0),
        ("vcpu.run_rate // 0.0", 0.0),
        (f"{INT_LIMIT} * {INT_LIMIT}", INT_LIMIT),
        (f"-{INT_LIMIT} - 10", -INT_LIMIT),
        ("abs(-3) + min(1, 2.5) + max(1, 2)", 6),
        ("count(v for v in domain.vcpus if not v.on_soft)", 1),
        ("count(v.on_soft for v in domain.vcpus)", 2),
        ("sum(v.run_rate for v in domain.vcpus)", 1.5),
        ("sum(v.id for v in domain.vcpus)", 3),
        ("max(v.run_rate for v in domain.vcpus)", 1.0),
        ("min(v.run_rate for v in domain.vcpus if v.run_rate > 5)", 0),
        ("min((v.run_rate for v in domain.vcpus if v.run_rate > 5), default=-1)", -1),
        ("any(v.node == 1 for v in domain.vcpus)", True),
        ("all(v.node == 0 for v in domain.vcpus)", False),
        ("all(v.node == 9 for v in domain.vcpus if v.id > 9)", True),
        ("any(node_at(n).cpus == 4 for n in domain.soft_nodes)", True),
        ("sum(d.memory_mib for d in host.domains)", 6144),
        ("node_at(vcpu.home_node).pressure", 1.5 / 4),
        ("node_at(99).cpus + node_at(-1).load", 0.0),
        ("domain_at(2).name", "db"),
        ("domain_at(77).name", ""),
        ("domain_at(2).memory_node", 1),
        ("distance(0, 1) + distance(0, 0) + distance(0, 5)", 30),
        ("len(domain.vcpus) + len(domain.soft_nodes) + len(domain.name)", 7),
        ("'a' if vcpu.on_soft else 'b'", "b"),
        ("1 if vcpu.on_soft else 2.5", 2.5),
        ("str(vcpu.node) + '/' + str(domain.soft_nodes)", "1/0"),
        ("f'{domain.name} vcpu {vcpu.id} rate {vcpu.run_rate} on {vcpu.soft_nodes}'",
         "web vcpu 1 rate 0.5 on 0"),
        ("vcpu.domain.name == domain.name", True),
        ("event.type == 'tick'", True),
        ("1e999 > 10", True),
        ("""
            not vcpu.on_soft      # comments are fine
            and vcpu.node == 1
         """, True),
    ],
)
def test_evaluates(text: str, value: Any) -> None:
    result = run(text)
    assert result == value
    assert type(result) is type(value)


def test_types_of_results() -> None:
    assert compile_ok("vcpu.node + 1").type == INT
    assert compile_ok("vcpu.node + 1.0").type == FLOAT
    assert compile_ok("vcpu.node / 1").type == FLOAT
    assert compile_ok("domain.soft_nodes | {1}").type == NODESET
    assert compile_ok("f'{vcpu.id}'").type == STR
    assert compile_ok("vcpu.node", want=FLOAT).type == INT  # an int may stand for a float


def test_event_fields_follow_the_event() -> None:
    scope = Scope(dict(VCPU_SCOPE.names), ("vcpu.off_node",))
    compiled, errors = compile_expr("event.off_s > 2 and event.domid == vcpu.domid", scope,
                                    Slots(5), BOOL)
    assert errors == [] and compiled is not None
    event = make_event("vcpu.off_node", domid=1, vcpu=1, node=1, off_s=2.5)
    v = HOST_VIEW.vcpu_by_key[(1, 1)]
    assert compiled.fast([None, HOST_VIEW, event, v, v.domain]) is True


# -- errors: what and where --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "index", "fragment"),
    [
        ("vcpu.run_rat > 1", 5, "unknown field 'run_rat' of vcpu; did you mean 'run_rate'?"),
        ("vcpuu.node == 1", 0, "unknown name 'vcpuu'; did you mean 'vcpu'?"),
        ("domain.name == 3", 0, "type mismatch: 'domain.name' is str but '3' is int"),
        ("vcpu.node == 'x'", 0, "type mismatch"),
        ("vcpu.on_soft == 1", 0, "type mismatch: 'vcpu.on_soft' is bool but '1' is int"),
        ("domain.soft_nodes < {1}", 0, "'<' does not order nodeset values"),
        ("__import__('os')", 0, "call of '__import__' is forbidden"),
        ("eval('1')", 0, "call of 'eval' is forbidden"),
        ("cont(v for v in domain.vcpus) > 1", 0, "unknown function 'cont'; did you mean 'count'?"),
        ("vcpu.__class__", 5, "forbidden attribute '__class__'"),
        ("vcpu.node.real == 1", 10, "'vcpu.node' is int, which has no fields"),
        ("(lambda: 1) == 1", 1, "lambda is not allowed"),
        ("(lambda: 1)() == 1", 0, "only the named functions can be called"),
        ("domain.vcpus[0].node == 1", 0, "indexing is not supported"),
        ("vcpu.node is 1", 0, "'is' is not supported; use '=='"),
        ("[v for v in domain.vcpus] == 1", 0, "comprehensions are not supported"),
        ("(x := 1) == 1", 1, "assignment ':=' is not allowed"),
        ("vcpu.node ** 2 == 1", 0, "operator '**' is not supported"),
        ("vcpu.on_soft + 1 == 1", 0, "arithmetic '+' needs two numbers"),
        ("not vcpu.node", 0, "'not' needs true or false"),
        ("vcpu.node and vcpu.on_soft", 0, "'and' needs true or false on each side"),
        ("vcpu.node | 1 == 1", 0, "'|' works on two sets"),
        ("vcpu in domain.vcpus", 0, "over a list of objects is not supported; use any("),
        ("vcpu == vcpu", 0, "objects cannot be compared"),
        ("any(v.node for v in domain.vcpus)", 4, "any() needs a true/false element, not int"),
        ("any(vcpu.on_soft for vcpu in domain.vcpus)", 21, "hides a name of the rule"),
        ("any(x for x in vcpu.node)", 15, "'for' needs a list or a node set"),
        ("count", 0, "'count' is a function; call it"),
        ("first(v for v in domain.vcpus) == 1", 0, "can only be the whole value of a [rule"),
        ("(v.on_soft for v in domain.vcpus)", 0, "a generator can only be the argument of"),
        ("event.off_s > 1", 6, "not carried by every event this rule is on (tick lacks it)"),
        ("event.bogus > 1", 6, "unknown field 'bogus' of event"),
        ("vcpu.node", 0, "a condition must be true or false, but this is int"),
        ("vcpu.node == None", 13, "None literals are not supported"),
        (f"vcpu.node == {2**64}", 13, "is too large"),
        ("{} == 1", 0, "dicts are not supported"),
        # Python 3.11 places an f-string's parts at the start of the string
        ("f'{vcpu!r}' == ''", 0, "f-string conversions and format specs are not supported"),
        ("vcpu.node == 1 and", 18, "syntax error"),
        ("vcpu.node $ 1", 10, "syntax error"),
        ("'unterminated", 0, "syntax error"),
        ("a\x00b", 0, "null bytes"),
    ],
)
def test_error_message_and_index(text: str, index: int, fragment: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    assert errors[0][0] == index, (errors, text[errors[0][0]:])
    assert fragment in errors[0][1], errors


def test_every_error_is_reported_once() -> None:
    errors = errors_of("vcpu.run_rat > 1 and domain.nam == 'x' and vcpu.node == 'y'")
    assert [i for i, _ in errors] == [5, 28, 43]
    assert "run_rate" in errors[0][1] and "'name'" in errors[1][1] and "mismatch" in errors[2][1]


def test_positions_on_later_lines_and_after_non_ascii() -> None:
    text = "domain.name == 'é'\n  and vcpu.bad == 1"
    (index, message), = errors_of(text)
    assert text[index:].startswith("bad") and "unknown field 'bad'" in message
    text = "domain.name == 'éé' and (\n vcpu.node $ 1)"
    (index, message), = errors_of(text)
    assert text[index] == "$" and "syntax error" in message


def test_finder_mode() -> None:
    slots = Slots(5)
    compiled, errors = compile_expr(
        "argmin(n.load for n in host.nodes if n.id != vcpu.node)", VCPU_SCOPE, slots,
        finder=True,
    )
    assert errors == [] and compiled is not None
    assert compiled.type == "node" and compiled.finder == "argmin"
    _, errors = compile_expr("vcpu.node", VCPU_SCOPE, Slots(5), finder=True)
    assert "a [rule.with] entry is first(" in errors[0].message
    _, errors = compile_expr("first(v.node for v in domain.vcpus)", VCPU_SCOPE, Slots(5),
                             finder=True)
    assert "first() yields the loop variable itself" in errors[0].message


def test_unavailable_names_say_why() -> None:
    scope = Scope(dict(VCPU_SCOPE.names), ("tick",), {"partner": "is bound in [rule.with]"})
    _, errors = compile_expr("partner.node == 1", scope, Slots(5), BOOL)
    assert errors[0].message == "'partner' is bound in [rule.with]"


def test_long_and_deep_expressions_are_refused_not_crashed() -> None:
    assert "longer than" in errors_of("1 == " + "1" * 9000)[0][1]
    assert errors_of("not " * 100 + "vcpu.on_soft")[0][1].startswith("expression nested")
    assert errors_of("-" * 100000 + "1 == 1")  # the parser itself gives up


# -- traces ------------------------------------------------------------------------


def traced(text: str, vcpu: tuple[int, int] = (1, 1)) -> list[str]:
    compiled = compile_ok(text)
    v = HOST_VIEW.vcpu_by_key[vcpu]
    trace: list[Any] = []
    env: list[Any] = [trace, HOST_VIEW, make_event("tick"), v, v.domain, *([None] * 8)]
    compiled.traced(env)
    return [str(step) for step in trace]


def test_trace_records_each_comparison_with_its_values() -> None:
    steps = traced("not vcpu.on_soft and vcpu.run_rate >= 0.2 and 0 <= vcpu.node < 2")
    assert steps == [
        "vcpu.on_soft  [] -> False",
        "vcpu.run_rate >= 0.2  [0.5, 0.2] -> True",
        "0 <= vcpu.node < 2  [0, 1, 2] -> True",
    ]


def test_trace_follows_short_circuit_and_summarises_aggregates() -> None:
    assert traced("vcpu.node == 0 and vcpu.run_rate > 0") == ["vcpu.node == 0  [1, 0] -> False"]
    assert traced("count(v for v in domain.vcpus if v.node == 0) >= 2 or vcpu.on_soft") == [
        "count(v for v in domain.vcpus if v.node == 0)  [] -> 2",
        "count(v for v in domain.vcpus if v.node == 0) >= 2  [2, 2] -> True",
    ]
    assert traced("vcpu.home_node in domain.soft_nodes") == [
        "vcpu.home_node in domain.soft_nodes  [0, {0}] -> True"
    ]


def test_trace_is_bounded() -> None:
    text = " and ".join(["vcpu.node >= 0"] * 300)
    assert len(traced(text)) == 200
