"""The condition language: a typed subset of Python expressions.

Text is parsed with ``ast``, checked against the catalogue, and compiled once
into nested closures over an environment list; nothing is ever ``eval``'d.
Every error is collected (not just the first) with its character index in the
text, so the loader can point at the line and column in the rule file.

Evaluation is total: a well-typed expression never raises. Division or modulo
by zero gives 0, integers saturate at +-(2**63 - 1), ``min``/``max`` of nothing
give their ``default`` (0), and ``node_at``/``domain_at`` of an unknown id give
an all-zero object. The traced variant records every comparison outside
generators, each aggregate and each ``with`` binding, with the values seen.

Environment slots: 0 the trace list, 1 the host, 2 the event, then the rule's
names (``vcpu``, ``domain``, ...), ``with`` bindings and loop variables.
"""

from __future__ import annotations

import ast
import difflib
import operator
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.hypervisor.model import format_cpuset
from agent.rules.catalogue import OBJECT_FIELDS, event_fields_for
from agent.rules.events import EVENT_FIELDS, EVENT_TYPES
from agent.rules.subjects import label
from agent.rules.trace import TraceStep
from agent.rules.types import (
    BOOL,
    ERROR,
    FLOAT,
    INT,
    NODESET,
    STR,
    STRSET,
    Type,
    element_of,
    is_number,
    is_object,
    is_set,
)

Fn = Callable[[list[Any]], Any]

TRACE, HOST, EVENT = 0, 1, 2
FIRST_FREE_SLOT = 3
INT_LIMIT = 2**63 - 1
MAX_LENGTH = 8000
MAX_DEPTH = 60
MAX_TRACE = 200  # steps kept per evaluation; the audit log needs the gist, not a flood

FUNCTIONS: Mapping[str, str] = {
    "any": "any(<bool> for x in <list>): some element satisfies it",
    "all": "all(<bool> for x in <list>): every element satisfies it (true for none)",
    "count": "count(x for x in <list> if <bool>) or count(<bool> for x in <list>): how many",
    "sum": "sum(<number> for x in <list>): total (0 for none)",
    "min": "min(a, b, ...) or min(<number> for x in <list>, default=0)",
    "max": "max(a, b, ...) or max(<number> for x in <list>, default=0)",
    "abs": "abs(<number>)",
    "len": "len(<set, list or str>)",
    "str": "str(<value>): text, for messages",
    "node_at": "node_at(<node id>): that node (all zero if there is none)",
    "domain_at": "domain_at(<domid>): that domain (all zero if there is none)",
    "distance": "distance(<node id>, <node id>): SLIT distance (10 local, 0 unknown)",
    "first": "first(x for x in <list> if <bool>): in [rule.with] only; no match: rule not met",
    "argmin": "argmin(<number> for x in <list> if <bool>): in [rule.with] only; the x",
    "argmax": "argmax(<number> for x in <list> if <bool>): in [rule.with] only; the x",
}
FINDERS = ("first", "argmin", "argmax")
_AGGREGATES = ("any", "all", "count", "sum", "min", "max")
# Python names people reach for to break out; named as forbidden, not merely unknown.
_DANGEROUS = frozenset(
    ("eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "globals", "locals",
     "vars", "input", "breakpoint", "type", "object", "help", "exit", "quit", "memoryview",
     "classmethod", "staticmethod", "super")
)


@dataclass(frozen=True, slots=True)
class ExprError:
    index: int  # 0-based character index into the expression text
    message: str


@dataclass(slots=True)
class Slots:
    """Environment slots of one rule, shared by all its expressions."""

    size: int = FIRST_FREE_SLOT

    def take(self) -> int:
        self.size += 1
        return self.size - 1


@dataclass(frozen=True, slots=True)
class Scope:
    names: Mapping[str, tuple[Type, int]]  # name -> (object type, slot)
    event_types: tuple[str, ...]  # the rule's ``on``; decides which event fields exist
    # Names that exist in the rule but not here, with the reason (e.g. a
    # ``with`` binding used in ``when``).
    unavailable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Compiled:
    text: str
    type: Type
    fast: Fn
    traced: Fn
    finder: str = ""  # for ``with`` bindings: first, argmin or argmax


def suggest(name: str, candidates: Iterable[str]) -> str:
    """ "; did you mean 'x'?" or "", for error messages. A candidate the name
    begins (a field name cut short) beats one that is merely similar."""
    options = list(candidates)
    prefixed = sorted((c for c in options if len(name) >= 3 and c.startswith(name)), key=len)
    close = prefixed or difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def compile_expr(
    text: str, scope: Scope, slots: Slots, want: Type | None = None, finder: bool = False
) -> tuple[Compiled | None, list[ExprError]]:
    """Check and compile ``text``; ``want`` is the type required of its value.

    ``finder`` compiles a ``with`` binding: the whole expression must be a call
    of first/argmin/argmax and its value is an object, or None for no match.
    Never raises on any input: problems come back as errors.
    """
    if len(text) > MAX_LENGTH:
        return None, [ExprError(0, f"expression longer than {MAX_LENGTH} characters")]
    # Parenthesised, so an expression may span lines and end in a comment.
    src = "(" + text + "\n)"
    try:
        with warnings.catch_warnings():  # e.g. "1in x": accepted, not worth a stderr line
            warnings.simplefilter("ignore")
            tree = ast.parse(src, mode="eval")
    except SyntaxError as exc:
        return None, [_syntax_error(exc, src, text)]
    except (ValueError, MemoryError, RecursionError) as exc:
        return None, [ExprError(0, f"cannot parse: {exc or type(exc).__name__}")]
    mark = slots.size
    fast = _Compiler(text, src, scope, slots, trace=False, finder=finder)
    typ, fast_fn = fast.top(tree.body)
    errors = fast.errors
    if not errors and want is not None and not _assignable(typ, want):
        what = "a condition must be true or false" if want == BOOL else f"expected {want}"
        errors.append(ExprError(fast.index_of(tree.body), f"{what}, but this is {typ}"))
    if errors:
        return None, sorted(set(errors), key=lambda e: e.index)
    # The traced twin takes the same slots: both run over the same environment.
    end = slots.size
    slots.size = mark
    traced = _Compiler(text, src, scope, slots, trace=True, finder=finder)
    _, traced_fn = traced.top(tree.body)
    slots.size = max(end, slots.size)
    return Compiled(text, typ, fast_fn, traced_fn, fast.finder_used), []


def _assignable(have: Type, want: Type) -> bool:
    return have == want or (have == INT and want == FLOAT)


def _syntax_error(exc: SyntaxError, src: str, text: str) -> ExprError:
    lines = src.split("\n")
    lineno = exc.lineno or 1
    offset = (exc.offset or 1) - 1  # characters, 1-based in SyntaxError
    start = sum(len(line) + 1 for line in lines[: lineno - 1]) + offset
    index = min(max(start - 1, 0), len(text))
    msg = exc.msg or "invalid syntax"
    return ExprError(index, f"syntax error: {msg}")


def _sat(x: int) -> int:
    if -INT_LIMIT <= x <= INT_LIMIT:
        return x
    return INT_LIMIT if x > 0 else -INT_LIMIT


def _div(a: Any, b: Any) -> Any:
    return a / b if b else 0.0


def _floordiv(a: Any, b: Any) -> Any:
    return a // b if b else 0 * a


def _mod(a: Any, b: Any) -> Any:
    return a % b if b else 0 * a


def _text(value: Any) -> str:
    if isinstance(value, frozenset):
        if all(isinstance(v, int) for v in value):
            return format_cpuset(value)
        return ",".join(sorted(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _as_text(f: Fn) -> Fn:
    return lambda env: _text(f(env))


def _record(env: list[Any], step: TraceStep) -> None:
    trace = env[TRACE]
    if trace is not None and len(trace) < MAX_TRACE:
        trace.append(step)


_COMPARE: Mapping[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_CMP_TEXT = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}
_BINOP_TEXT = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
    ast.BitXor: "^", ast.BitAnd: "&", ast.MatMult: "@",
}
_FORBIDDEN_NODES: Mapping[type[ast.AST], str] = {
    ast.Lambda: "lambda is not allowed",
    ast.NamedExpr: "assignment ':=' is not allowed",
    ast.Subscript: "indexing is not supported; use node_at(id) or domain_at(domid)",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.ListComp: "comprehensions are not supported; use any/all/count/sum(... for x in ...)",
    ast.SetComp: "comprehensions are not supported; use any/all/count/sum(... for x in ...)",
    ast.DictComp: "comprehensions are not supported; use any/all/count/sum(... for x in ...)",
    ast.Dict: "dicts are not supported",
    ast.Slice: "slices are not supported",
    ast.GeneratorExp: "a generator can only be the argument of any, all, count, sum, min or max",
}


class _Compiler:
    def __init__(
        self, text: str, src: str, scope: Scope, slots: Slots, trace: bool, finder: bool
    ) -> None:
        self.text = text
        self.src = src
        self.src_lines = src.split("\n")
        self.encoded = [line.encode("utf-8") for line in self.src_lines]
        self.scope = scope
        self.names: dict[str, tuple[Type, int]] = dict(scope.names)
        self.slots = slots
        self.trace = trace
        self.finder = finder
        self.finder_used = ""
        self.errors: list[ExprError] = []
        self.in_generator = 0
        self.event_fields = event_fields_for(scope.event_types)
        # Closures that read one field of a named object, for fusing into parents.
        self.fields: dict[Fn, tuple[int, Callable[[Any], Any]]] = {}

    # -- positions and errors --------------------------------------------------

    def _index(self, lineno: int, col_bytes: int) -> int:
        lines = self.src_lines
        lineno = min(max(lineno, 1), len(lines))
        line = lines[lineno - 1]
        col = len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))
        start = sum(len(s) + 1 for s in lines[: lineno - 1]) + col
        return min(max(start - 1, 0), len(self.text))  # -1: the added "("

    def index_of(self, node: ast.AST) -> int:
        return self._index(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def error(self, at: ast.AST | int, message: str) -> tuple[Type, Fn]:
        index = at if isinstance(at, int) else self.index_of(at)
        self.errors.append(ExprError(index, message))
        return ERROR, _never

    def source(self, node: ast.AST) -> str:
        """The node's text, whitespace folded (ast.get_source_segment re-splits the
        whole source on every call, which is quadratic in long expressions)."""
        lines = self.encoded
        l1, l2 = getattr(node, "lineno", 1), getattr(node, "end_lineno", None) or 1
        c1, c2 = getattr(node, "col_offset", 0), getattr(node, "end_col_offset", None) or 0
        if l1 == l2:
            seg = lines[l1 - 1][c1:c2]
        else:
            seg = b"\n".join([lines[l1 - 1][c1:], *lines[l1:l2 - 1], lines[l2 - 1][:c2]])
        return " ".join(seg.decode("utf-8", errors="replace").split())

    # -- entry -------------------------------------------------------------------

    def top(self, node: ast.expr) -> tuple[Type, Fn]:
        if self.finder:
            return self.find(node)
        return self.operand(node, 0)

    def operand(self, node: ast.AST, depth: int) -> tuple[Type, Fn]:
        """A boolean operand: traced too when it is a bare field, not a comparison."""
        typ, fn = self.expr(node, depth)
        if (self.trace and not self.in_generator and typ == BOOL
                and isinstance(node, ast.Attribute | ast.Name)):
            return typ, _traced_value(self.source(node), fn)
        return typ, fn

    def expr(self, node: ast.AST, depth: int) -> tuple[Type, Fn]:
        if depth > MAX_DEPTH:
            return self.error(node, f"expression nested more than {MAX_DEPTH} deep")
        method = getattr(self, "n_" + type(node).__name__, None)
        if method is not None:
            result: tuple[Type, Fn] = method(node, depth + 1)
            return result
        why = _FORBIDDEN_NODES.get(type(node))
        if why is None:
            why = f"{type(node).__name__} is not part of the rule language"
        return self.error(node, why)

    # -- leaves -------------------------------------------------------------------

    def n_Constant(self, node: ast.Constant, depth: int) -> tuple[Type, Fn]:
        v = node.value
        if isinstance(v, bool):
            return BOOL, _const(v)
        if isinstance(v, int):
            if abs(v) > INT_LIMIT:
                return self.error(node, f"integer {v} is too large (limit 2**63 - 1)")
            return INT, _const(v)
        if isinstance(v, float):
            return FLOAT, _const(v)
        if isinstance(v, str):
            return STR, _const(v)
        what = "None" if v is None else type(v).__name__
        return self.error(node, f"{what} literals are not supported")

    def n_Name(self, node: ast.Name, depth: int) -> tuple[Type, Fn]:
        name = node.id
        known = self.names.get(name)
        if known is not None:
            typ, slot = known
            return typ, (lambda env: env[slot])
        if name in self.scope.unavailable:
            return self.error(node, f"{name!r} {self.scope.unavailable[name]}")
        if name in FUNCTIONS:
            return self.error(node, f"{name!r} is a function; call it, e.g. {FUNCTIONS[name]}")
        names = ", ".join(self.names)
        hint = suggest(name, list(self.names))
        return self.error(node, f"unknown name {name!r}{hint} (names here: {names})")

    def n_Attribute(self, node: ast.Attribute, depth: int) -> tuple[Type, Fn]:
        base_t, base = self.expr(node.value, depth)
        attr = node.attr
        end_line = node.end_lineno or node.lineno
        end_col = (node.end_col_offset or 0) - len(attr.encode("utf-8"))
        at = self._index(end_line, end_col)
        if attr.startswith("_"):
            return self.error(at, f"forbidden attribute {attr!r}: names starting with '_' "
                                  "are not fields")
        if base_t == ERROR:
            return ERROR, _never
        if not is_object(base_t):
            return self.error(at, f"{self.source(node.value)!r} is {base_t}, which has no "
                                  f"fields (only {', '.join(OBJECT_FIELDS)} do)")
        fields = OBJECT_FIELDS[base_t]
        spec = fields.get(attr)
        if spec is None:
            hint = suggest(attr, fields)
            return self.error(at, f"unknown field {attr!r} of {base_t}{hint}")
        if base_t == "event" and attr not in self.event_fields:
            lacking = [t for t in self.scope.event_types
                       if t in EVENT_TYPES and attr not in EVENT_TYPES[t].fields]
            return self.error(at, f"event field {attr!r} is not carried by every event this "
                                  f"rule is on ({', '.join(lacking)} lacks it)")
        get = operator.attrgetter(attr)
        if isinstance(node.value, ast.Name) and node.value.id in self.names:
            slot = self.names[node.value.id][1]
            fn: Fn = lambda env: get(env[slot])  # noqa: E731
            self.fields[fn] = (slot, get)
            return spec.type, fn
        return spec.type, (lambda env: get(base(env)))

    # -- operators -------------------------------------------------------------------

    def n_UnaryOp(self, node: ast.UnaryOp, depth: int) -> tuple[Type, Fn]:
        if isinstance(node.op, ast.Not):
            typ, f = self.operand(node.operand, depth)
        else:
            typ, f = self.expr(node.operand, depth)
        if typ == ERROR:
            return ERROR, _never
        if isinstance(node.op, ast.Not):
            if typ != BOOL:
                return self.error(node, f"'not' needs true or false, but "
                                        f"{self.source(node.operand)!r} is {typ}")
            field = self.fields.get(f)
            if field is not None:  # fused: one call instead of two
                slot, get = field
                return BOOL, (lambda env: not get(env[slot]))
            return BOOL, (lambda env: not f(env))
        if isinstance(node.op, ast.USub | ast.UAdd):
            if not is_number(typ):
                return self.error(node, f"sign of {typ} {self.source(node.operand)!r}: "
                                        "needs a number")
            if isinstance(node.op, ast.UAdd):
                return typ, f
            if typ == INT:
                return INT, (lambda env: _sat(-f(env)))
            return FLOAT, (lambda env: -f(env))
        return self.error(node, "'~' is not supported")

    def n_BoolOp(self, node: ast.BoolOp, depth: int) -> tuple[Type, Fn]:
        parts: list[Fn] = []
        ok = True
        word = "and" if isinstance(node.op, ast.And) else "or"
        for value in node.values:
            typ, f = self.operand(value, depth)
            if typ not in (BOOL, ERROR):
                self.error(value, f"'{word}' needs true or false on each side, but "
                                  f"{self.source(value)!r} is {typ}")
            ok = ok and typ == BOOL
            parts.append(f)
        if not ok:
            return ERROR, _never
        return BOOL, (_and(parts) if word == "and" else _or(parts))

    def n_BinOp(self, node: ast.BinOp, depth: int) -> tuple[Type, Fn]:
        lt, lf = self.expr(node.left, depth)
        rt, rf = self.expr(node.right, depth)
        op = type(node.op)
        sym = _BINOP_TEXT.get(op, "?")
        if lt == ERROR or rt == ERROR:
            return ERROR, _never
        if op in (ast.Pow, ast.LShift, ast.RShift, ast.BitXor, ast.MatMult):
            return self.error(node, f"operator {sym!r} is not supported")
        if op in (ast.BitOr, ast.BitAnd) or (op is ast.Sub and is_set(lt)):
            if is_set(lt) and lt == rt:
                fn = {ast.BitOr: operator.or_, ast.BitAnd: operator.and_,
                      ast.Sub: operator.sub}[op]
                return lt, (lambda env: fn(lf(env), rf(env)))
            extra = "; use 'and'/'or' for conditions" if BOOL in (lt, rt) else ""
            return self.error(node, f"{sym!r} works on two sets of the same kind, not "
                                    f"{lt} and {rt}{extra}")
        if op is ast.Add and lt == STR and rt == STR:
            return STR, (lambda env: lf(env) + rf(env))
        if not (is_number(lt) and is_number(rt)):
            return self.error(node, f"arithmetic {sym!r} needs two numbers, not {lt} "
                                    f"({self.source(node.left)}) and {rt} "
                                    f"({self.source(node.right)})")
        result = INT if lt == INT and rt == INT else FLOAT
        if op is ast.Div:
            return FLOAT, (lambda env: _div(lf(env), rf(env)))
        base = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                ast.FloorDiv: _floordiv, ast.Mod: _mod}[op]
        if result == INT:
            return INT, (lambda env: _sat(base(lf(env), rf(env))))
        return FLOAT, (lambda env: base(lf(env), rf(env)))

    def n_IfExp(self, node: ast.IfExp, depth: int) -> tuple[Type, Fn]:
        ct, cf = self.expr(node.test, depth)
        at, af = self.expr(node.body, depth)
        bt, bf = self.expr(node.orelse, depth)
        if ERROR in (ct, at, bt):
            return ERROR, _never
        if ct != BOOL:
            return self.error(node.test, f"'if' needs true or false, not {ct}")
        if at == bt:
            typ = at
        elif is_number(at) and is_number(bt):
            typ = FLOAT
        else:
            return self.error(node, f"the two branches of 'if ... else' differ: {at} and {bt}")
        return typ, (lambda env: af(env) if cf(env) else bf(env))

    def n_Compare(self, node: ast.Compare, depth: int) -> tuple[Type, Fn]:
        operands = [node.left, *node.comparators]
        compiled = [self.expr(o, depth) for o in operands]
        ok = all(t != ERROR for t, _ in compiled)
        for i, op in enumerate(node.ops):
            if isinstance(op, ast.Is | ast.IsNot):
                instead = "==" if isinstance(op, ast.Is) else "!="
                self.error(operands[i], f"'{_CMP_TEXT[type(op)]}' is not supported; use "
                                        f"'{instead}'")
                ok = False
            elif ok:
                ok = self.check_compare(op, operands[i], compiled[i][0],
                                        operands[i + 1], compiled[i + 1][0])
        if not ok:
            return ERROR, _never
        ops = [_COMPARE[type(op)] for op in node.ops]
        fns = [f for _, f in compiled]
        if self.trace and not self.in_generator:
            return BOOL, _traced_compare(self.source(node), fns, ops)
        if len(ops) == 1:
            (op1,), (a, b) = ops, fns
            if isinstance(node.comparators[0], ast.Constant):
                c = node.comparators[0].value
                field = self.fields.get(a)
                if field is not None:  # fused: `vcpu.run_rate >= 0.2` in one call
                    slot, get = field
                    return BOOL, (lambda env: op1(get(env[slot]), c))
                return BOOL, (lambda env: op1(a(env), c))
            return BOOL, (lambda env: op1(a(env), b(env)))
        return BOOL, _chain(fns, ops)

    def check_compare(
        self, op: ast.cmpop, left: ast.AST, lt: Type, right: ast.AST, rt: Type
    ) -> bool:
        sym = _CMP_TEXT[type(op)]
        if isinstance(op, ast.In | ast.NotIn):
            if (lt == INT and rt == NODESET) or (lt == STR and rt in (STRSET, STR)):
                return True
        elif not (is_object(lt) or is_object(rt) or element_of(lt) or element_of(rt)):
            ordered = not isinstance(op, ast.Eq | ast.NotEq)
            if (is_number(lt) and is_number(rt)) or (lt == rt and (lt == STR or not ordered)):
                return True
        # An error: only now is the source text worth building.
        ls, rs = self.source(left), self.source(right)
        if isinstance(op, ast.In | ast.NotIn):
            if element_of(rt):
                self.error(left, f"'{sym}' over a list of objects is not supported; use "
                                 f"any(... for x in {rs})")
            else:
                self.error(left, f"type mismatch: {ls!r} is {lt} and {rs!r} is {rt}; "
                                 f"'{sym}' needs a node id and a node set, or a str and a "
                                 "str set")
        elif is_object(lt) or is_object(rt) or element_of(lt) or element_of(rt):
            self.error(left, f"objects cannot be compared ({ls!r} {sym} {rs!r}); compare "
                             "their ids, e.g. v.domid == vcpu.domid")
        elif lt == rt:
            self.error(left, f"'{sym}' does not order {lt} values ({ls!r} {sym} {rs!r})")
        else:
            self.error(left, f"type mismatch: {ls!r} is {lt} but {rs!r} is {rt}; '{sym}' "
                             "compares two numbers, two strings, two bools or two sets")
        return False

    # -- literals ----------------------------------------------------------------------

    def n_Set(self, node: ast.Set, depth: int) -> tuple[Type, Fn]:
        return self.collection(node, node.elts, depth)

    def n_List(self, node: ast.List, depth: int) -> tuple[Type, Fn]:
        return self.collection(node, node.elts, depth)

    def n_Tuple(self, node: ast.Tuple, depth: int) -> tuple[Type, Fn]:
        return self.collection(node, node.elts, depth)

    def collection(self, node: ast.AST, elts: list[ast.expr], depth: int) -> tuple[Type, Fn]:
        if not elts:
            return self.error(node, "empty set literals are not supported")
        parts = [self.expr(e, depth) for e in elts]
        types = {t for t, _ in parts}
        if ERROR in types:
            return ERROR, _never
        if types == {INT}:
            typ = NODESET
        elif types == {STR}:
            typ = STRSET
        else:
            return self.error(node, "a set holds node ids (int) or strings, not "
                                    + " and ".join(sorted(types)))
        fns = [f for _, f in parts]
        if all(isinstance(e, ast.Constant) for e in elts):
            value = frozenset(e.value for e in elts if isinstance(e, ast.Constant))
            return typ, _const(value)
        return typ, (lambda env: frozenset(f(env) for f in fns))

    def n_JoinedStr(self, node: ast.JoinedStr, depth: int) -> tuple[Type, Fn]:
        parts: list[Fn] = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(_const(value.value))
                continue
            if not isinstance(value, ast.FormattedValue):
                return self.error(value, "unsupported f-string part")
            if value.conversion != -1 or value.format_spec is not None:
                return self.error(value, "f-string conversions and format specs are not "
                                         "supported; write {x}")
            typ, f = self.expr(value.value, depth)
            if typ == ERROR:
                return ERROR, _never
            if is_object(typ) or element_of(typ):
                return self.error(value.value, f"{typ} is not text; use one of its fields")
            parts.append(_as_text(f))
        return STR, (lambda env: "".join(p(env) for p in parts))

    # -- calls -------------------------------------------------------------------------

    def n_Call(self, node: ast.Call, depth: int) -> tuple[Type, Fn]:
        if not isinstance(node.func, ast.Name):
            return self.error(node, "only the named functions can be called: "
                                    + ", ".join(FUNCTIONS))
        name = node.func.id
        if name not in FUNCTIONS:
            if name.startswith("__") or name in _DANGEROUS:
                return self.error(node, f"call of {name!r} is forbidden: conditions cannot "
                                        "import, run code or reach Python objects; the "
                                        "functions are " + ", ".join(FUNCTIONS))
            hint = suggest(name, FUNCTIONS)
            return self.error(node, f"unknown function {name!r}{hint} (functions: "
                                    + ", ".join(FUNCTIONS) + ")")
        if name in FINDERS:
            return self.error(node, f"{name}() can only be the whole value of a [rule.with] "
                                    "entry")
        if any(isinstance(a, ast.Starred) for a in node.args):
            return self.error(node, "'*' unpacking is not allowed")
        keywords = {k.arg: k for k in node.keywords}
        allowed_kw = {"default"} if name in ("min", "max") else set()
        for k in node.keywords:
            if k.arg not in allowed_kw:
                return self.error(k.value, f"{name}() takes no keyword {k.arg or '**'!r}")
        if name in _AGGREGATES and len(node.args) == 1 and isinstance(
            node.args[0], ast.GeneratorExp
        ):
            return self.aggregate(node, name, node.args[0], keywords.get("default"), depth)
        if keywords:
            return self.error(node, f"default= goes with a generator: {FUNCTIONS[name]}")
        args = [self.expr(a, depth) for a in node.args]
        if any(t == ERROR for t, _ in args):
            return ERROR, _never
        return self.plain_call(node, name, args)

    def plain_call(
        self, node: ast.Call, name: str, args: list[tuple[Type, Fn]]
    ) -> tuple[Type, Fn]:
        types = [t for t, _ in args]
        fns = [f for _, f in args]
        usage = f"usage: {FUNCTIONS[name]}"
        if name in ("min", "max"):
            if len(args) < 2 or not all(is_number(t) for t in types):
                return self.error(node, f"{name}() of plain values needs two or more numbers; "
                                        + usage)
            pick = min if name == "min" else max
            typ = INT if all(t == INT for t in types) else FLOAT
            return typ, (lambda env: pick(f(env) for f in fns))
        if name in ("abs", "len", "str", "node_at", "domain_at") and len(args) != 1:
            return self.error(node, f"{name}() takes one argument; {usage}")
        if name == "abs":
            if not is_number(types[0]):
                return self.error(node, f"abs() needs a number, not {types[0]}")
            f0 = fns[0]
            return types[0], (lambda env: abs(f0(env)))
        if name == "len":
            if not (is_set(types[0]) or types[0] == STR or element_of(types[0])):
                return self.error(node, f"len() needs a set, list or str, not {types[0]}")
            f0 = fns[0]
            return INT, (lambda env: len(f0(env)))
        if name == "str":
            if is_object(types[0]) or element_of(types[0]):
                return self.error(node, f"str() of a {types[0]}: use one of its fields")
            f0 = fns[0]
            return STR, (lambda env: _text(f0(env)))
        if name in ("node_at", "domain_at"):
            if types[0] != INT:
                return self.error(node, f"{name}() needs an int id, not {types[0]}")
            f0 = fns[0]
            if name == "node_at":
                return "node", (lambda env: env[HOST].node_at(f0(env)))
            return "domain", (lambda env: env[HOST].domain_at(f0(env)))
        if name == "distance":
            if types != [INT, INT]:
                return self.error(node, f"distance() needs two node ids; {usage}")
            a, b = fns
            return INT, (lambda env: env[HOST].distance(a(env), b(env)))
        return self.error(node, f"{name}() needs a generator; {usage}")

    def generator(
        self, gen: ast.GeneratorExp, depth: int
    ) -> tuple[str, int, Type, Fn, list[Fn]] | None:
        """Check ``x for x in <list> if ...``: (name, slot, element type, iterable, ifs)."""
        if len(gen.generators) != 1:
            self.error(gen, "one 'for' per generator")
            return None
        comp = gen.generators[0]
        if comp.is_async or not isinstance(comp.target, ast.Name):
            self.error(comp.target, "the loop variable must be one plain name")
            return None
        name = comp.target.id
        if name in self.names or name in self.scope.unavailable:
            self.error(comp.target, f"loop variable {name!r} hides a name of the rule; "
                                    "pick another")
            return None
        it_t, it_f = self.expr(comp.iter, depth)
        if it_t == ERROR:
            return None
        elem = element_of(it_t)
        iterable = it_f
        if it_t == NODESET:
            elem = INT
            iterable = lambda env: sorted(it_f(env))  # noqa: E731 - ids in order
        if elem is None:
            self.error(comp.iter, f"'for' needs a list or a node set, but "
                                  f"{self.source(comp.iter)!r} is {it_t}")
            return None
        slot = self.slots.take()
        self.names[name] = (elem, slot)
        ifs: list[Fn] = []
        for cond in comp.ifs:
            t, f = self.expr(cond, depth)
            if t not in (BOOL, ERROR):
                self.error(cond, f"'if' in a generator needs true or false, not {t}")
            ifs.append(f)
        return name, slot, elem, iterable, ifs

    def aggregate(
        self,
        node: ast.Call,
        name: str,
        gen: ast.GeneratorExp,
        default: ast.keyword | None,
        depth: int,
    ) -> tuple[Type, Fn]:
        self.in_generator += 1
        try:
            loop = self.generator(gen, depth)
            if loop is None:
                return ERROR, _never
            var, slot, _, iterable, ifs = loop
            et, ef = self.expr(gen.elt, depth)
            del self.names[var]
        finally:
            self.in_generator -= 1
        if et == ERROR:
            return ERROR, _never
        dflt: Any = 0
        if default is not None:
            dt, df = self.expr(default.value, depth)
            if dt == ERROR:
                return ERROR, _never
            if not (is_number(dt) and isinstance(default.value, ast.Constant | ast.UnaryOp)):
                return self.error(default.value, "default= must be a number literal")
            dflt = df([])
        if name in ("any", "all") and et != BOOL:
            return self.error(gen.elt, f"{name}() needs a true/false element, not {et}")
        if name in ("sum", "min", "max") and not is_number(et):
            return self.error(gen.elt, f"{name}() needs a number element, not {et}")
        values = _iterate(slot, iterable, ifs, ef)
        fn: Fn
        typ: Type
        if name == "any":
            typ, fn = BOOL, (lambda env: any(values(env)))
        elif name == "all":
            typ, fn = BOOL, (lambda env: all(values(env)))
        elif name == "count":
            typ = INT
            if et == BOOL:
                fn = lambda env: sum(1 for v in values(env) if v)  # noqa: E731
            else:
                fn = lambda env: sum(1 for _ in values(env))  # noqa: E731
        elif name == "sum":
            typ = et
            if et == INT:
                fn = lambda env: _sat(sum(values(env)))  # noqa: E731
            else:
                fn = lambda env: sum(values(env), 0.0)  # noqa: E731
        else:
            pick = min if name == "min" else max
            typ = INT if et == INT and isinstance(dflt, int) else FLOAT
            fn = lambda env: pick(values(env), default=dflt)  # noqa: E731
        if self.trace and not self.in_generator:
            return typ, _traced_value(self.source(node), fn)
        return typ, fn

    def find(self, node: ast.expr) -> tuple[Type, Fn]:
        """A ``with`` binding: first/argmin/argmax(... for x in ... if ...)."""
        usage = "a [rule.with] entry is first(x for x in <list> if <cond>), or argmin/argmax"
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in FINDERS):
            return self.error(node, usage)
        name = node.func.id
        if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.GeneratorExp):
            return self.error(node, f"{name}() takes one generator; {FUNCTIONS[name]}")
        gen = node.args[0]
        self.finder_used = name
        self.in_generator += 1
        try:
            loop = self.generator(gen, 1)
            if loop is None:
                return ERROR, _never
            var, slot, elem, iterable, ifs = loop
            et, ef = self.expr(gen.elt, 1)
            del self.names[var]
        finally:
            self.in_generator -= 1
        if et == ERROR:
            return ERROR, _never
        if not is_object(elem):
            return self.error(gen, f"{name}() must range over a list of objects")
        fn: Fn
        if name == "first":
            if not (isinstance(gen.elt, ast.Name) and gen.elt.id == var):
                return self.error(gen.elt, f"first() yields the loop variable itself: "
                                           f"first({var} for {var} in ... if ...)")
            fn = _first(slot, iterable, ifs)
        else:
            if not is_number(et):
                return self.error(gen.elt, f"{name}() ranks by a number, not {et}")
            fn = _best(slot, iterable, ifs, ef, lowest=name == "argmin")
        if self.trace:
            text = self.source(node)
            inner = fn

            def traced(env: list[Any]) -> Any:
                found = inner(env)
                _record(env, TraceStep(text, (), label(found) if found is not None else None))
                return found

            return elem, traced
        return elem, fn


# -- closure builders (module level so each closure captures only what it needs) --


def _never(env: list[Any]) -> Any:
    raise AssertionError("an expression with errors was evaluated")


def _const(value: Any) -> Fn:
    return lambda env: value


def _and(parts: list[Fn]) -> Fn:
    if len(parts) == 2:
        a, b = parts
        return lambda env: a(env) and b(env)
    if len(parts) == 3:
        a, b, c = parts
        return lambda env: a(env) and b(env) and c(env)

    def run(env: list[Any]) -> bool:
        # A plain loop: a generator in all() costs more than the clauses themselves.
        for p in parts:  # noqa: SIM110
            if not p(env):
                return False
        return True

    return run


def _or(parts: list[Fn]) -> Fn:
    if len(parts) == 2:
        a, b = parts
        return lambda env: a(env) or b(env)

    def run(env: list[Any]) -> bool:
        for p in parts:  # noqa: SIM110 - as in _and
            if p(env):
                return True
        return False

    return run


def _chain(fns: list[Fn], ops: list[Callable[[Any, Any], Any]]) -> Fn:
    def run(env: list[Any]) -> bool:
        left = fns[0](env)
        for op, f in zip(ops, fns[1:], strict=True):
            right = f(env)
            if not op(left, right):
                return False
            left = right
        return True

    return run


def _traced_compare(text: str, fns: list[Fn], ops: list[Callable[[Any, Any], Any]]) -> Fn:
    def run(env: list[Any]) -> bool:
        values = [fns[0](env)]
        result = True
        for op, f in zip(ops, fns[1:], strict=True):
            values.append(f(env))
            if not op(values[-2], values[-1]):
                result = False
                break
        _record(env, TraceStep(text, tuple(values), result))
        return result

    return run


def _traced_value(text: str, fn: Fn) -> Fn:
    def run(env: list[Any]) -> Any:
        value = fn(env)
        _record(env, TraceStep(text, (), value))
        return value

    return run


def _filter(ifs: list[Fn]) -> Fn:
    """The generator's ``if`` clauses as one test (always true without any)."""
    if not ifs:
        return _const(True)
    return ifs[0] if len(ifs) == 1 else _and(ifs)


def _iterate(slot: int, iterable: Fn, ifs: list[Fn], elt: Fn) -> Callable[[list[Any]], Any]:
    keep = _filter(ifs)

    def values(env: list[Any]) -> Any:
        for item in iterable(env):
            env[slot] = item
            if keep(env):
                yield elt(env)

    return values


def _first(slot: int, iterable: Fn, ifs: list[Fn]) -> Fn:
    keep = _filter(ifs)

    def run(env: list[Any]) -> Any:
        for item in iterable(env):
            env[slot] = item
            if keep(env):
                return item
        return None

    return run


def _best(slot: int, iterable: Fn, ifs: list[Fn], key: Fn, lowest: bool) -> Fn:
    """The element with the lowest (highest) key; ties keep the earliest."""
    keep = _filter(ifs)

    def run(env: list[Any]) -> Any:
        best: Any = None
        best_key: Any = None
        for item in iterable(env):
            env[slot] = item
            if not keep(env):
                continue
            k = key(env)
            if k != k:  # NaN ranks nowhere
                continue
            if best is None or (k < best_key if lowest else k > best_key):
                best, best_key = item, k
        return best

    return run


__all__ = [
    "EVENT_FIELDS",
    "FUNCTIONS",
    "Compiled",
    "ExprError",
    "Scope",
    "Slots",
    "compile_expr",
    "suggest",
]
