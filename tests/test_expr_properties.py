"""Properties: well-typed expressions never raise; no text crashes the parser."""

from __future__ import annotations

import functools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.rules.catalogue import OBJECT_FIELDS, event_fields_for
from agent.rules.errors import RuleError
from agent.rules.events import make_event
from agent.rules.expr import EVENT, HOST, TRACE, Scope, Slots, compile_expr
from agent.rules.loader import check_sources
from agent.rules.testing import HostModel
from agent.rules.types import BOOL, FLOAT, INT, NODESET, STR, element_of, is_number
from agent.state import HostView

EVENT_TYPES = ("vcpu.off_node",)
SCOPE = Scope(
    {"host": ("host", HOST), "event": ("event", EVENT), "vcpu": ("vcpu", 3),
     "domain": ("domain", 4)},
    EVENT_TYPES,
)
EVENT_FIELDS = event_fields_for(EVENT_TYPES)
PY = {INT: int, FLOAT: (int, float), BOOL: bool, STR: str, NODESET: frozenset}
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def hosts() -> list[HostView]:
    """A few small hosts with the awkward cases: offline and paused vCPUs,
    unknown memory, dom0, backends, an idle node."""
    a = HostModel(
        {"nodes": 3, "cpus": 2, "memory_mib": 4096, "reserved_mib": [100, 0, 5000]},
        [
            {"domid": 0, "vcpus": 2, "pin": [0, 1], "memory": [512, 512, 0], "rate": 0.1},
            {"domid": 1, "name": "web", "vcpus": 3, "soft": [0], "run": [0, 2, -1],
             "rate": [1.0, 0.5, 0.0]},
            {"domid": 2, "name": "", "vcpus": 1, "state": "paused", "run": [1]},
        ],
        [{"pid": 7, "domid": 1, "cpus": [0]}, {"pid": 8, "domid": 2}],
    )
    first = a.observe(0.0)
    b = HostModel({"nodes": 1, "cpus": 1}, [{"domid": 5, "vcpus": 1, "rate": 0.0}])
    return [a.observe(2.5, first), b.observe(0.0)]


HOSTS = hosts()
EVENT_VALUE = make_event("vcpu.off_node", domid=1, vcpu=1, node=2, off_s=3.5)

# -- a generator of well-typed expressions, as text ---------------------------------

Ctx = tuple[tuple[str, str], ...]  # (name, object type) in scope
BASE: Ctx = (("vcpu", "vcpu"), ("domain", "domain"), ("host", "host"), ("event", "event"))


def fields_of(obj: str, want: str) -> list[str]:
    specs = OBJECT_FIELDS[obj]
    names = [n for n, f in specs.items() if f.type == want]
    if obj == "event":
        names = [n for n in names if n in EVENT_FIELDS]
    return names


def literal(t: str) -> st.SearchStrategy[str]:
    if t == INT:
        return st.one_of(st.integers(-9, 9), st.integers(-(2**63) + 1, 2**63 - 1),
                         st.just(0)).map(lambda i: f"({i})")
    if t == FLOAT:
        return st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"({f!r})"),
            st.sampled_from(["1e999", "(-1e999)", "0.0", "(-0.0)", "1e-308"]),
        )
    if t == BOOL:
        return st.sampled_from(["True", "False"])
    if t == STR:
        return st.text(max_size=6).map(repr)
    return st.lists(st.integers(-3, 5), min_size=1, max_size=3).map(
        lambda xs: "{" + ", ".join(map(str, xs)) + "}"
    )


def obj_exprs(ctx: Ctx, obj: str, depth: int) -> st.SearchStrategy[str]:
    """Objects of type ``obj``: names in scope, and at depth >= 1 lookups by id."""
    options: list[st.SearchStrategy[str]] = [st.just(n) for n, t in ctx if t == obj]
    if obj == "domain":
        options += [st.just(f"{n}.domain") for n, t in ctx if t in ("vcpu", "backend")]
    if depth >= 1 and obj in ("node", "domain"):
        func = "node_at" if obj == "node" else "domain_at"
        options.append(exprs(INT, ctx, depth - 1).map(lambda i: f"{func}({i})"))
    return st.one_of(options) if options else st.nothing()


def field_access(t: str, ctx: Ctx, depth: int) -> st.SearchStrategy[str]:
    options = []
    for obj in ("vcpu", "domain", "host", "event", "node", "backend"):
        names = fields_of(obj, t)
        if names:
            base = obj_exprs(ctx, obj, depth)
            options.append(st.tuples(base, st.sampled_from(names)).map(lambda p: f"{p[0]}.{p[1]}"))
    return st.one_of(options) if options else st.nothing()


LISTS = [("domain", "vcpus"), ("host", "nodes"), ("host", "domains"), ("host", "vcpus"),
         ("node", "vcpus"), ("node", "domains"), ("domain", "backends"), ("host", "backends")]


@functools.cache
def generator(ctx: Ctx, depth: int, body_type: str | None,
              ) -> st.SearchStrategy[tuple[str, str, Ctx]]:
    """(f"{elt} for v in list if cond", elt type, ...) pieces as text."""
    var = f"v{depth}_{len(ctx)}"

    def build(pair: tuple[str, str]) -> st.SearchStrategy[tuple[str, str, Ctx]]:
        owner, attr = pair
        elem = element_of(OBJECT_FIELDS[owner][attr].type)
        assert elem is not None
        inner: Ctx = (*ctx, (var, elem))
        source = obj_exprs(ctx, owner, depth).map(lambda o: f"{o}.{attr}")
        elt_type = body_type or BOOL
        return st.tuples(source, exprs(elt_type, inner, depth - 1),
                         st.one_of(st.just(""), exprs(BOOL, inner, depth - 1))).map(
            lambda p: (f"{p[1]} for {var} in {p[0]}" + (f" if {p[2]}" if p[2] else ""),
                       elt_type, inner)
        )

    return st.sampled_from(LISTS).flatmap(build)


@functools.cache
def exprs(t: str, ctx: Ctx, depth: int) -> st.SearchStrategy[str]:
    """Text of a well-typed expression of type ``t`` (strategies are cached: the
    tree is built once, not per example)."""
    leaves = st.one_of(literal(t), field_access(t, ctx, 0))
    if depth <= 0:
        return leaves
    d = depth - 1

    def sub(kind: str) -> st.SearchStrategy[str]:
        return exprs(kind, ctx, d)

    num = st.one_of(sub(INT), sub(FLOAT))
    options: list[st.SearchStrategy[str]] = [leaves, field_access(t, ctx, depth)]
    cond = st.tuples(sub(BOOL), sub(t), sub(t)).map(lambda p: f"({p[1]} if {p[0]} else {p[2]})")
    options.append(cond)
    if t == INT:
        options += [
            st.tuples(sub(INT), st.sampled_from("+-*%"), sub(INT)).map(" ".join).map("({})".format),
            st.tuples(sub(INT), sub(INT)).map(lambda p: f"({p[0]} // {p[1]})"),
            sub(INT).map(lambda a: f"(-{a})"),
            sub(INT).map(lambda a: f"abs({a})"),
            st.tuples(sub(INT), sub(INT)).map(lambda p: f"max({p[0]}, {p[1]})"),
            st.one_of(sub(NODESET), sub(STR)).map(lambda a: f"len({a})"),
            st.tuples(sub(INT), sub(INT)).map(lambda p: f"distance({p[0]}, {p[1]})"),
            generator(ctx, d, BOOL).map(lambda g: f"count({g[0]})"),
            generator(ctx, d, INT).map(lambda g: f"sum({g[0]})"),
        ]
    elif t == FLOAT:
        options += [
            st.tuples(num, st.sampled_from(["+", "-", "*", "/", "//", "%"]), sub(FLOAT)).map(
                lambda p: f"({p[0]} {p[1]} {p[2]})"),
            st.tuples(num, num).map(lambda p: f"({p[0]} / {p[1]})"),
            st.tuples(sub(FLOAT), num).map(lambda p: f"min({p[0]}, {p[1]})"),
            generator(ctx, d, FLOAT).map(lambda g: f"sum({g[0]})"),
            st.tuples(generator(ctx, d, FLOAT), st.sampled_from(["min", "max"])).map(
                lambda p: f"{p[1]}(({p[0][0]}), default=0.5)"),
        ]
    elif t == BOOL:
        options += [
            st.tuples(num, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), num).map(
                lambda p: f"({p[0]} {p[1]} {p[2]})"),
            st.tuples(num, num, num).map(lambda p: f"({p[0]} < {p[1]} <= {p[2]})"),
            st.tuples(sub(STR), st.sampled_from(["==", "!=", "<", "in"]), sub(STR)).map(
                lambda p: f"({p[0]} {p[1]} {p[2]})"),
            st.tuples(sub(NODESET), sub(NODESET)).map(lambda p: f"({p[0]} == {p[1]})"),
            st.tuples(sub(INT), sub(NODESET)).map(lambda p: f"({p[0]} not in {p[1]})"),
            st.tuples(sub(BOOL), st.sampled_from(["and", "or"]), sub(BOOL)).map(
                lambda p: f"({p[0]} {p[1]} {p[2]})"),
            sub(BOOL).map(lambda a: f"(not {a})"),
            st.tuples(st.sampled_from(["any", "all"]), generator(ctx, d, BOOL)).map(
                lambda p: f"{p[0]}({p[1][0]})"),
        ]
    elif t == STR:
        scalar = st.one_of(sub(INT), sub(FLOAT), sub(BOOL), sub(STR), sub(NODESET))
        options += [
            st.tuples(sub(STR), sub(STR)).map(lambda p: f"({p[0]} + {p[1]})"),
            scalar.map(lambda a: f"str({a})"),
            # f-string parts: fields only (3.11 allows no quotes or backslashes in them)
            st.tuples(*[st.one_of([field_access(k, BASE, 0) for k in (INT, FLOAT, BOOL, STR,
                                                                    NODESET)])] * 2).map(
                lambda p: f"f'<{{{p[0]}}}|{{{p[1]}}}>'"),
        ]
    else:
        options += [
            st.tuples(sub(NODESET), st.sampled_from("|&-"), sub(NODESET)).map(
                lambda p: f"({p[0]} {p[1]} {p[2]})"),
            st.tuples(sub(INT), sub(INT)).map(lambda p: f"{{{p[0]}, {p[1]}}}"),
        ]
    return st.one_of(options)


TYPES = [INT, FLOAT, BOOL, STR, NODESET]
TYPED = st.one_of([st.tuples(st.just(t), exprs(t, BASE, 3)) for t in TYPES])


@SETTINGS
@given(TYPED)
def test_well_typed_expressions_never_raise(typed: tuple[str, str]) -> None:
    t, text = typed
    compiled, errors = compile_expr(text, SCOPE, Slots(5))
    assert errors == [], (text, errors)
    assert compiled is not None
    assert compiled.type == t or (is_number(t) and is_number(compiled.type)), text
    for host in HOSTS:
        for v in host.vcpus[:4]:
            env: list[Any] = [None, host, EVENT_VALUE, v, v.domain, *([None] * compiled_slots)]
            value = compiled.fast(env)
            assert isinstance(value, PY[compiled.type]), (text, value)
            env[TRACE] = []
            traced = compiled.traced(env)
            assert traced == value or (value != value and traced != traced), text


compiled_slots = 64  # generous room for loop variables


# -- no text crashes the parser ---------------------------------------------------------

TOKENS = st.sampled_from(
    ["vcpu", "domain", "host", "event", "v", ".", "node", "run_rate", "on_soft", "vcpus",
     "(", ")", "[", "]", "{", "}", ",", ":", "+", "-", "*", "/", "//", "%", "**", "==", "<",
     ">=", "!=", "in", "not", "and", "or", "is", "if", "else", "for", "lambda", "=", ":=",
     "any", "count", "min", "first", "argmin", "__import__", "__class__", "'s'", '"x"',
     "f'{", "}'", "1", "0", "2.5", "1e999", "None", "True", "#", "\n", " ", "\\", "@", "$",
     "\x00", "é", "node_at", "default"]
)
SOUP = st.lists(TOKENS, max_size=25).map("".join)


@SETTINGS
@given(st.one_of(st.text(max_size=80), SOUP), st.booleans())
def test_no_text_crashes_the_expression_compiler(text: str, finder: bool) -> None:
    compiled, errors = compile_expr(text, SCOPE, Slots(5), BOOL, finder=finder)
    assert (compiled is None) == bool(errors)
    for e in errors:
        assert 0 <= e.index <= len(text) and e.message


def _check_errors(text: str, errors: list[RuleError]) -> None:
    lines = text.count("\n") + 2
    for e in errors:
        assert e.file == "f.toml" and e.message
        assert 0 <= e.line <= lines and e.col >= 0, (e, text)


@SETTINGS
@given(st.one_of(st.text(max_size=200), SOUP))
def test_no_text_crashes_the_rule_file_loader(text: str) -> None:
    ruleset, errors = check_sources([("f.toml", text)])
    assert (ruleset is None) == bool(errors)
    _check_errors(text, errors)


@SETTINGS
@given(st.one_of(st.text(max_size=60), SOUP), st.sampled_from(["when", "start", "partner",
                                                               "node"]))
def test_random_expressions_inside_a_rule_file_only_give_rule_errors(text: str, key: str) -> None:
    value = json.dumps(text, ensure_ascii=False)
    when = value if key == "when" else '"True"'
    extra = ""
    if key == "start":
        extra = f"start = {value}\nstop = {value}\n"
    if key == "partner":
        extra = f"[rule.with]\npartner = {value}\n"
    node = value if key == "node" else '"vcpu.home_node"'
    doc = (f'[[rule]]\nname = "r"\non = ["tick"]\nfor_each = "vcpu"\nwhen = {when}\n'
           f'[rule.action]\ntype = "vcpu.fixup"\ndomid = "vcpu.domid"\nvcpu = "vcpu.id"\n'
           f"node = {node}\n{extra}")
    ruleset, errors = check_sources([("f.toml", doc)])
    assert (ruleset is None) == bool(errors)
    _check_errors(doc, errors)
