"""The CLI's side of ``viewfinder serve``: ask a running server instead of loading the library and model.

``search`` and ``similar`` call :func:`ask_server` first. It finds the server through the library's
discovery file (``ui.serverfile``) or ``--server URL``, sends the query and returns the server's hits;
None means "answer in-process" (no server, ``--no-server``, or a server that is gone or serves another
library). A server named with ``--server`` that cannot answer is an error instead: it was asked for.

Standard library only (``http.client``): this path must start in a fraction of a second, so it imports
neither torch nor faiss nor numpy (bench/cli_cold.py measures it; tests/test_server.py guards it).
"""

from __future__ import annotations

import http.client
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from search import errors
from search.errors import ViewfinderError
from ui import serverfile
from ui.launch import MAX_UPLOAD_MB

T = TypeVar("T")

TOKEN_ENV = serverfile.TOKEN_ENV
HOME_HEADER = "X-Viewfinder-Home"  # every response names the library it served
CONNECT_TIMEOUT = 1.0  # seconds; a local server answers in milliseconds
READ_TIMEOUT = 120.0  # a first query after a big index run reloads the index
UPLOAD_CAP = MAX_UPLOAD_MB * 2**20  # the server's cap too (ui.server); a bigger query image goes in-process


class ServerGone(Exception):
    """The server did not answer (refused, reset, timed out) or is not this library's server."""


@dataclass(frozen=True, slots=True)
class Remote:
    """One server: ``Remote("http://127.0.0.1:8765", token, home)``."""

    url: str
    token: str | None
    home: str | None  # the library it must be serving (None: whatever it serves, for --server URL)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        """The decoded JSON answer. Raises ``ServerGone``, or the domain error the server reported."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=CONNECT_TIMEOUT)
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.connect()
            conn.sock.settimeout(READ_TIMEOUT)
            conn.request(method, parts.path.rstrip("/") + path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise ServerGone(f"{self.url} did not answer ({err})") from err
        finally:
            conn.close()
        if response.status == 401:
            raise error_from(401, None, self.url)
        served = response.getheader(HOME_HEADER)
        if served is None or (self.home is not None and served != self.home):
            raise ServerGone(f"{self.url} is not a Viewfinder server of {self.home or 'any library'}")
        try:
            data = json.loads(payload or b"null")
        except ValueError as err:
            raise ServerGone(f"{self.url} answered something that is not JSON") from err
        if response.status >= 400:
            raise error_from(response.status, data, self.url)
        return data

    def run(self, query: Any, *, model: str | None) -> Any:
        """A whole ``search.query.Query`` (``POST /search``), answered as ``search.query.Results``. Image
        terms go as paths first (an indexed one needs no upload); if the server holds one of them not,
        the local files are uploaded with the query. ``ServerGone`` when an image is over the server's
        upload cap (the in-process path has none)."""
        from search.query import Results

        body = json.dumps({"query": query.to_json(), "model": model}).encode()
        try:
            return Results.from_json(self.request("POST", "/search", body, "application/json"))
        except errors.QueryError as err:
            if getattr(err, "status", None) != 404:
                raise
            missing = set(getattr(err, "terms", None) or range(len(query.terms)))
        files: dict[str, tuple[str, bytes]] = {}
        for i, term in enumerate(query.terms):
            if i in missing and term.kind == "image" and isinstance(term.value, str) and Path(term.value).is_file():
                if Path(term.value).stat().st_size > UPLOAD_CAP:
                    raise ServerGone("a query image is larger than the server's upload cap")
                files[f"term-{i}"] = (Path(term.value).name, Path(term.value).read_bytes())
        data, content_type = multipart({"query": json.dumps(query.to_json()), "model": model or ""}, files)
        try:
            return Results.from_json(self.request("POST", "/search", data, content_type))
        except errors.QueryError as err:
            if getattr(err, "status", None) == 413:  # together over the cap: no cap in-process
                raise ServerGone("the query images are larger than the server's upload cap") from err
            raise


def error_from(status: int, data: Any, url: str) -> ViewfinderError:
    """The server's ``{"error": sentence, "type": "QueryError"}`` as the same domain error in-process
    code raises (so the CLI prints the same one sentence), with the HTTP status attached."""
    if status == 401:
        err: ViewfinderError = errors.ViewfinderError(
            f"The server at {url} needs a token: set {TOKEN_ENV} to the token it was started with, or pass --no-server."
        )
    else:
        message = data.get("error") if isinstance(data, dict) else None
        kind = getattr(errors, str(data.get("type")) if isinstance(data, dict) else "", None)
        cls = kind if isinstance(kind, type) and issubclass(kind, ViewfinderError) else ViewfinderError
        if cls is errors.ImageDecodeError:
            cls = errors.QueryError  # its constructor takes a reason, not a sentence
        err = cls(message or f"The server at {url} answered HTTP {status}.")
        if isinstance(data, dict) and isinstance(data.get("terms"), list):
            err.terms = [int(i) for i in data["terms"]]  # type: ignore[attr-defined]
    err.status = status  # type: ignore[attr-defined]
    return err


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) and its Content-Type; ``files``: field -> (file name, bytes)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for field_name, (filename, content) in files.items():
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{safe}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def discover(home: Path, token: str | None) -> Remote | None:
    """The live server of ``home`` from its discovery file, or None (no file, or its process is gone)."""
    info = serverfile.read(home)
    if info is None or not serverfile.pid_alive(info.pid):
        return None
    if info.token_required and not token:
        return None  # it would answer 401: this CLI does not hold the token, so work in-process
    return Remote(info.url, token, serverfile.library_id(home))


def ask_server(home: Path, url: str | None, no_server: bool, call: Callable[[Remote], T]) -> T | None:
    """``call(remote)`` on the server for ``home`` (or at ``url``); None: answer in-process instead."""
    if no_server:
        return None
    token = os.environ.get(TOKEN_ENV) or None
    if url:
        try:
            return call(Remote(url, token, None))
        except ServerGone as err:
            raise ViewfinderError(f"The server {err}; leave out --server to search in this process.") from None
    remote = discover(home, token)
    if remote is None:
        return None
    try:
        return call(remote)
    except ServerGone:
        return None  # killed since it wrote its file, or another program took its port
