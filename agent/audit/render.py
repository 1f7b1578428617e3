"""How entries print: a fixed-width table row (streams, no width pass) or one JSON object."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agent.audit import records
from agent.audit.reader import Entry
from agent.audit.why import action_phrase, party

HEADER = f"{'SEQ':>8}  {'TIME (UTC)':<23}  {'CLOCK':>9}  {'KIND':<11}  {'SUBJECT':<22}  SUMMARY"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(entry: Entry) -> str:
    g = entry.get
    if entry.kind == records.EVENT:
        data = g("data") or {}
        pairs = sorted(data.items()) if isinstance(data, dict) else []
        extra = " ".join(f"{k}={v}" for k, v in pairs)
        return f"{g('type')} {extra}".rstrip()
    if entry.kind == records.DECISION:
        out = str(g("outcome"))
        if g("suppressed_by"):
            out += f" ({g('suppressed_by')})"
        reason = g("reason") or ""
        return f"rule {g('rule')}: {out}" + (f" - {reason}" if reason else "")
    if entry.kind == records.ACTION:
        tail = f" [decision {g('decision')}]" if g("decision") is not None else ""
        return f"{g('type')} {g('outcome')}: {action_phrase(entry)}{tail}"
    if entry.kind == records.RULE_RELOAD:
        state = "ok" if g("ok") else "rejected"
        errors = "; ".join(str(e) for e in g("errors") or [])
        return f"{state}, {g('rules')} rules from {len(g('files') or [])} files" + (
            f": {errors}" if errors else ""
        )
    if entry.kind == records.AGENT_START:
        dry = " (dry run)" if g("dry_run") else ""
        return f"xnuma {g('version')} pid {g('pid')} on {g('backend')}{dry}"
    if entry.kind == records.AGENT_STOP:
        return f"{g('reason')} (exit {g('exit_code')})"
    if entry.kind == records.RETENTION:
        removed = ", ".join(g("removed") or [])
        return f"removed {removed}; the log now starts at seq {g('first_kept_seq')}"
    if entry.kind == records.RECOVERY:
        return f"cut {g('torn_bytes')} torn bytes from {g('file')} at offset {g('offset')}"
    return " ".join(f"{k}={v}" for k, v in sorted(entry.body.items()) if k != "kind")


def table_row(entry: Entry) -> str:
    wall = datetime.fromtimestamp(entry.wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    clock = f"{entry.mono:.3f}" if entry.mono is not None else "-"
    subject = party(entry.subject) if entry.subject else "-"
    return (
        f"{entry.seq:>8}  {wall:<23}  {clock:>9}  {entry.kind:<11}  "
        f"{_clip(subject, 22):<22}  {summary(entry)}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def json_line(entry: Entry) -> str:
    """The whole record (bytes as hex) plus its own ``hash``, on one line."""
    obj: dict[str, Any] = {"seq": entry.seq, "t": entry.wall}
    if entry.mono is not None:
        obj["mono"] = entry.mono
    obj["prev"] = entry.prev.hex()
    obj["hash"] = entry.hash.hex()
    obj.update(_jsonable(entry.body))
    return json.dumps(obj, sort_keys=False, separators=(",", ":"))
