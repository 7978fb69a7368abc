"""What ``viewfinder info`` says about the index and the last run, true after an interrupted run too: the
batches it committed are searchable (the search adds them from the stored vectors) though no index file
holds them yet. Pure functions of ``LibraryInfo.to_json()``."""

from __future__ import annotations

from typing import Any


def index_line(facts: dict[str, Any]) -> str:
    index = facts.get("index") or {}
    pending = int(facts.get("pending") or 0)
    if not index:
        if pending:
            return f"pending: {pending} committed images are searchable (scanned exactly); the next `viewfinder index` builds the index"
        return "none"
    params = ", ".join(f"{k}={v}" for k, v in index.items() if k not in ("kind", "dim") and v) or "-"
    line = f"{index.get('kind')} ({params})"
    if pending:
        line += f"; {pending} newer images not in it yet (searched exactly until the next `viewfinder index` finishes)"
    return line


def last_indexed_line(facts: dict[str, Any]) -> str:
    finished, committed = facts.get("last_indexed_at"), facts.get("last_committed_at")
    interrupted = bool(facts.get("pending")) or (committed is not None and (finished is None or committed > finished))
    if finished is None:
        if facts.get("images") or committed:
            since = f", last batch committed {committed}" if committed else ""
            return f"never finished (a run was interrupted{since}; {facts.get('images', 0)} images committed)"
        return "never"
    if interrupted:
        since = f" at {committed}" if committed else ""
        return f"{finished} (a later run was interrupted{since}; what it committed is searchable)"
    return str(finished)
