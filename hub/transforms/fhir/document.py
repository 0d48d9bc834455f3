"""FHIR JSON as a :class:`hub.transforms.document.Document`: paths in a FHIRPath subset, plus :func:`meta`.

Paths (what filters, ``when:`` conditions, ``set``/``copy``/``delete``/``map`` and ``hub test``'s ``paths:`` use)::

    Patient.name[0].family            a resource type, then elements; [n] picks one repetition (0-based, as FHIRPath)
    Patient.name.given                without an index every repetition is visited (get: the first value)
    Bundle.entry.resource.id          lists are flattened along the way
    Observation.value                 a choice element matches valueQuantity, valueString … (get: the first)
    Bundle.entry.resource.where(resourceType='Patient').gender      where(element='value') filters
    Patient.identifier.where(type.coding.code='MR').value          (the element may be a dotted path)
    Bundle.entry.count()  Patient.name.first().family  Patient.name.last()

On a Bundle, a path that starts with another resource type (``Patient.gender``) is read from the Bundle's entries of
that type (and ``set`` writes the first such entry), so one condition works on a single resource and on a Bundle.
Values are text: strings as they are, numbers as written, booleans as ``true``/``false``, anything else as JSON.
``set`` creates missing elements (an index past the end appends) and keeps the JSON type of a value it replaces
(a number stays a number). An unmodified document's :meth:`to_bytes` is the bytes it was read from.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hub.errors import FhirParseError, MappingError

__all__ = ["FhirDocument", "parse", "meta", "parse_path"]

try:
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

    def _dumps(obj: Any) -> bytes:
        out: bytes = orjson.dumps(obj)  # (orjson is untyped here: ignore_missing_imports)
        return out

except ImportError:  # pragma: no cover

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_STEP = re.compile(
    r"""\s*(?:
        (?P<fn>where|first|last|count|exists|ofType)\((?P<arg>[^()]*)\)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<idx>\d+)\])?
    )\s*""",
    re.X,
)
_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*'((?:[^'\\]|\\.)*)'\s*$")

_cache: dict[str, list[tuple[str, Any, Any]]] = {}


def _split_dots(path: str) -> list[str]:
    """Split on dots outside parentheses and quotes."""
    out: list[str] = []
    cur: list[str] = []
    depth, quote = 0, False
    for ch in path:
        if ch == "'" and depth:
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "." and not depth and not quote:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parse_path(path: str) -> list[tuple[str, Any, Any]]:
    """``Patient.name[0].family`` → [("name","Patient",None), ("name","name",0), ("name","family",None)]."""
    hit = _cache.get(path)
    if hit is not None:
        return hit
    steps: list[tuple[str, Any, Any]] = []
    for part in _split_dots(path.strip()):
        m = _STEP.fullmatch(part)
        if m is None or not part.strip():
            raise MappingError(
                f"{path!r} is not a FHIR path (expected e.g. Patient.name[0].family, Bundle.entry.resource.id)",
                location=path,
            )
        if m.group("fn"):
            fn, arg = m.group("fn"), m.group("arg")
            if fn == "where":
                w = _WHERE.match(arg)
                if w is None:
                    raise MappingError(f"{path!r}: where() takes element='value'", location=path)
                steps.append(("where", w.group(1).split("."), w.group(2).replace("\\'", "'")))
            elif fn == "ofType":
                steps.append(("ofType", arg.strip(), None))
            else:
                steps.append((fn, None, None))
        else:
            idx = m.group("idx")
            steps.append(("name", m.group("name"), int(idx) if idx is not None else None))
    if len(_cache) < 4096:
        _cache[path] = steps
    return steps


def _children(node: Any, name: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if name in node:
        v = node[name]
        return v if isinstance(v, list) else [v]
    # a choice element: value → valueQuantity, valueString …
    for k, v in node.items():
        if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper():
            return v if isinstance(v, list) else [v]
    return []


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _select(nodes: list[Any], steps: list[tuple[str, Any, Any]]) -> list[Any]:
    for kind, a, b in steps:
        if kind == "name":
            nxt: list[Any] = []
            for n in nodes:
                kids = _children(n, a)
                if b is not None:
                    kids = [kids[b]] if b < len(kids) else []
                nxt.extend(kids)
            nodes = nxt
        elif kind == "where":
            nodes = [n for n in nodes if any(_text(x) == b for x in _select([n], [("name", p, None) for p in a]))]
        elif kind == "ofType":
            nodes = [n for n in nodes if isinstance(n, dict) and n.get("resourceType") == a]
        elif kind == "first":
            nodes = nodes[:1]
        elif kind == "last":
            nodes = nodes[-1:]
        elif kind == "count":
            nodes = [len(nodes)]
        elif kind == "exists":
            nodes = [bool(nodes)]
    return nodes


class FhirDocument:
    """A FHIR JSON resource (often a Bundle) addressed by FHIRPath-subset paths."""

    __slots__ = ("_dirty", "_raw", "data")

    def __init__(self, data: dict[str, Any], raw: bytes | None = None) -> None:
        self.data = data
        self._raw = raw
        self._dirty = raw is None

    @property
    def resource_type(self) -> str:
        return str(self.data.get("resourceType", ""))

    def resources(self, rtype: str | None = None) -> list[dict[str, Any]]:
        """The resource itself, or a Bundle's entry resources (of ``rtype`` when given)."""
        d = self.data
        if d.get("resourceType") == "Bundle":
            entries = d.get("entry")
            entries = entries if isinstance(entries, list) else []  # wrongly shaped JSON: no entries to read
            out: list[dict[str, Any]] = [
                e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            ]
        else:
            out = [d]
        return [r for r in out if rtype is None or r.get("resourceType") == rtype]

    def _roots(self, steps: list[tuple[str, Any, Any]]) -> tuple[list[Any], list[tuple[str, Any, Any]]]:
        if steps and steps[0][0] == "name" and steps[0][1][:1].isupper():
            rtype, idx = steps[0][1], steps[0][2]
            if self.data.get("resourceType") == rtype:
                roots: list[Any] = [self.data]
            else:
                roots = self.resources(rtype)
            if idx is not None:
                roots = [roots[idx]] if idx < len(roots) else []
            return roots, steps[1:]
        return [self.data], steps

    def select(self, path: str) -> list[Any]:
        """Every node at ``path`` (JSON values)."""
        roots, steps = self._roots(parse_path(path))
        return _select(roots, steps)

    def get(self, path: str) -> str | None:
        for v in self.select(path):
            if v is None or v == "" or v == [] or v == {}:
                continue
            return _text(v)
        return None

    def get_all(self, path: str) -> list[str]:
        return [_text(v) for v in self.select(path) if v not in (None, "", [], {})]

    # ------------------------------------------------------------------ writing
    def set(self, path: str, value: Any) -> None:
        if value is None:
            self.delete(path)
            return
        roots, steps = self._roots(parse_path(path))
        if not roots:
            raise MappingError(f"{path}: no {parse_path(path)[0][1]} to set it on", location=path)
        if not steps or any(k != "name" for k, _, _ in steps):
            raise MappingError(f"{path}: set needs a path of element names and indexes", location=path)
        node = roots[0]
        for i, (_, name, idx) in enumerate(steps):
            last = i == len(steps) - 1
            if not isinstance(node, dict):
                raise MappingError(f"{path}: {name} is inside a value that is not an element", location=path)
            if name not in node:  # a choice element already written under its typed name (value → valueQuantity)
                name = next(
                    (k for k in node if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper()), name
                )
            cur = node.get(name)
            if last:
                new = _typed(
                    value, cur if idx is None else (cur[idx] if isinstance(cur, list) and idx < len(cur) else None)
                )
                if idx is None:
                    if isinstance(cur, list):
                        node[name] = [new] + cur[1:] if cur else [new]
                    else:
                        node[name] = new
                else:
                    lst = cur if isinstance(cur, list) else ([] if cur is None else [cur])
                    while len(lst) <= idx:
                        lst.append(None)
                    lst[idx] = new
                    node[name] = lst
            else:
                if idx is None and not isinstance(cur, list):
                    if not isinstance(cur, dict):
                        cur = node[name] = {}
                    node = cur
                else:
                    lst = cur if isinstance(cur, list) else ([] if cur is None else [cur])
                    k = idx or 0
                    while len(lst) <= k:
                        lst.append({})
                    if not isinstance(lst[k], dict):
                        lst[k] = {}
                    node[name] = lst
                    node = lst[k]
        self._dirty = True

    def delete(self, path: str) -> None:
        roots, steps = self._roots(parse_path(path))
        if not steps:
            return
        parents = _select(roots, steps[:-1])
        kind, name, idx = steps[-1]
        if kind != "name":
            raise MappingError(f"{path}: delete needs an element name last", location=path)
        changed = False
        for p in parents:
            if not isinstance(p, dict):
                continue
            keys = (
                [name]
                if name in p
                else [k for k in p if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper()]
            )
            for k in keys:
                if idx is None:
                    del p[k]
                    changed = True
                elif isinstance(p[k], list) and idx < len(p[k]):
                    del p[k][idx]
                    if not p[k]:
                        del p[k]
                    changed = True
        if changed:
            self._dirty = True

    def to_bytes(self) -> bytes:
        if not self._dirty and self._raw is not None:
            return self._raw
        self._raw = _dumps(self.data)
        self._dirty = False
        return self._raw

    def __repr__(self) -> str:  # no content
        return f"<FhirDocument {self.resource_type}>"


def _typed(value: Any, like: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(like, bool):
        return value.strip().lower() in ("true", "1", "y", "yes")
    if isinstance(like, int) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(like, float):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(like, (dict, list)) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse(raw: bytes | str) -> FhirDocument:
    """Read FHIR JSON. A byte-order mark and surrounding whitespace are tolerated.

    Raises :class:`hub.errors.FhirParseError` (issue type ``structure``) when it is not JSON or not a resource."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    body = data[3:] if data[:3] == b"\xef\xbb\xbf" else data
    try:
        obj = _loads(body)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        raise FhirParseError(f"not valid JSON: {text[:200]}", code="structure") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("resourceType"), str):
        raise FhirParseError(
            "not a FHIR resource: a JSON object with a resourceType is expected",
            code="structure",
            location="resourceType",
        )
    return FhirDocument(obj, data)


def _scalar(v: Any) -> str | None:
    """A metadata value: text (a number as text), else None — wrongly shaped JSON puts lists and objects here."""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def meta(doc: FhirDocument) -> dict[str, Any]:
    """Indexed metadata: control_id (Bundle.identifier / MessageHeader / id), message_type (``Bundle^transaction``,
    ``Patient``), trigger, sending_app (MessageHeader.source.name), patient_id (the first Patient's first identifier).
    Values that are not text (wrongly shaped JSON) are left out."""
    d = doc.data
    rtype = d.get("resourceType")
    out: dict[str, Any] = {}
    if rtype == "Bundle":
        btype = _scalar(d.get("type"))
        out["message_type"] = f"Bundle^{btype}" if btype else "Bundle"
        out["trigger"] = btype
        ident = d.get("identifier")
        if isinstance(ident, dict):
            out["control_id"] = _scalar(ident.get("value"))
        if btype == "message":
            for r in doc.resources("MessageHeader")[:1]:
                ev = _obj(r.get("eventCoding"))
                out["trigger"] = _scalar(ev.get("code")) or out.get("trigger")
                src = _obj(r.get("source"))
                out["sending_app"] = _scalar(src.get("name")) or _scalar(src.get("endpoint"))
                out.setdefault("control_id", _scalar(r.get("id")))
        out.setdefault("control_id", _scalar(d.get("id")))
    else:
        out["message_type"] = rtype
        out["control_id"] = _scalar(d.get("id"))
    patients = doc.resources("Patient")
    pid = None
    if patients:
        idents = patients[0].get("identifier")
        for ident in idents if isinstance(idents, list) else []:
            if isinstance(ident, dict) and _scalar(ident.get("value")):
                pid = _scalar(ident["value"])
                break
    else:
        for r in doc.resources()[:1]:
            subj = r.get("subject") or r.get("patient")
            if isinstance(subj, dict):
                ident = subj.get("identifier")
                if isinstance(ident, dict):
                    pid = _scalar(ident.get("value"))
    out["patient_id"] = pid
    return out
