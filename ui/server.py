"""The HTTP API of ``viewfinder serve``: one library and its model, loaded once, answering JSON.

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``):

- ``GET /health``: alive, which library, how many queries it has answered.
- ``GET /info``: the library's facts (as ``viewfinder info --json``).
- ``POST /search``: ``{"query": Query.to_json(), "model"}`` (every option of the CLI; ``search.query``) or
  the shorthand ``{"text", "k"}`` -> ``Results.to_json()``: ``{"hits", "cut", "matched", "notices", "more"}``
  (hits as ``viewfinder search --json``). Image terms are paths the library holds (404 otherwise: the
  server reads no other file) or, in a multipart body, parts ``term-<i>`` beside the ``query`` field.
- ``POST /similar``: JSON ``{"path", "k", "model"}`` for an indexed image (its stored vector: no file is
  read), or a multipart upload (field ``image``, plus ``k``); any other path -> 404.
- ``GET /thumb?path=&size=``: a JPEG thumbnail of an *indexed* file (``search.thumbs``); any other path -> 404.

Every answer carries ``X-Viewfinder-Home`` (the library served) so a client can tell it reached the right
server. Errors are ``{"error": one sentence, "type": the domain error's class}`` with a 4xx/5xx status.

Limits: a request body over the page's upload cap (``ui.launch.MAX_UPLOAD_MB``, plus the multipart
framing) is refused with 413 before it is read, an upload over ``ui.session.UPLOAD_MAX_PIXELS`` with 413
from its header, before any pixel is decoded. With a token, every request without
``Authorization: Bearer <token>`` gets 401 (``ui.serverguard``).

Concurrency: FastAPI runs the handlers in a thread pool; one lock serialises the library and the model
(a query is milliseconds; the model already uses every core), and the catalog is re-read when an indexer
has committed (``ui.serverstate``), so a running server sees new index runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Query as Param
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from search import errors
from search.images import read_image_info
from search.library import Library
from search.query import Query, Term
from search.settings import resolve_model_id
from search.snapshot import check_model
from search.thumbs import GRID_SIDE, PREVIEW_SIDE
from ui.launch import MAX_UPLOAD_MB
from ui.serverfile import library_id
from ui.serverguard import Guard
from ui.serverstate import State
from ui.session import UPLOAD_MAX_PIXELS

log = logging.getLogger("viewfinder.serve")

MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
MULTIPART_SLACK = 64 * 2**10  # boundaries and form fields around an upload
MIN_THUMB_SIDE = 16
MAX_TERMS = 16  # image parts one multipart query may upload


class NotIndexed(errors.QueryError):
    """A path the library does not hold (404: the client may upload the file instead). ``terms``: the
    indices of the query's image terms that are not indexed."""

    def __init__(self, message: str, terms: list[int] | None = None) -> None:
        super().__init__(message)
        self.terms = terms or []


class UploadTooLarge(errors.QueryError):
    """An upload over the byte or pixel cap (413)."""


_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotIndexed, 404),
    (UploadTooLarge, 413),
    (errors.ImageDecodeError, 415),
    (errors.ModelMismatch, 409),
    (errors.ModelLoadError, 503),
    (errors.LibraryNotFound, 503),
    (errors.LibraryCorrupt, 500),
    (errors.LibraryLocked, 503),
    (errors.QueryError, 400),
)


def status_for(err: errors.ViewfinderError) -> int:
    return next((status for cls, status in _STATUS if isinstance(err, cls)), 400)


def error_body(err: errors.ViewfinderError) -> dict[str, Any]:
    kind = type(err)
    while kind.__module__ != errors.__name__:  # our own subclasses travel as the domain error they extend
        kind = kind.__mro__[1]
    body: dict[str, Any] = {"error": str(err), "type": kind.__name__}
    if isinstance(err, NotIndexed) and err.terms:
        body["terms"] = err.terms
    return body


# --- requests ---------------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    """Either ``query`` (``search.query.Query.to_json()``: every option the CLI has) or a plain ``text``."""

    query: dict[str, Any] | None = Field(None, description="A whole query: terms, filter, sort, cutoff, k, offset, group, ensemble.")
    text: str | None = Field(None, description="Shorthand for a query of one text term.")
    k: int = Field(20, ge=1, le=10_000, description="Number of results (with ``text``).")
    model: str | None = Field(None, description="The model the client expects (409 if the library's is another).")

    def to_query(self) -> Query:
        if self.query is not None:
            return Query.from_json(self.query)
        if not self.text or not self.text.strip():
            raise errors.QueryError("The text query is empty.")
        return Query(terms=(Term(kind="text", value=self.text.strip()),), k=self.k)


class SimilarRequest(BaseModel):
    path: str = Field(description="An image the library holds (absolute path, as in results).")
    k: int = Field(20, ge=1, le=10_000)
    model: str | None = None


def check_requested_model(state: State, model: str | None) -> None:
    if model:
        check_model(state.library.snapshot, resolve_model_id(model), state.home)


def check_upload(name: str, data: bytes) -> None:
    """The page's caps, from the header alone: bytes, then pixels (413); not an image (415)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"{name} is {len(data) / 2**20:.0f} MB; images up to {MAX_UPLOAD_MB} MB can be uploaded.")
    try:
        info = read_image_info(data)
    except errors.ImageDecodeError as err:
        raise errors.ImageDecodeError(f"The uploaded {name} cannot be used: {err.reason}.") from err
    if info.width * info.height > UPLOAD_MAX_PIXELS:
        raise UploadTooLarge(
            f"{name} is {info.width} × {info.height} pixels, too large to search with: "
            f"upload a copy of at most {UPLOAD_MAX_PIXELS // 1_000_000} megapixels."
        )


def with_uploads(query: Query, uploads: dict[int, tuple[str, bytes]]) -> Query:
    """The query with term ``i`` (an image) replaced by the bytes uploaded as part ``term-i``."""
    terms = list(query.terms)
    for i, (name, data) in uploads.items():
        if not 0 <= i < len(terms) or terms[i].kind != "image":
            raise errors.QueryError(f"The upload term-{i} matches no image term of the query.")
        check_upload(name, data)
        terms[i] = replace(terms[i], value=data, label=name)
    return replace(query, terms=tuple(terms))


def run_query(state: State, query: Query, model: str | None) -> dict[str, Any]:
    """``Searcher.run`` under the lock. An image term given by path must be one the library holds: the
    server reads no other file (404, so a client can upload it instead)."""
    started = time.perf_counter()
    with state.fresh() as library:
        check_requested_model(state, model)
        missing = [i for i, term in enumerate(query.terms) if term.kind == "image" and isinstance(term.value, str) and not _indexed(library, term.value)]
        if missing:
            names = ", ".join(str(query.terms[i].value) for i in missing)
            raise NotIndexed(f"{names} {'is not an indexed image' if len(missing) == 1 else 'are not indexed images'} of this library.", missing)
        results = state.searcher.run(query)
        state.queries += 1
    return {**results.to_json(), "seconds": round(time.perf_counter() - started, 6)}


def _indexed(library: Library, path: str) -> bool:
    record = library.record(os.path.abspath(path))
    return record is not None and record.faiss_id is not None


async def read_form(request: Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """A multipart body as (text fields, files by field name)."""
    form = await request.form(max_files=MAX_TERMS, max_fields=MAX_TERMS + 8)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields[key] = value
        else:
            files[key] = (value.filename or "the upload", await value.read())
    return fields, files


def _json_field(fields: dict[str, str], key: str) -> dict[str, Any] | None:
    if not fields.get(key):
        return None
    try:
        value = json.loads(fields[key])
    except ValueError:
        raise errors.QueryError(f"The form field '{key}' is not JSON.") from None
    if not isinstance(value, dict):
        raise errors.QueryError(f"The form field '{key}' is not a JSON object.")
    return value


# --- the app ----------------------------------------------------------------------------------------


def create_app(
    state: State,
    *,
    token: str | None = None,
    on_ready: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> Any:
    """The ASGI app: FastAPI wrapped in ``Guard``. ``on_ready``/``on_stop`` run when serving starts/stops
    (the discovery file is written and removed there)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if on_ready:
            on_ready()
        try:
            yield
        finally:
            if on_stop:
                on_stop()

    api = FastAPI(
        title="Viewfinder",
        summary="Semantic image search over one library: by text, by an indexed image or by an upload.",
        lifespan=lifespan,
    )

    @api.exception_handler(errors.ViewfinderError)
    async def domain_error(_: Request, err: errors.ViewfinderError) -> JSONResponse:
        return JSONResponse(error_body(err), status_code=status_for(err))

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}.", "type": "QueryError"}, status_code=422)

    @api.get("/health")
    def health() -> dict[str, Any]:
        """Alive; the library served, its model and size, queries answered since the start."""
        return {"status": "ok", "home": library_id(state.home), "pid": os.getpid(), "model": state.model_id,
                "images": len(state.library), "queries": state.queries}  # fmt: skip

    @api.get("/info")
    def info() -> dict[str, Any]:
        """The library's facts, as ``viewfinder info --json``."""
        with state.fresh() as library:
            return library.info().to_json()

    @api.post(
        "/search",
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": SearchRequest.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "query": {"type": "string", "description": "Query JSON"},
                "term-0": {"type": "string", "format": "binary", "description": "bytes of image term 0 (and term-1...)"},
            }}},
        }}},
    )  # fmt: skip
    async def search(request: Request) -> dict[str, Any]:
        """A query (as ``viewfinder search``/``similar`` build it), answered as ``{"hits", "cut", "matched",
        "notices", "more"}``. Image terms by path must be indexed; others are uploaded as multipart parts
        ``term-<i>`` beside a ``query`` field."""
        if _is_multipart(request):
            fields, files = await read_form(request)
            body = SearchRequest(query=_json_field(fields, "query"), model=fields.get("model") or None)
            uploads = {_term_index(key): f for key, f in files.items()}
            query = with_uploads(body.to_query(), uploads)
        else:
            body = _parse(SearchRequest, await request.body())
            query = body.to_query()
        return await run_in_threadpool(run_query, state, query, body.model)

    @api.post(
        "/similar",
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": SimilarRequest.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary"}, "k": {"type": "integer", "default": 20},
            }}},
        }}},
    )  # fmt: skip
    async def similar(request: Request) -> dict[str, Any]:
        """Images like an indexed one (JSON: its ``path``) or like an uploaded image (multipart: ``image``)."""
        if _is_multipart(request):
            fields, files = await read_form(request)
            if "image" not in files:
                raise errors.QueryError("The upload has no file in its 'image' field.")
            name, data = files["image"]
            query = Query(terms=(Term(kind="image", value=data, label=name),), k=_int_field(fields.get("k"), 20))
            check_upload(name, data)
            return await run_in_threadpool(run_query, state, query, fields.get("model") or None)
        body = _parse(SimilarRequest, await request.body())
        query = Query(terms=(Term(kind="image", value=body.path),), k=body.k)
        return await run_in_threadpool(run_query, state, query, body.model)

    @api.get("/thumb", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumb(
        path: Annotated[str, Param(description="An indexed file, as in results.")],
        size: Annotated[int, Param(ge=MIN_THUMB_SIDE, le=PREVIEW_SIDE, description="Longer side, pixels.")] = GRID_SIDE,
    ) -> Response:
        """A JPEG thumbnail of an indexed image; any other path is refused (404)."""
        try:  # the catalog itself is asked (not the snapshot): a file removed since is refused
            data = state.thumbs.get(path, size)
        except errors.ImageDecodeError as err:
            raise NotIndexed(f"{path} can no longer be read ({err.reason}).") from err
        except errors.QueryError as err:
            raise NotIndexed(str(err)) from err
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return Guard(api, home=library_id(state.home), token=token, max_body=MAX_UPLOAD_BYTES + MULTIPART_SLACK)


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "multipart/form-data"


def _parse(model: type[Any], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValueError as err:
        first = err.errors()[0] if hasattr(err, "errors") and err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "the body"
        raise errors.QueryError(f"The request is not valid JSON for this endpoint ({where}: {first.get('msg', err)}).") from None


def _term_index(key: str) -> int:
    if not key.startswith("term-") or not key[5:].isdigit():
        raise errors.QueryError(f"Unknown upload field '{key}': name image parts term-0, term-1, ...")
    return int(key[5:])


def _int_field(value: object, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        k = int(str(value))
    except ValueError:
        raise errors.QueryError(f"k must be a whole number, not {value!r}.") from None
    if not 1 <= k <= 10_000:
        raise errors.QueryError("k must be between 1 and 10000.")
    return k
