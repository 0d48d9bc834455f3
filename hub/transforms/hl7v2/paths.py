"""HL7 v2 paths: ``PID-3``, ``PID-3.1``, ``PID-3[2].1``, ``OBX[3]-5``, ``PID-5.1.1``, ``MSH-9.2``, ``ZPD``.

Grammar (all indexes 1-based)::

    path        = segment [ "[" occurrence "]" ] [ "-" field [ "[" repetition "]" ] [ "." component [ "." sub ] ] ]
    segment     = 3 characters: an upper-case letter then upper-case letters or digits (``PID``, ``ZPD``, ``IN1``)

``OBX[3]`` is the third OBX segment of the message, counted over the whole message (not within a group).
Parsed paths are cached: a path is parsed once per process, not once per message.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from hub.errors import MappingError

__all__ = ["Hl7Path", "parse_path", "check_path", "looks_like_path"]

_PATH_RE = re.compile(
    r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?"  # segment and occurrence
    r"(?:-(\d+)(?:\[(\d+)\])?"  # field and repetition
    r"(?:\.(\d+)(?:\.(\d+))?)?)?"  # component and subcomponent
)


class Hl7Path(NamedTuple):
    """A parsed path; ``None`` means "not given" (``get`` then takes the first, ``get_all`` takes every one)."""

    segment: str
    occurrence: int | None = None
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    def __str__(self) -> str:
        out = self.segment
        if self.occurrence is not None:
            out += f"[{self.occurrence}]"
        if self.field is not None:
            out += f"-{self.field}"
            if self.repetition is not None:
                out += f"[{self.repetition}]"
            if self.component is not None:
                out += f".{self.component}"
                if self.subcomponent is not None:
                    out += f".{self.subcomponent}"
        return out


_cache: dict[str, Hl7Path] = {}


def parse_path(path: str) -> Hl7Path:
    """Parse an HL7 path; raises :class:`hub.errors.MappingError` (with the path) when it is not one."""
    found = _cache.get(path)
    if found is not None:
        return found
    m = _PATH_RE.fullmatch(path.strip()) if isinstance(path, str) else None
    if m is None:
        raise MappingError(
            f"{path!r} is not an HL7 v2 path (expected e.g. PID-3, PID-3.1, PID-3[2].1, OBX[3]-5, PID-5.1.1)",
            location=str(path),
        )
    seg, occ, fld, rep, comp, sub = m.groups()
    values = [int(v) if v is not None else None for v in (occ, fld, rep, comp, sub)]
    if any(v == 0 for v in values):
        raise MappingError(f"{path!r}: HL7 positions start at 1", location=path)
    parsed = Hl7Path(seg, *values)
    if len(_cache) < 4096:  # paths come from configuration, so the set is small; the bound guards misuse
        _cache[path] = parsed
    return parsed


# Segments and how many fields each has in the latest version hl7apy knows (a later version only adds fields, so
# the latest is the bound); read once, when a configuration is checked. Z segments are the site's own: no bound.
_FIELD_COUNTS: dict[str, int] | None = None
_LOOKS = re.compile(r"[A-Z][A-Z0-9]{2}(?:\[[^\]]*\])?-")


def _field_counts() -> dict[str, int]:
    global _FIELD_COUNTS
    if _FIELD_COUNTS is None:
        counts: dict[str, int] = {}
        try:
            from hl7apy import load_library

            for version in ("2.5.1", "2.8.2"):
                for name, (_, children) in load_library(version).ELEMENTS["Segment"].items():
                    counts[name] = max(counts.get(name, 0), len(children))
        except Exception:
            counts = {}
        _FIELD_COUNTS = counts
    return _FIELD_COUNTS


def looks_like_path(path: str) -> bool:
    """Whether ``path`` is meant as an HL7 v2 path with a field (``PID-3…``), in a channel whose format is not named."""
    return isinstance(path, str) and _LOOKS.match(path.strip()) is not None


def check_path(path: str) -> str | None:
    """The problem of an HL7 v2 path written in a configuration (None when it is fine): the grammar of
    :func:`parse_path`, and a field number the segment has (``MSH-55`` is not a field of MSH)."""
    try:
        p = parse_path(path)
    except MappingError as exc:
        return str(exc)
    if p.field is not None and not p.segment.startswith("Z"):
        n = _field_counts().get(p.segment)
        if n is not None and p.field > n:
            return f"{path!r}: {p.segment} has {n} fields; there is no {p.segment}-{p.field}"
    return None
