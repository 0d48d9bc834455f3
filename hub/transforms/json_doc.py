"""Plain JSON (content type ``json``) as a :class:`hub.transforms.document.Document`, with JSONPath-like paths.

Paths (what filters, ``when:`` conditions, ``set``/``copy``/``delete``/``map``, a channel's ``meta:`` and the
``json_to_v2``/``v2_to_json`` layouts use)::

    $.patient.mrn                 object members by name
    $.results[0].code             [n]: an array element, 0-based; [-1] is the last one
    $.results[*].code             [*] (or .*): every element of an array, every member of an object
    $['key with space'].x         ['…'] or ["…"]: a member whose name is not a plain name (\\' and \\\\ escape)
    $[0].id                       the root may be an array

Grammar: ``"$" step*`` where a step is ``.name`` (a letter or ``_``, then letters, digits, ``_`` or ``-``),
``.*``, ``[n]``, ``[-n]``, ``[*]``, ``['name']`` or ``["name"]``. No recursive descent (``..``), filters or slices.
A path follows the data exactly as JSONPath does: ``$.results.code`` does not look inside an array (write
``$.results[*].code``).

Values are text: a string as it is, a number exactly as written in the input (``1.50`` stays ``1.50``), ``true``
/ ``false``, an object or array as compact JSON; ``null`` and ``""`` are absent (``get`` gives None).

``set`` writes a string, except where it replaces a number (and the new value is a JSON number: it stays a number)
or a boolean (and the new value is ``true``/``false``). Missing objects and arrays along the path are created (an
index past the end pads the array with ``null``). A path with ``[*]`` writes every element it selects and creates
nothing. ``delete`` removes the member (or the array element; ``[*]`` empties the array).

An unmodified document's :meth:`JsonDocument.to_bytes` is the bytes it was read from. A modified one is written
again in the input's layout as far as it can be told (indentation, ``": "`` or ``":"``, a byte-order mark,
leading and trailing white space, the encoding), numbers as written, and duplicate member names once (the last
one wins, as when reading). Invalid JSON is a :class:`JsonParseError` naming the line and column.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hub.errors import MappingError, ParseError

__all__ = [
    "JsonDocument",
    "JsonParseError",
    "Number",
    "parse",
    "parse_path",
    "check_path",
    "relative_steps",
    "values_at",
    "select_from",
    "json_text",
]


class JsonParseError(ParseError):
    """The input is not JSON (the message names the line and column)."""


class Number:
    """A JSON number kept as the text it was written as (so ``1.50`` is written back as ``1.50``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Number) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Number({self.text})"


NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

# ------------------------------------------------------------------------------------------------ paths
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INDEX = re.compile(r"\[\s*(-?[0-9]+)\s*\]")
_STAR = re.compile(r"(?:\.\*|\[\s*\*\s*\])")
_QUOTED = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\]""")

# A step: ("key", name) | ("index", n) | ("all", None)
Step = tuple[str, Any]
_cache: dict[str, tuple[Step, ...]] = {}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_path(path: str) -> tuple[Step, ...]:
    """``$.a[0]['b c']`` → (("key", "a"), ("index", 0), ("key", "b c")); :class:`MappingError` when not a path."""
    hit = _cache.get(path) if isinstance(path, str) else None
    if hit is not None:
        return hit
    text = path.strip() if isinstance(path, str) else ""
    if not text.startswith("$"):
        raise MappingError(
            f"{path!r} is not a JSON path (expected e.g. $.patient.mrn, $.results[0].code, $.results[*].code)",
            location=str(path),
        )
    steps: list[Step] = []
    i = 1
    while i < len(text):
        if text.startswith("..", i):
            raise MappingError(f"{path!r}: recursive descent (..) is not supported; name each step", location=path)
        m = _STAR.match(text, i)
        if m:
            steps.append(("all", None))
        elif text[i] == "." and (m := _NAME.match(text, i + 1)) is not None:
            steps.append(("key", m.group()))
        elif (m := _INDEX.match(text, i)) is not None:
            steps.append(("index", int(m.group(1))))
        elif (m := _QUOTED.match(text, i)) is not None:
            quoted = m.group(1) if m.group(1) is not None else m.group(2)
            steps.append(("key", _unescape(quoted)))
        else:
            raise MappingError(
                f"{path!r} is not a JSON path: unexpected {text[i : i + 12]!r} at character {i + 1} "
                "(a step is .name, [n], [*] or ['name'])",
                location=path,
            )
        i = m.end()
    out = tuple(steps)
    if len(_cache) < 4096:  # paths come from configuration: a small set; the bound guards misuse
        _cache[path] = out
    return out


def check_path(path: str) -> str | None:
    """The problem of a JSON path written in a configuration, or None when it is one."""
    try:
        parse_path(path)
    except MappingError as exc:
        return str(exc)
    return None


def relative_steps(path: str) -> tuple[Step, ...]:
    """A path relative to a node, as JSONPath writes it: ``@.code``, ``@['x y']``, ``@[0]``, ``@`` (the node)."""
    text = path.strip() if isinstance(path, str) else ""
    if not text.startswith("@"):
        raise MappingError(f"{path!r} is not a relative JSON path (expected e.g. @.code, @.value[0])", location=path)
    return parse_path("$" + text[1:])


def select_from(node: Any, steps: tuple[Step, ...]) -> list[Any]:
    """The JSON values at ``steps`` below ``node`` (null included)."""
    return _select(node, steps)


def values_at(node: Any, steps: tuple[Step, ...]) -> list[str]:
    """The non-empty values at ``steps`` below ``node`` (a value of :attr:`JsonDocument.data`), as text."""
    return [json_text(v) for v in _select(node, steps) if not _empty(v)]


def format_path(steps: tuple[Step, ...] | list[Step]) -> str:
    out = "$"
    for kind, arg in steps:
        if kind == "all":
            out += "[*]"
        elif kind == "index":
            out += f"[{arg}]"
        elif _NAME.fullmatch(arg):
            out += f".{arg}"
        else:
            out += "['" + arg.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return out


# ------------------------------------------------------------------------------------------------ values
def json_text(v: Any) -> str:
    """A JSON value as the text a path gives (numbers as written, booleans as true/false)."""
    if isinstance(v, str):
        return v
    if isinstance(v, Number):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    return _dump(v, _Style(), 0)


def _empty(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, (list, dict)) and not v)


def typed(value: str, like: Any) -> Any:
    """What ``set`` stores: a string, or a number/boolean where it replaces one and the value is one."""
    if isinstance(like, Number) and NUMBER_RE.fullmatch(value.strip()):
        return Number(value.strip())
    if isinstance(like, bool) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


_ABSENT: Any = object()  # a member or element that is not there (JSON null is None)


def _children(node: Any, step: Step) -> list[Any]:
    kind, arg = step
    if kind == "key":
        return [node[arg]] if isinstance(node, dict) and arg in node else []
    if kind == "index":
        if isinstance(node, list) and -len(node) <= arg < len(node):
            return [node[arg]]
        return []
    if isinstance(node, list):
        return list(node)
    if isinstance(node, dict):
        return list(node.values())
    return []


def _select(root: Any, steps: tuple[Step, ...]) -> list[Any]:
    nodes = [root]
    for step in steps:
        nodes = [c for n in nodes for c in _children(n, step)]
        if not nodes:
            break
    return nodes


# ------------------------------------------------------------------------------------------------ output style
class _Style:
    """How a modified document is written: the input's layout as far as it can be told."""

    __slots__ = ("ascii", "colon", "comma", "indent")

    def __init__(self, indent: str | None = None, colon: str = ":", comma: str = ",", ascii_: bool = False) -> None:
        self.indent = indent
        self.colon = colon
        self.comma = comma
        self.ascii = ascii_

    @classmethod
    def of(cls, text: str) -> _Style:
        body = text.strip()
        m = re.search(r"\n([ \t]+)\S", body)
        indent = m.group(1) if m else None
        colon = ": " if re.search(r'"\s*: ', body) else ":"
        comma = ", " if indent is None and re.search(r',[ ]+["\[{0-9tfn-]', body) else ","
        ascii_ = body.isascii() and "\\u" in body
        return cls(indent, colon, comma, ascii_)


def _string(s: str, style: _Style) -> str:
    return json.dumps(s, ensure_ascii=style.ascii)


def _dump(v: Any, style: _Style, level: int) -> str:
    if isinstance(v, str):
        return _string(v, style)
    if isinstance(v, Number):
        return v.text
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):  # written by code, not read: plain Python numbers
        return json.dumps(v)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{_string(str(k), style)}{style.colon}{_dump(x, style, level + 1)}" for k, x in v.items()]
        return _wrap("{", "}", items, style, level)
    if isinstance(v, list):
        if not v:
            return "[]"
        return _wrap("[", "]", [_dump(x, style, level + 1) for x in v], style, level)
    raise TypeError(f"not a JSON value: {type(v).__name__}")


def _wrap(open_: str, close: str, items: list[str], style: _Style, level: int) -> str:
    if style.indent is None:
        return open_ + style.comma.join(items) + close
    inner = "\n" + style.indent * (level + 1)
    return open_ + inner + ("," + inner).join(items) + "\n" + style.indent * level + close


# ------------------------------------------------------------------------------------------------ the document
class JsonDocument:
    """A JSON value (usually an object) addressed by JSONPath-like paths."""

    __slots__ = ("_changed", "_dirty", "_encoding", "_lead", "_raw", "_style", "_trail", "data")

    def __init__(
        self, data: Any, raw: bytes | None = None, *, encoding: str = "utf-8", lead: str = "", trail: str = ""
    ) -> None:
        self.data = data
        self._raw = raw
        self._dirty = raw is None
        self._encoding = encoding
        self._lead = lead
        self._trail = trail
        self._changed = False
        self._style: _Style | None = None

    @classmethod
    def new(cls, data: Any = None, *, indent: int | None = None) -> JsonDocument:
        """An empty object (or ``data``) to fill with :meth:`set`; written UTF-8, compact or indented."""
        doc = cls({} if data is None else data)
        doc._style = _Style(" " * indent, ": ") if indent else _Style()
        return doc

    @property
    def modified(self) -> bool:
        return self._dirty

    def select(self, path: str) -> list[Any]:
        """Every JSON value at ``path`` (null included)."""
        return _select(self.data, parse_path(path))

    def count(self, path: str) -> int:
        """How many values ``path`` selects (for a repeating group: ``$.results[*]``)."""
        return len(self.select(path))

    def get(self, path: str) -> str | None:
        for v in self.select(path):
            if not _empty(v):
                return json_text(v)
        return None

    def get_all(self, path: str) -> list[str]:
        return [json_text(v) for v in self.select(path) if not _empty(v)]

    # ------------------------------------------------------------------ writing
    def set(self, path: str, value: Any) -> None:
        """Write ``value`` (text) at ``path``; see the module docstring for types and what is created."""
        if value is None:
            self.delete(path)
            return
        self.put(path, value if isinstance(value, str) else str(value), None)

    def put(self, path: str, value: Any, kind: str | None) -> None:
        """Write a value at ``path``: ``kind`` None (text, keeping a replaced number/boolean's type), ``"string"``,
        ``"number"`` (``value`` must be a JSON number's text), ``"boolean"`` or ``"json"`` (any JSON value)."""
        steps = parse_path(path)
        if not steps:
            raise MappingError(f"{path}: the root itself cannot be set; name a member", location=path)
        if kind == "number":
            text = str(value).strip()
            if not NUMBER_RE.fullmatch(text):
                raise MappingError(f"{path}: {text!r} is not a number", location=path)
            value = Number(text)
        elif kind == "boolean" and not isinstance(value, bool):
            value = str(value).strip().lower() in ("true", "y", "yes", "1", "t")
        self._changed = False
        result = self._assign(self.data, steps, 0, value, kind is None, path)
        if result is not _ABSENT:
            self.data = result
        if self._changed:
            self._dirty = True

    def _assign(self, node: Any, steps: tuple[Step, ...], i: int, value: Any, keep_type: bool, path: str) -> Any:
        kind, arg = steps[i]
        last = i == len(steps) - 1
        where = format_path(steps[:i]) if i else "$"

        def leaf(old: Any) -> Any:
            self._changed = True
            return typed(value, old) if keep_type and isinstance(value, str) else value

        if kind == "all":
            if isinstance(node, dict):
                for k in list(node):
                    node[k] = leaf(node[k]) if last else self._assign(node[k], steps, i + 1, value, keep_type, path)
            elif isinstance(node, list):
                for k in range(len(node)):
                    node[k] = leaf(node[k]) if last else self._assign(node[k], steps, i + 1, value, keep_type, path)
            return node  # nothing there: [*] creates nothing
        created = node is _ABSENT or node is None
        if kind == "key":
            if created:
                node = {}
            if not isinstance(node, dict):
                raise MappingError(f"{path}: {where} is {_kind(node)}, not an object", location=path)
            if last:
                node[arg] = leaf(node.get(arg))
            else:
                child = self._assign(node.get(arg, _ABSENT), steps, i + 1, value, keep_type, path)
                if child is _ABSENT:
                    return _ABSENT if created else node
                node[arg] = child
            return node
        # index
        if created:
            node = []
        if not isinstance(node, list):
            raise MappingError(f"{path}: {where} is {_kind(node)}, not an array", location=path)
        idx = arg + len(node) if arg < 0 else arg
        if idx < 0:
            raise MappingError(f"{path}: {where} has {len(node)} elements; there is no [{arg}]", location=path)
        current = node[idx] if idx < len(node) else _ABSENT
        if last:
            new = leaf(None if current is _ABSENT else current)
        else:
            new = self._assign(current, steps, i + 1, value, keep_type, path)
            if new is _ABSENT:
                return _ABSENT if created else node
        while len(node) <= idx:
            node.append(None)
        node[idx] = new
        return node

    def delete(self, path: str) -> None:
        """Remove the member or element at ``path`` (``[*]`` last: empty the array or object); absent: nothing."""
        steps = parse_path(path)
        if not steps:
            raise MappingError(f"{path}: the root itself cannot be deleted", location=path)
        changed = False
        kind, arg = steps[-1]
        for parent in _select(self.data, steps[:-1]):
            if (kind == "key" and isinstance(parent, dict) and arg in parent) or (
                kind == "index" and isinstance(parent, list) and -len(parent) <= arg < len(parent)
            ):
                del parent[arg]
                changed = True
            elif kind == "all" and isinstance(parent, (list, dict)) and parent:
                parent.clear()
                changed = True
        if changed:
            self._dirty = True

    # ------------------------------------------------------------------ output
    def to_bytes(self) -> bytes:
        if not self._dirty and self._raw is not None:
            return self._raw
        original = self._raw.decode(self._encoding) if self._raw is not None else ""
        style = self._style or (_Style.of(original) if original else _Style())
        text = self._lead + _dump(self.data, style, 0) + self._trail
        out = text.encode(self._encoding)
        self._raw, self._dirty = out, False
        return out

    def __repr__(self) -> str:  # no content: JSON may hold PHI
        return f"<JsonDocument {_kind(self.data)}>"


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, Number):
        return "a number"
    if isinstance(v, bool):
        return "a boolean"
    return "null"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _position(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def parse(raw: bytes | str) -> JsonDocument:
    """Read JSON (UTF-8, or UTF-16/32 as RFC 8259 allows; a byte-order mark is kept). Raises
    :class:`JsonParseError` with the line and column of the first problem."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    encoding = json.detect_encoding(data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise JsonParseError(f"not valid JSON: the input is not {encoding} text (byte {exc.start})") from None
    body = text.removeprefix("\ufeff")
    stripped = body.strip(" \t\r\n")
    if not stripped:
        raise JsonParseError("not valid JSON: the input is empty", location="line 1, column 1")
    start = body.index(stripped[0])
    lead, trail = text[: len(text) - len(body) + start], body[start + len(stripped) :]
    try:
        obj = json.loads(stripped, parse_float=Number, parse_int=Number, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        line, col = _position(body, start + exc.pos)
        raise JsonParseError(
            f"not valid JSON: line {line}, column {col}: {exc.msg}", location=f"line {line}, column {col}"
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise JsonParseError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise JsonParseError("not valid JSON here: nested too deeply") from None
    return JsonDocument(obj, data, encoding=encoding, lead=lead, trail=trail)
