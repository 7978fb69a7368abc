"""The filter a query carries, as plain data (no SQL, no numpy: the CLI builds it before it knows
whether a server or this process answers). ``search.filters`` turns it into SQL; its docstring states
what each field keeps."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date

from search.errors import QueryError

FORMAT_ALIASES = {"JPG": "JPEG", "JPE": "JPEG", "JFIF": "JPEG", "TIF": "TIFF", "HEIC": "HEIF", "APNG": "PNG"}


def known_formats() -> frozenset[str]:
    """Format names an image can be catalogued under (Pillow's, plus the plugin formats we recognise)."""
    from PIL import Image

    Image.init()
    return frozenset(Image.registered_extensions().values()) | {"HEIF", "AVIF", "JXL", "MPO"}


def format_name(text: str) -> str:
    name = text.strip().lstrip(".").upper()
    name = FORMAT_ALIASES.get(name, name)
    if name not in known_formats():
        raise QueryError(f"Unknown image format '{text}': use a name like JPEG, PNG, WEBP, GIF, TIFF or HEIF.")
    return name


@dataclass(frozen=True, slots=True)
class Filter:
    folder: str | None = None  # absolute folder: images in it and below
    date_from: date | None = None  # inclusive
    date_to: date | None = None  # inclusive
    formats: frozenset[str] = field(default_factory=frozenset)
    min_width: int | None = None
    min_height: int | None = None
    camera: str | None = None  # substring of EXIF make or model, any case
    glob: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)  # labels of `viewfinder tag`: images holding all of them

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)

    @classmethod
    def make(cls, **values: object) -> Filter:
        """A filter from user input: format names normalised and checked, folder made absolute, bounds checked."""
        out = dict(values)
        if out.get("formats"):
            out["formats"] = frozenset(format_name(str(f)) for f in out["formats"])  # type: ignore[union-attr]
        if out.get("folder"):
            out["folder"] = os.path.abspath(os.path.expanduser(str(out["folder"])))
        if "tags" in out:
            out["tags"] = frozenset(" ".join(str(t).split()) for t in out["tags"] or () if str(t).strip())  # type: ignore[union-attr]
        for name in ("min_width", "min_height"):
            if out.get(name) is not None:
                try:
                    out[name] = int(out[name])  # type: ignore[call-overload]
                except (TypeError, ValueError):
                    raise QueryError(f"{name.replace('_', ' ')} must be a whole number, not {out[name]!r}.") from None
                if out[name] < 0:  # type: ignore[operator]
                    raise QueryError(f"{name.replace('_', ' ')} must be 0 or more.")
        if out.get("date_from") and out.get("date_to") and out["date_from"] > out["date_to"]:  # type: ignore[operator]
            raise QueryError(f"The date range is empty: {out['date_from']} is after {out['date_to']}.")
        try:
            return cls(**out)  # type: ignore[arg-type]
        except TypeError as err:
            raise QueryError(f"Unknown filter: {err}.") from None
