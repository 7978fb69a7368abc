"""The discovery file of ``viewfinder serve``: ``HOME/server.json`` says which server serves a library.

Written atomically (temp file, fsync, rename) once the server answers, removed when it stops cleanly.
A file left by a killed server is *stale*: its pid is gone or its port does not answer as this library's
server. Readers ignore a stale file and the next ``viewfinder serve`` replaces it.

Only the standard library here: the CLI reads this file on every ``search`` and ``similar`` before
deciding whether it needs the heavy modules at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from search.disk import atomic_write

SERVER_FILE = "server.json"
TOKEN_ENV = "VIEWFINDER_TOKEN"  # the token of a server started with one, for `serve` and for clients


@dataclass(frozen=True, slots=True)
class ServerInfo:
    host: str  # the address it is bound to
    port: int
    pid: int
    home: str  # the library it serves, resolved (the library's identity for clients)
    token_required: bool  # the token itself is never written down
    started_at: str  # ISO 8601, UTC

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerInfo:
        return cls(
            host=str(data["host"]), port=int(data["port"]), pid=int(data["pid"]), home=str(data["home"]),
            token_required=bool(data["token_required"]), started_at=str(data.get("started_at", "")),
        )  # fmt: skip


def library_id(home: Path | str) -> str:
    """How a server and a client agree that they mean the same library: its folder, resolved."""
    return str(Path(home).expanduser().resolve())


def server_file(home: Path) -> Path:
    return Path(home).expanduser() / SERVER_FILE


def read(home: Path) -> ServerInfo | None:
    """The file's contents, or None when there is none or it cannot be parsed (a torn or foreign file)."""
    try:
        return ServerInfo.from_json(json.loads(server_file(home).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(home: Path, info: ServerInfo) -> None:
    """Atomically: a reader sees the old file or the whole new one, never part of it."""
    atomic_write(server_file(home), json.dumps(info.to_json(), indent=2).encode("utf-8"))


def remove(home: Path, pid: int) -> None:
    """Remove the file if it is still this process's (a newer server's file is left alone)."""
    current = read(home)
    if current is not None and current.pid == pid:
        server_file(home).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
