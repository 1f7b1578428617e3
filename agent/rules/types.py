"""The types of the condition language, as plain names.

Scalars: ``int``, ``float``, ``bool``, ``str``; sets: ``nodeset`` (node ids)
and ``strset``; objects: ``host``, ``node``, ``domain``, ``vcpu``, ``backend``,
``event``; lists of objects: ``list[vcpu]`` and the like. ``int`` mixes with
``float`` in arithmetic and comparisons; nothing else mixes.
"""

from __future__ import annotations

from dataclasses import dataclass

Type = str

INT: Type = "int"
FLOAT: Type = "float"
BOOL: Type = "bool"
STR: Type = "str"
NODESET: Type = "nodeset"
STRSET: Type = "strset"
ERROR: Type = "<error>"  # a subexpression already reported; silences follow-on errors

OBJECTS: tuple[Type, ...] = ("host", "node", "domain", "vcpu", "backend", "event")
SCALARS: tuple[Type, ...] = (INT, FLOAT, BOOL, STR)


def list_of(obj: Type) -> Type:
    return f"list[{obj}]"


def element_of(t: Type) -> Type | None:
    """The object type of a list type, or None."""
    if t.startswith("list[") and t.endswith("]"):
        return t[5:-1]
    return None


def is_number(t: Type) -> bool:
    return t in (INT, FLOAT)


def is_object(t: Type) -> bool:
    return t in OBJECTS


def is_set(t: Type) -> bool:
    return t in (NODESET, STRSET)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A field a rule can read: its name, type, unit and what it means."""

    name: str
    type: Type
    unit: str
    doc: str
