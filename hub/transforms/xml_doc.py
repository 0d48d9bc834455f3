"""XML (content type ``xml``) as a :class:`hub.transforms.document.Document`, with paths in an XPath subset.

Paths (what filters, ``when:`` conditions, ``set``/``copy``/``delete``/``map``, a channel's ``meta:`` and the
``xml_to_v2``/``v2_to_xml`` layouts use)::

    /order/patient/mrn            child elements from the root (the first step names the root element)
    //mrn                         every mrn element anywhere; a//b: every b below a
    /order/result[2]/code         [n]: the n-th of those children of each parent (1-based, as XPath)
    /order/result[@type='final']  [@a='v']: elements whose attribute a is v; [code='x']: whose child code's text is x
    /order/*/id                   *: any element
    /order/@id   //result/@code   @name as the last step: an attribute
    /order/note/text()            text() as the last step: the element's own text nodes (not its children's)

Grammar: ``("/" | "//") step { ("/" | "//") step }``; a step is ``name``, ``prefix:name`` or ``*`` followed by
any number of ``[n]``, ``[@name='v']``, ``[name='v']`` (``'…'`` or ``"…"``), or, as the last step only,
``@name`` or ``text()``. No axes, functions or relative paths.

Namespaces are matched by local name: ``/order/mrn`` matches ``<h:order xmlns:h="urn:x"><h:mrn>``, and a prefix
written in a path (``/h:order/h:mrn``) is accepted and ignored for matching; an attribute step ``@id`` matches any
prefix too (never an ``xmlns`` declaration). A channel therefore needs no namespace map; two elements that differ
only by namespace cannot be told apart (not seen in the messages the hub carries).

Values are text: an element gives its string value (all the text inside it, as XPath), an attribute its value;
white space only is absent (``get`` gives None). ``set`` on an element replaces its content with the text (child
elements included); ``set`` on ``text()`` replaces the element's own text and keeps its children; ``set`` on an
attribute writes it. When the path selects nothing, ``set`` creates it along a path of plain ``/name`` steps
(``[n]`` creating the missing siblings; ``[@a='v']`` creating the element with that attribute), a new element
placed after the last sibling of the same name. ``delete`` removes the elements or attributes selected.

Reading uses the standard library's expat parser: external entities are never fetched, and a document that declares
entities (``<!ENTITY``) is refused, so entity expansion attacks cannot run. An unmodified document's
:meth:`XmlDocument.to_bytes` is the bytes it was read from; a modified one keeps everything before the root
element byte for byte (the XML declaration with its encoding, comments, a DOCTYPE) and is written in the declared
encoding (characters it cannot hold as character references). Invalid XML is an :class:`XmlParseError` naming the
line and column.
"""

from __future__ import annotations

import codecs
import re
from typing import Any
from xml.parsers import expat

from hub.errors import MappingError, ParseError

__all__ = [
    "XmlDocument",
    "XmlParseError",
    "Element",
    "parse",
    "parse_path",
    "check_path",
    "relative_steps",
    "values_at",
    "select_from",
]


class XmlParseError(ParseError):
    """The input is not well-formed XML, or declares entities (the message names the line and column)."""


class _Comment(str):
    __slots__ = ()


class _CData(str):
    __slots__ = ()


class _PI:
    __slots__ = ("data", "target")

    def __init__(self, target: str, data: str) -> None:
        self.target, self.data = target, data


class Element:
    """An element: its name as written (``h:mrn``), attributes in document order, and its children (elements,
    text as ``str``, comments, CDATA sections, processing instructions)."""

    __slots__ = ("attrs", "children", "name", "parent")

    def __init__(self, name: str, attrs: dict[str, str] | None = None, parent: Element | None = None) -> None:
        self.name = name
        self.attrs: dict[str, str] = attrs if attrs is not None else {}
        self.children: list[Any] = []
        self.parent = parent

    @property
    def local(self) -> str:
        return self.name.rpartition(":")[2]

    def elements(self) -> list[Element]:
        return [c for c in self.children if isinstance(c, Element)]

    def text(self) -> str:
        """The string value: every text inside, in document order."""
        out: list[str] = []
        self._collect(out)
        return "".join(out)

    def _collect(self, out: list[str]) -> None:
        for c in self.children:
            if isinstance(c, Element):
                c._collect(out)
            elif isinstance(c, str) and not isinstance(c, _Comment):
                out.append(c)

    def descendants_or_self(self) -> list[Element]:
        out = [self]
        for c in self.elements():
            out.extend(c.descendants_or_self())
        return out

    def __repr__(self) -> str:  # the name only: content may be PHI
        return f"<Element {self.name}>"


# ------------------------------------------------------------------------------------------------ paths
class Step:
    """One step: ``axis`` "child" or "desc" (after //), ``test`` a local name or "*", predicates, and ``kind``
    "element", "attribute" (``test`` is its local name) or "text"."""

    __slots__ = ("axis", "kind", "preds", "qname", "test")

    def __init__(
        self, axis: str, test: str, preds: list[tuple[str, Any, Any]], kind: str = "element", qname: str = ""
    ) -> None:
        self.axis, self.test, self.preds, self.kind = axis, test, preds, kind
        self.qname = qname or test  # as written, with its prefix: the name an element created by set gets

    @property
    def plain(self) -> bool:
        """A step ``set`` can create: a child element by name, with positions or attribute tests only."""
        return self.kind != "element" or (
            self.axis == "child" and self.test != "*" and all(p[0] in ("pos", "attr") for p in self.preds)
        )


_QNAME = r"(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)"
_ELEMENT = re.compile(rf"(?:{_QNAME}|(\*))")
_PRED = re.compile(
    rf"""\[\s*(?:
        ([1-9][0-9]*)
      | @{_QNAME}\s*=\s*(?:'([^']*)'|"([^"]*)")
      | {_QNAME}\s*=\s*(?:'([^']*)'|"([^"]*)")
    )\s*\]""",
    re.X,
)
_ATTR = re.compile(rf"@{_QNAME}")
_TEXT = re.compile(r"text\(\)")
_cache: dict[str, tuple[Step, ...]] = {}


def parse_path(path: str, *, relative: bool = False) -> tuple[Step, ...]:
    """An XPath-subset path → its steps; :class:`MappingError` when it is not one (see the module docstring).
    ``relative``: a path from an element, as :func:`relative_steps` reads it (``code``, ``@id``, ``text()``)."""
    key = ("." if relative else "") + path if isinstance(path, str) else ""
    hit = _cache.get(key)
    if hit is not None:
        return hit
    text = path.strip() if isinstance(path, str) else ""

    def bad(why: str) -> MappingError:
        return MappingError(
            f"{path!r} is not an XML path: {why} (expected e.g. /order/patient/mrn, //mrn, /a/b[2], /a/b/@id)",
            location=str(path),
        )

    if not text.startswith("/"):
        raise bad("it must start with / or //")
    steps: list[Step] = []
    i = 0
    while i < len(text):
        if steps and steps[-1].kind != "element":
            raise bad("@attribute and text() can only be the last step")
        if text.startswith("//", i):
            axis, i = "desc", i + 2
        elif text.startswith("/", i):
            axis, i = "child", i + 1
        else:
            raise bad(f"unexpected {text[i : i + 12]!r} at character {i + 1}")
        if (m := _TEXT.match(text, i)) is not None:
            steps.append(Step(axis, "", [], "text"))
            i = m.end()
            continue
        if (m := _ATTR.match(text, i)) is not None:
            steps.append(Step(axis, m.group(1), [], "attribute"))
            i = m.end()
            continue
        m = _ELEMENT.match(text, i)
        if m is None:
            raise bad(f"a step must be a name, *, @name or text() at character {i + 1}")
        step = Step(axis, m.group(1) or "*", [], qname=m.group(0))
        i = m.end()
        while (p := _PRED.match(text, i)) is not None:
            g = p.groups()
            if g[0] is not None:
                step.preds.append(("pos", int(g[0]), None))
            elif g[1] is not None:
                step.preds.append(("attr", g[1], g[2] if g[2] is not None else g[3]))
            else:
                step.preds.append(("child", g[4], g[5] if g[5] is not None else g[6]))
            i = p.end()
        if i < len(text) and text[i] == "[":
            raise bad(f"a predicate is [n], [@name='value'] or [name='value'] (character {i + 1})")
        steps.append(step)
    if not steps:
        raise bad("no step")
    if steps[0].kind != "element" and not relative:
        raise bad("the first step must name an element")
    out = tuple(steps)
    if len(_cache) < 4096:  # paths come from configuration: a small set; the bound guards misuse
        _cache[key] = out
    return out


def relative_steps(path: str) -> tuple[Step, ...]:
    """A path relative to an element, as XPath writes it: ``code``, ``./code``, ``.//code``, ``@id``,
    ``code/@system``, ``text()``, ``.`` (the element itself: no steps)."""
    text = path.strip() if isinstance(path, str) else ""
    if text in (".", "./"):
        return ()
    if text.startswith(("/", "$")) or not text:
        raise MappingError(f"{path!r} is not a relative XML path (expected e.g. code, @id, ./code/@system)")
    if text.startswith(".//") or text.startswith("./"):
        text = text[1:]
    else:
        text = "/" + text
    return parse_path(text, relative=True)


def select_from(node: Element, steps: tuple[Step, ...]) -> list[Any]:
    """The elements, attribute values or text nodes at ``steps`` from ``node``."""
    return _evaluate([node], steps)


def values_at(node: Element, steps: tuple[Step, ...]) -> list[str]:
    """The non-blank values at ``steps`` from ``node`` (an element's string value, an attribute, a text node)."""
    return [t for v in _evaluate([node], steps) if (t := v.text() if isinstance(v, Element) else str(v)).strip()]


def _evaluate(contexts: list[Element], steps: tuple[Step, ...]) -> list[Any]:
    for step in steps:
        if step.kind == "element":
            contexts = _step(contexts, step)
            continue
        nodes = [p for c in contexts for p in (c.descendants_or_self() if step.axis == "desc" else [c])]
        if step.kind == "attribute":
            return [e.attrs[k] for e in nodes if (k := _attr_key(e, step.test)) is not None]
        return [t for e in nodes for t in e.children if isinstance(t, str) and not isinstance(t, _Comment)]
    return contexts


def check_path(path: str) -> str | None:
    """The problem of an XML path written in a configuration, or None when it is one."""
    try:
        parse_path(path)
    except MappingError as exc:
        return str(exc)
    return None


def _matches(e: Element, step: Step) -> bool:
    return step.test == "*" or e.local == step.test


def _attr_key(e: Element, local: str) -> str | None:
    for k in e.attrs:
        if k.rpartition(":")[2] == local and k != "xmlns" and not k.startswith("xmlns:"):
            return k
    return None


def _filter(items: list[Element], preds: list[tuple[str, Any, Any]]) -> list[Element]:
    for kind, a, b in preds:
        if kind == "pos":
            items = items[a - 1 : a]
        elif kind == "attr":
            items = [e for e in items if (k := _attr_key(e, a)) is not None and e.attrs[k] == b]
        else:
            items = [e for e in items if any(c.local == a and c.text() == b for c in e.elements())]
    return items


def _step(contexts: list[Element], step: Step) -> list[Element]:
    out: list[Element] = []
    for ctx in contexts:
        parents = ctx.descendants_or_self() if step.axis == "desc" else [ctx]
        for p in parents:
            out.extend(_filter([c for c in p.elements() if _matches(c, step)], step.preds))
    return out


# ------------------------------------------------------------------------------------------------ output
def _escape_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attr(s: str) -> str:
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def _write(node: Any, out: list[str]) -> None:
    if isinstance(node, Element):
        out.append("<" + node.name)
        for k, v in node.attrs.items():
            out.append(f' {k}="{_escape_attr(v)}"')
        if not node.children:
            out.append("/>")
            return
        out.append(">")
        for c in node.children:
            _write(c, out)
        out.append(f"</{node.name}>")
    elif isinstance(node, _Comment):
        out.append(f"<!--{node}-->")
    elif isinstance(node, _CData):
        out.append("<![CDATA[" + node.replace("]]>", "]]]]><![CDATA[>") + "]]>")
    elif isinstance(node, _PI):
        out.append(f"<?{node.target}{' ' + node.data if node.data else ''}?>")
    else:
        out.append(_escape_text(node))


# ------------------------------------------------------------------------------------------------ the document
class XmlDocument:
    """An XML document addressed by XPath-subset paths (see the module docstring)."""

    __slots__ = ("_dirty", "_encoding", "_epilog", "_prolog", "_raw", "root")

    def __init__(
        self,
        root: Element,
        raw: bytes | None = None,
        *,
        prolog: bytes = b'<?xml version="1.0" encoding="UTF-8"?>\n',
        epilog: list[Any] | None = None,
        encoding: str = "utf-8",
    ) -> None:
        self.root = root
        self._raw = raw
        self._dirty = raw is None
        self._prolog = prolog
        self._epilog: list[Any] = epilog if epilog is not None else []
        self._encoding = encoding

    @classmethod
    def new(cls, root_name: str) -> XmlDocument:
        """A document holding an empty root element, with an XML declaration (UTF-8)."""
        return cls(Element(root_name))

    @property
    def modified(self) -> bool:
        return self._dirty

    def document_node(self) -> Element:
        """The document node: a pseudo element whose one child is the root (absolute paths start here)."""
        top = Element("#document")
        top.children = [self.root]
        return top

    def select(self, path: str) -> list[Any]:
        """The elements, attribute values (``str``) or text nodes at ``path``."""
        return _evaluate([self.document_node()], parse_path(path))

    def count(self, path: str) -> int:
        """How many nodes ``path`` selects (for a repeating group: ``/order/result``)."""
        return len(self.select(path))

    def get(self, path: str) -> str | None:
        for v in self.select(path):
            text = v.text() if isinstance(v, Element) else str(v)
            if text.strip():
                return text
        return None

    def get_all(self, path: str) -> list[str]:
        out = []
        for v in self.select(path):
            text = v.text() if isinstance(v, Element) else str(v)
            if text.strip():
                out.append(text)
        return out

    # ------------------------------------------------------------------ writing
    def set(self, path: str, value: Any) -> None:
        if value is None:
            self.delete(path)
            return
        value = value if isinstance(value, str) else str(value)
        steps = parse_path(path)
        last = steps[-1]
        elements = self._select_elements(steps)
        if last.kind == "element":
            if not elements:
                elements = [self._create(steps, path)]
            for e in elements:
                e.children = [value] if value else []
        elif last.kind == "attribute":
            if not elements:
                elements = [self._create(steps[:-1], path)]
            for e in elements:
                e.attrs[_attr_key(e, last.test) or last.test] = value
        else:
            if not elements:
                elements = [self._create(steps[:-1], path)]
            for e in elements:
                kept = [c for c in e.children if not (isinstance(c, str) and not isinstance(c, _Comment))]
                e.children = ([value] if value else []) + kept
        self._dirty = True

    def _select_elements(self, steps: tuple[Step, ...]) -> list[Element]:
        """For an element path, the elements; for an @attr or text() path, the elements they belong to."""
        contexts = [self.document_node()]
        for step in steps:
            if step.kind == "element":
                contexts = _step(contexts, step)
            elif step.axis == "desc":
                contexts = [d for c in contexts for d in c.descendants_or_self()]
        return contexts

    def _create(self, steps: tuple[Step, ...], path: str) -> Element:
        if not all(s.plain for s in steps):
            raise MappingError(
                f"{path}: nothing there to set, and only a path of /name steps ([n], [@a='v']) can be created",
                location=path,
            )
        first = steps[0]
        if first.test != self.root.local or any(p[0] != "pos" or p[1] != 1 for p in first.preds):
            raise MappingError(f"{path}: the document's root element is <{self.root.name}>", location=path)
        node = self.root
        for step in steps[1:]:
            if step.kind != "element":
                break
            node = self._child(node, step)
        return node

    @staticmethod
    def _child(parent: Element, step: Step) -> Element:
        """The child ``step`` names (its first match), made with the siblings it needs when missing."""
        attr_preds = [(a, b) for kind, a, b in step.preds if kind == "attr"]
        same = [c for c in parent.elements() if c.local == step.test]
        pool = [c for c in same if all(c.attrs.get(_attr_key(c, a) or a) == b for a, b in attr_preds)]
        position = next((a for kind, a, _ in step.preds if kind == "pos"), 1)
        while len(pool) < position:
            new = Element(same[-1].name if same else step.qname, {a: b for a, b in attr_preds}, parent)
            anchor = same[-1] if same else None
            where = parent.children.index(anchor) + 1 if anchor is not None else len(parent.children)
            parent.children.insert(where, new)
            same.append(new)
            pool.append(new)
        return pool[position - 1]

    def delete(self, path: str) -> None:
        """Remove the elements, attributes or text nodes at ``path``; nothing there: nothing happens."""
        steps = parse_path(path)
        last = steps[-1]
        elements = self._select_elements(steps)
        changed = False
        for e in elements:
            if last.kind == "element":
                if e.parent is None:
                    raise MappingError(f"{path}: the root element cannot be deleted", location=path)
                e.parent.children = [c for c in e.parent.children if c is not e]
                changed = True
            elif last.kind == "attribute":
                k = _attr_key(e, last.test)
                if k is not None:
                    del e.attrs[k]
                    changed = True
            else:
                kept = [c for c in e.children if not (isinstance(c, str) and not isinstance(c, _Comment))]
                if len(kept) != len(e.children):
                    e.children, changed = kept, True
        if changed:
            self._dirty = True

    # ------------------------------------------------------------------ output
    def to_bytes(self) -> bytes:
        if not self._dirty and self._raw is not None:
            return self._raw
        parts: list[str] = []
        _write(self.root, parts)
        for node in self._epilog:
            _write(node, parts)
        body = "".join(parts).encode(self._encoding, errors="xmlcharrefreplace")
        out = self._prolog + body
        self._raw, self._dirty = out, False
        return out

    def __repr__(self) -> str:  # the root's name only: content may be PHI
        return f"<XmlDocument {self.root.name}>"


# ------------------------------------------------------------------------------------------------ reading
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def parse(raw: bytes | str) -> XmlDocument:
    """Read XML. Raises :class:`XmlParseError` naming the line and column of the first problem."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.ordered_attributes = True
    parser.specified_attributes = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    state: dict[str, Any] = {"root": None, "start": 0, "cdata": False, "encoding": None}
    epilog: list[Any] = []

    def refuse(*_: Any) -> None:
        raise XmlParseError(
            f"XML declaring entities is not accepted: line {parser.CurrentLineNumber}, column "
            f"{parser.CurrentColumnNumber + 1}",
            location=f"line {parser.CurrentLineNumber}, column {parser.CurrentColumnNumber + 1}",
        )

    def xml_decl(version: str, encoding: str | None, standalone: int) -> None:
        state["encoding"] = encoding

    def start(name: str, attrs: list[str]) -> None:
        parent = stack[-1] if stack else None
        e = Element(name, dict(zip(attrs[::2], attrs[1::2], strict=True)), parent)
        if parent is None:
            state["root"], state["start"] = e, parser.CurrentByteIndex
        else:
            parent.children.append(e)
        stack.append(e)

    def end(name: str) -> None:
        stack.pop()

    def chars(text: str) -> None:
        if stack:
            stack[-1].children.append(_CData(text) if state["cdata"] else text)

    def comment(text: str) -> None:
        if stack:
            stack[-1].children.append(_Comment(text))
        elif state["root"] is not None:
            epilog.append(_Comment(text))

    def pi(target: str, data: str) -> None:
        if stack:
            stack[-1].children.append(_PI(target, data))
        elif state["root"] is not None:
            epilog.append(_PI(target, data))

    def cdata(on: bool) -> None:
        state["cdata"] = on

    parser.XmlDeclHandler = xml_decl
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.CommentHandler = comment
    parser.ProcessingInstructionHandler = pi
    parser.StartCdataSectionHandler = lambda: cdata(True)
    parser.EndCdataSectionHandler = lambda: cdata(False)
    parser.EntityDeclHandler = refuse

    def skipped(name: str, is_parameter: int) -> None:
        if not is_parameter:
            where = f"line {parser.CurrentLineNumber}, column {parser.CurrentColumnNumber + 1}"
            raise XmlParseError(
                f"not valid XML here: {where}: the entity &{name}; is not defined (external DTDs are never read)",
                location=where,
            )

    parser.SkippedEntityHandler = skipped
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        where = f"line {exc.lineno}, column {exc.offset + 1}"
        reason = expat.errors.messages.get(exc.code, "not well-formed")
        raise XmlParseError(f"not well-formed XML: {where}: {reason}", location=where) from None
    except RecursionError:
        raise XmlParseError("not valid XML here: nested too deeply") from None
    root = state["root"]
    if root is None:  # expat reports "no element found" first; kept for safety
        raise XmlParseError("not XML: no root element", location="line 1, column 1")
    bom = next((enc for mark, enc in _BOMS if data.startswith(mark)), None)
    encoding = state["encoding"] or bom or "utf-8"
    try:
        if codecs.lookup(encoding).name == "utf-16":
            encoding = bom if bom and bom.startswith("utf-16") else "utf-16-be"
    except LookupError:
        raise XmlParseError(f"unknown encoding {encoding!r} in the XML declaration", location="line 1") from None
    if data[-1:] == b"\n":
        epilog.append("\n")
    return XmlDocument(root, data, prolog=data[: state["start"]], epilog=epilog, encoding=encoding)
