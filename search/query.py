"""The query object: what the CLI, the Python API, the HTTP server and the page all build.

A query is one or more weighted terms, each a text or an image (a path, indexed or not, or uploaded
bytes); subtracted terms carry a negative weight. Its embedding is the normalised weighted sum of the
terms' unit vectors (``search.querying.embed``). Around the terms: a :class:`~search.filters.Filter`,
a sort, a relevance cutoff, pagination (``offset``/``k``) and near-duplicate grouping.

Term syntax (the CLI's ``--and``/``--not`` and the positional query): ``[W:]TERM``. ``W`` is a
number (``0.5:boats``); a TERM that names an existing file is an image, anything else is text
(rclip's convention). This module is pure: parsing and validation, no model and no I/O beyond
``os.path.isfile``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

from search.errors import QueryError
from search.filterspec import Filter
from search.records import Hit

SORTS = ("relevance", "newest", "oldest", "modified")
Sort = Literal["relevance", "newest", "oldest", "modified"]
CutoffMode = Literal["none", "auto", "score"]

_WEIGHT = re.compile(r"^([+\-]?[0-9.][^:/\\\s]*):(.*)$", re.DOTALL)  # '0.5:boats', '2:sunset.jpg', '-1:x'


@dataclass(frozen=True, slots=True)
class Term:
    """One part of a query. ``kind='image'``: ``value`` is a path (str) or the image's bytes (an upload)."""

    kind: Literal["text", "image"]
    value: str | bytes
    weight: float = 1.0  # negative: subtracted ("not")
    label: str = ""  # how to show it (an upload's file name); defaults to the value

    @property
    def shown(self) -> str:
        if self.label:
            return self.label
        return self.value if isinstance(self.value, str) else f"<{len(self.value)} bytes>"

    def to_json(self) -> dict[str, Any]:
        if isinstance(self.value, bytes):
            raise QueryError("An uploaded image cannot be sent as JSON; send it as a file.")
        return {"kind": self.kind, "value": self.value, "weight": self.weight}


@dataclass(frozen=True, slots=True)
class Cutoff:
    """``none``: every result; ``auto``: adapts per query (``search.cutoff``); ``score``: a fixed cosine."""

    mode: CutoffMode = "none"
    score: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Cutoff:
        word = text.strip().lower()
        if word in ("none", "auto"):
            return cls(mode=word)  # type: ignore[arg-type]
        try:
            value = float(word)
        except ValueError:
            raise QueryError(f"The cutoff '{text}' is not auto, none or a score between -1 and 1.") from None
        if not -1.0 <= value <= 1.0:
            raise QueryError(f"The cutoff {value} is outside [-1, 1]: a cosine score is.")
        return cls(mode="score", score=value)

    def __str__(self) -> str:
        return f"{self.score:g}" if self.mode == "score" else self.mode


@dataclass(frozen=True, slots=True)
class Query:
    terms: tuple[Term, ...]
    filter: Filter = field(default_factory=Filter)
    sort: Sort = "relevance"
    cutoff: Cutoff = field(default_factory=Cutoff)
    k: int = 20
    offset: int = 0
    group: bool = False  # collapse near-duplicates (search.grouping)
    ensemble: bool = False  # short texts through the prompt ensemble (search.prompts: why it is off by default)

    def __post_init__(self) -> None:
        if not self.terms:
            raise QueryError("The query is empty: give at least one text or image.")
        if not any(t.weight > 0 for t in self.terms):
            raise QueryError("The query has nothing to look for: every term is subtracted or weighs 0.")
        if self.k < 1:
            raise QueryError("The number of results must be at least 1.")
        if self.offset < 0:
            raise QueryError("The offset must be 0 or more.")
        if self.sort not in SORTS:
            raise QueryError(f"Unknown sort '{self.sort}': use one of {', '.join(SORTS)}.")

    def with_page(self, page: int) -> Query:
        """The same query, moved to 1-based page ``page`` of ``k`` results."""
        if page < 1:
            raise QueryError("Pages are numbered from 1.")
        return replace(self, offset=(page - 1) * self.k)

    def to_json(self) -> dict[str, Any]:
        return {
            "terms": [t.to_json() for t in self.terms],
            "filter": filter_to_json(self.filter),
            "sort": self.sort,
            "cutoff": str(self.cutoff),
            "k": self.k,
            "offset": self.offset,
            "group": self.group,
            "ensemble": self.ensemble,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Query:
        try:
            terms = tuple(
                Term(kind=_kind(t["kind"]), value=str(t["value"]), weight=_weight(t.get("weight", 1.0)))
                for t in data["terms"]
            )
            return cls(
                terms=terms,
                filter=filter_from_json(data.get("filter") or {}),
                sort=data.get("sort", "relevance"),
                cutoff=Cutoff.parse(str(data.get("cutoff", "none"))),
                k=int(data.get("k", 20)),
                offset=int(data.get("offset", 0)),
                group=bool(data.get("group", False)),
                ensemble=_ensemble(data),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise QueryError(f"The query is not well formed ({type(err).__name__}: {err}).") from None


def _kind(value: object) -> Literal["text", "image"]:
    if value not in ("text", "image"):
        raise QueryError(f"A term's kind is 'text' or 'image', not {value!r}.")
    return value  # type: ignore[return-value]


def _weight(value: object) -> float:
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise QueryError(f"The weight {value!r} is not a number.") from None
    if not math.isfinite(weight):
        raise QueryError(f"The weight {value!r} is not a finite number.")
    return weight


def parse_term(spec: str, *, negate: bool = False) -> Term:
    """``[W:]TERM`` -> a Term: an existing file is an image, anything else text. ``negate`` for ``--not``."""
    text = spec.strip()
    weight = 1.0
    match = _WEIGHT.match(text)
    if match and not os.path.exists(os.path.expanduser(text)):
        weight = _weight(match.group(1))
        text = match.group(2).strip()
    if not text:
        raise QueryError(f"The term '{spec}' is empty.")
    path = os.path.expanduser(text)
    kind: Literal["text", "image"] = "image" if os.path.isfile(path) else "text"
    if kind == "image":
        text = os.path.abspath(path)
    elif os.path.isdir(path):
        raise QueryError(f"{path} is a folder, not an image: name an image file (or use --folder to search in it).")
    return Term(kind=kind, value=text, weight=-abs(weight) if negate else weight)


def build_terms(main: list[str], plus: list[str] = (), minus: list[str] = ()) -> tuple[Term, ...]:  # type: ignore[assignment]
    return tuple(
        [parse_term(s) for s in main] + [parse_term(s) for s in plus] + [parse_term(s, negate=True) for s in minus]
    )


@dataclass(frozen=True, slots=True)
class Results:
    """What a query answers: one page of hits and what the user should be told about it."""

    hits: list[Hit]  # this page, best first (or in the requested sort)
    cut: int = 0  # results among the ranked pool that the cutoff removed
    matched: int = 0  # images that pass the filter (all of the library without one)
    notices: tuple[str, ...] = ()  # things to tell the user once (long text split, indexer running)
    more: bool = False  # whether a next page may hold results

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": [h.to_json() for h in self.hits],
            "cut": self.cut,
            "matched": self.matched,
            "notices": list(self.notices),
            "more": self.more,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        return cls(
            hits=[Hit.from_json(h) for h in data["hits"]],
            cut=int(data.get("cut", 0)),
            matched=int(data.get("matched", 0)),
            notices=tuple(data.get("notices", ())),
            more=bool(data.get("more", False)),
        )


# --- the filter as JSON (for the HTTP server and saved queries) -------------------------------------------


def filter_to_json(flt: Filter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in flt.__dataclass_fields__:
        value = getattr(flt, name)
        if value in (None, frozenset(), ()):
            continue
        if isinstance(value, date):
            value = value.isoformat()
        elif isinstance(value, frozenset):
            value = sorted(value)
        out[name] = value
    return out


def filter_from_json(data: dict[str, Any]) -> Filter:
    fields = Filter.__dataclass_fields__
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise QueryError(f"Unknown filter field(s): {', '.join(unknown)}.")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if value is None:
            continue
        if name in ("date_from", "date_to"):
            values[name] = parse_date(str(value))
        elif isinstance(value, list):
            values[name] = frozenset(str(v) for v in value)
        else:
            values[name] = value
    return Filter.make(**values)


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip()[:10]) if len(text.strip()) >= 10 else date.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"'{text}' is not a date: use YYYY-MM-DD.") from None


def _ensemble(data: dict[str, Any]) -> bool:
    """``ensemble`` of a JSON query. One from before that field says ``raw``, its opposite, instead."""
    if "ensemble" in data:
        return bool(data["ensemble"])
    return not bool(data.get("raw", True))
