"""JSON and XML ↔ HL7 v2 by a declarative layout: ``json_to_v2``, ``v2_to_json``, ``xml_to_v2``, ``v2_to_xml``.

A layout is a YAML file under ``mappings/json/`` (or ``mappings/xml/``) that an analyst edits, like a CSV layout
(``mappings/csv/``): one table read in both directions. Keys are HL7 v2 paths; values are paths in the JSON (or XML)
document, written in that format's own notation (:mod:`hub.transforms.json_doc`, :mod:`hub.transforms.xml_doc`)::

    description: Lab results for the PM's REST API
    hl7:                                   # MSH of what json_to_v2 writes (MSH-7 now, MSH-10 a new id unless mapped)
      message_type: ORU^R01^ORU_R01
      version: 2.5.1
      sending_app: LAB
    constants:                             # written by v2_to_json only (path → text)
      $.source: clinic-hub
    fields:                                # HL7 path: document path, or a spec; written in this order
      PID-3.1: {path: $.patient.mrn, required: true}
      PID-5.1: $.patient.family
      PID-7: {path: $.patient.birth_date, type: date}
      PID-8: {path: $.patient.sex, map: {male: M, female: F}}     # document value → HL7 code (read backwards too)
      PID-3.5: {value: MR}                 # an HL7 constant (json_to_v2 only)
    groups:                                # a repeating segment ↔ an array (XML: repeated elements)
      - path: $.results[*]                 # XML: /lab/result
        segment: OBX                       # OBX[1] ↔ results[0], OBX[2] ↔ results[1] …
        fields:                            # paths relative to the element: JSON @.code, XML code / @code
          OBX-3.1: "@.code"
          OBX-5: "@.value"
          OBX-14: {path: "@.time", type: datetime}

A field spec: ``path`` (document side) or ``value`` (an HL7 constant); ``type`` (``string``, ``number``, ``boolean``
— JSON types in v2_to_json; ``date`` ``YYYY-MM-DD`` ↔ ``YYYYMMDD``; ``datetime`` ISO 8601 ↔ HL7 TS); ``map``
(document value → HL7 value; a value not listed is an error unless ``default`` or ``on_missing: keep``) or
``table`` (a CSV code table under ``mappings/``: first column the document value, second the HL7 one — the ``map``
transform's tables); v2_to_json reads both backwards (an HL7 code not listed is written as it is); ``default``
(used when the source has no value); ``required`` (no value → the message is rejected naming the path).

json_to_v2 writes the fields in order (a segment appears where it is first written), then each group: one
segment per element, with ``<segment>-1`` numbered 1, 2 … (``set_id: false`` to leave it). v2_to_json writes
``constants``, then the fields, then for each group one element per segment of that name in the message (an empty
array when there is none). One level of groups: nested groups (OBR → OBX within an ORU with several orders) are
not supported; ``OBX`` counts over the whole message, as an ``OBX[n]`` path does.

Built when the channel is built (the layout is read and every path checked then: ``hub check`` names the problem);
pure afterwards.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from hub.errors import ConfigError, MappingError
from hub.message import Message
from hub.spec import Strict, TransformConfig
from hub.transforms import TransformContext, load_mapping_model
from hub.transforms import json_doc as jd
from hub.transforms import xml_doc as xd

__all__ = [
    "DocLayout",
    "FieldSpec",
    "GroupSpec",
    "load_doc_layout",
    "JsonToV2",
    "V2ToJson",
    "XmlToV2",
    "V2ToXml",
]

ValueType = Literal["string", "number", "boolean", "date", "datetime"]


class FieldSpec(Strict):
    """How one HL7 value and one document value correspond."""

    path: str | None = Field(None, description="The document path (relative to the element inside a group).")
    value: str | None = Field(None, description="An HL7 constant, written by json_to_v2/xml_to_v2 only.")
    type: ValueType = Field("string", description="How the value is converted between the two formats.")
    map: dict[str, str] | None = Field(None, description="Document value → HL7 value (read backwards by v2_to_*).")
    table: str | None = Field(None, description="A CSV code table under mappings/: document value, HL7 value.")
    default: str | None = Field(None, description="Used when the source has no value (or, with map, an unlisted one).")
    required: bool = Field(False, description="No value in the source: the message is rejected naming the path.")
    on_missing: Literal["error", "keep"] = Field(
        "error", description="With map/table, a document value not listed: reject the message, or keep it as it is."
    )

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        if (self.path is None) == (self.value is None):
            raise ValueError("give exactly one of path or value")
        if self.map is not None and self.table is not None:
            raise ValueError("give map or table, not both")
        return self


Target = str | FieldSpec


class Hl7Header(Strict):
    """The MSH of the HL7 v2 messages json_to_v2 / xml_to_v2 write."""

    message_type: str = Field(description="MSH-9 (with trigger and structure).", examples=["ORU^R01^ORU_R01"])
    version: str = "2.5.1"
    processing_id: str = "P"
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""


class GroupSpec(Strict):
    """A repeating HL7 segment ↔ an array of objects (JSON) or repeated elements (XML)."""

    path: str = Field(description="JSON: an array's elements ($.results[*]); XML: the elements (/lab/result).")
    segment: str = Field(pattern=r"^[A-Z][A-Z0-9]{2}$", description="The segment that repeats, e.g. OBX.")
    set_id: bool = Field(True, description="json_to_v2: number <segment>-1 as 1, 2, 3 …")
    fields: dict[str, Target] = Field(description="<segment>-n path → path relative to the element, or a spec.")


class DocLayout(Strict):
    """A JSON/XML ↔ HL7 v2 layout file (YAML)."""

    description: str = ""
    hl7: Hl7Header
    root: str | None = Field(None, description="XML: the root element v2_to_xml writes (default: the paths' first).")
    constants: dict[str, str] = Field(default_factory=dict, description="Document path → text, for v2_to_* only.")
    fields: dict[str, Target] = Field(default_factory=dict)
    groups: list[GroupSpec] = Field(default_factory=list)


def load_doc_layout(ctx: TransformContext, name: str) -> DocLayout:
    """Read ``mappings/<name>`` (YAML). Problems are :class:`ConfigError` naming the file."""
    # a field is "str | FieldSpec": name the spec's key, not the union branch pydantic tried
    return load_mapping_model(ctx, name, DocLayout, branches=("str", "FieldSpec"))


# ------------------------------------------------------------------------------------------------ value conversion
_ISO = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?"
)
_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?")


def _iso_to_hl7(text: str, kind: str, where: str) -> str:
    s = text.strip()
    if re.fullmatch(r"\d{4,14}(?:\.\d{1,4})?(?:[+-]\d{4})?", s):
        return s  # already HL7
    m = _ISO.fullmatch(s)
    if m is None:
        raise MappingError(
            f"{where}: {text!r} is not an ISO 8601 {kind} (YYYY-MM-DD[Thh:mm[:ss]][±hh:mm])", location=where
        )
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    if kind == "date":
        return y + (mo or "") + (d or "")
    out = y + (mo or "") + (d or "") + (h or "") + (mi or "") + (sec or "")
    if frac and sec:
        out += "." + frac[:4]
    if tz and h:
        out += "+0000" if tz == "Z" else tz.replace(":", "")
    return out


def _hl7_to_iso(text: str, kind: str, where: str) -> str:
    m = _TS.fullmatch(text.strip())
    if m is None:
        raise MappingError(f"{where}: {text!r} is not an HL7 date/time (YYYYMMDD[HHMM[SS]][±ZZZZ])", location=where)
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    out = y + (f"-{mo}" if mo else "") + (f"-{d}" if mo and d else "")
    if kind == "date" or not (d and h):
        return out
    out += f"T{h}:{mi or '00'}" + (f":{sec}" if sec else (":00" if mi else ""))
    if frac and sec:
        out += "." + frac
    if tz:
        out += "Z" if tz in ("+0000", "-0000") else f"{tz[:3]}:{tz[3:]}"
    return out


def _json_number(text: str, where: str) -> str:
    s = text.strip()
    if jd.NUMBER_RE.fullmatch(s):
        return s
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise MappingError(f"{where}: {text!r} is not a number", location=where) from None
    if not d.is_finite():
        raise MappingError(f"{where}: {text!r} is not a number", location=where)
    out = format(d, "f")
    return out.rstrip(".") if "." in out and out.endswith(".") else out


class _Field:
    """One compiled field: HL7 path ↔ document path (steps parsed once)."""

    __slots__ = ("backward", "const", "default", "forward", "hl7", "keep", "path", "required", "steps", "type")

    def __init__(self, hl7: str, t: Target, fmt: _Format, relative: bool, codes: dict[str, dict[str, str]]) -> None:
        spec = FieldSpec.model_validate({"path": t}) if isinstance(t, str) else t
        self.hl7 = hl7
        self.path = spec.path
        self.const = spec.value
        self.type = spec.type
        self.default = spec.default
        self.required = spec.required
        self.keep = spec.on_missing == "keep"
        self.steps: Any = None
        if spec.path is not None:
            self.steps = fmt.relative(spec.path) if relative else fmt.absolute(spec.path)
        forward = dict(spec.map) if spec.map is not None else codes.get(spec.table) if spec.table else None
        self.forward = forward
        self.backward: dict[str, str] | None = None
        if forward is not None:
            self.backward = {}
            for k, v in forward.items():
                self.backward.setdefault(v, k)

    def to_hl7(self, value: str | None, where: str) -> str | None:
        """The HL7 text for a document value (None: nothing to write)."""
        if self.const is not None:
            return self.const
        if value is None or value == "":
            if self.required:
                raise MappingError(f"{where} is required (for {self.hl7}) and has no value", location=where, code="101")
            return self.default
        if self.forward is not None:
            hit = self.forward.get(value)
            if hit is not None:
                return hit
            if self.default is not None:
                return self.default
            if self.keep:
                return value
            raise MappingError(f"{where}: value {value!r} is not in the code map (for {self.hl7})", location=where)
        if self.type in ("date", "datetime"):
            return _iso_to_hl7(value, self.type, where)
        if self.type == "boolean":
            low = value.strip().lower()
            return "Y" if low in ("true", "y", "yes", "1") else "N" if low in ("false", "n", "no", "0") else value
        return value

    def from_hl7(self, value: str | None, where: str) -> tuple[str, str | None] | None:
        """(text, JSON kind) for an HL7 value, or None: nothing to write."""
        if value == '""':
            value = None
        if value is None or value == "":
            if self.required:
                raise MappingError(
                    f"{where} is required (for {self.path}) and has no value", location=where, code="101"
                )
            if self.default is None:
                return None
            return self.default, "string"
        if self.backward is not None:
            return self.backward.get(value, value), "string"
        if self.type in ("date", "datetime"):
            return _hl7_to_iso(value, self.type, where), "string"
        if self.type == "number":
            return _json_number(value, where), "number"
        if self.type == "boolean":
            return ("true" if value.strip().upper() in ("Y", "T", "TRUE", "1") else "false"), "boolean"
        return value, "string"


# ------------------------------------------------------------------------------------------------ the two formats
class _Format:
    name: ClassVar[str]
    input_types: ClassVar[tuple[str, ...]]

    def absolute(self, path: str) -> Any:
        raise NotImplementedError

    def relative(self, path: str) -> Any:
        raise NotImplementedError

    def parse(self, raw: bytes) -> Any:
        raise NotImplementedError

    def items(self, doc: Any, steps: Any) -> list[Any]:
        """The nodes a group's path selects."""
        raise NotImplementedError

    def values(self, node: Any, steps: Any) -> list[str]:
        """The non-empty values at ``steps`` from ``node``."""
        raise NotImplementedError


class _Json(_Format):
    name = "json"
    input_types = ("json", "fhir", "raw")

    def absolute(self, path: str) -> Any:
        return jd.parse_path(path)

    def relative(self, path: str) -> Any:
        return jd.relative_steps(path)

    def parse(self, raw: bytes) -> Any:
        return jd.parse(raw)

    def items(self, doc: Any, steps: Any) -> list[Any]:
        return jd.select_from(doc.data, steps)

    def values(self, node: Any, steps: Any) -> list[str]:
        return jd.values_at(node, steps)


class _Xml(_Format):
    name = "xml"
    input_types = ("xml", "raw")

    def absolute(self, path: str) -> Any:
        return xd.parse_path(path)

    def relative(self, path: str) -> Any:
        return xd.relative_steps(path)

    def parse(self, raw: bytes) -> Any:
        return xd.parse(raw)

    def items(self, doc: Any, steps: Any) -> list[Any]:
        return xd.select_from(doc.document_node(), steps)

    def values(self, node: Any, steps: Any) -> list[str]:
        return xd.values_at(node, steps)


class _Compiled:
    """A layout with every path parsed and its code tables read, for one format."""

    def __init__(self, layout_name: str, ctx: TransformContext, fmt: _Format) -> None:
        from hub.transforms.hl7v2.paths import check_path as check_hl7

        self.name = layout_name
        self.layout = layout = load_doc_layout(ctx, layout_name)
        self.fmt = fmt
        codes: dict[str, dict[str, str]] = {}

        def compile_field(hl7: str, t: Target, where: str, relative: bool, segment: str | None = None) -> _Field:
            why = check_hl7(hl7)
            if why is not None:
                raise ConfigError(f"layout {layout_name}: {where}: {why}")
            if segment is not None and not hl7.startswith(segment + "-"):
                raise ConfigError(f"layout {layout_name}: {where}: a path of the group's segment {segment} is needed")
            if isinstance(t, FieldSpec) and t.table and t.table not in codes:
                from hub.transforms.mapping import load_code_table

                table = Path(ctx.mappings_dir) / t.table
                if not table.is_file():
                    raise ConfigError(f"layout {layout_name}: {where}: code table {t.table} not found")
                codes[t.table] = load_code_table(table, None, None)
            try:
                return _Field(hl7, t, fmt, relative, codes)
            except MappingError as exc:
                raise ConfigError(f"layout {layout_name}: {where}: {exc}") from None

        self.fields = [compile_field(h, t, f"fields.{h}", False) for h, t in layout.fields.items()]
        self.groups: list[tuple[GroupSpec, Any, list[_Field]]] = []
        for i, g in enumerate(layout.groups):
            try:
                steps = fmt.absolute(g.path)
            except MappingError as exc:
                raise ConfigError(f"layout {layout_name}: groups[{i}].path: {exc}") from None
            fields = [compile_field(h, t, f"groups[{i}].fields.{h}", True, g.segment) for h, t in g.fields.items()]
            self.groups.append((g, steps, fields))
        for p in layout.constants:
            try:
                fmt.absolute(p)
            except MappingError as exc:
                raise ConfigError(f"layout {layout_name}: constants.{p}: {exc}") from None


def _occurrence(hl7: str, n: int) -> str:
    from hub.transforms.hl7v2.paths import parse_path

    return str(parse_path(hl7)._replace(occurrence=n))


# ------------------------------------------------------------------------------------------------ document → v2
class _DocToV2:
    fmt: ClassVar[_Format]
    name: ClassVar[str]

    def __init__(self, layout: str, ctx: TransformContext) -> None:
        self.c = _Compiled(layout, ctx, self.fmt)

    def __call__(self, message: Message) -> Message:
        from hub.transforms.hl7v2 import new_message

        if message.content_type not in self.fmt.input_types:
            raise MappingError(f"{self.name} needs {self.fmt.name.upper()} input, not {message.content_type}")
        doc = message.parsed if message.content_type == self.fmt.name and message.parsed is not None else None
        if doc is None:
            doc = self.fmt.parse(message.raw)
        hdr = self.c.layout.hl7
        now = datetime.now(UTC).replace(microsecond=0)
        msg = new_message(
            hdr.message_type,
            version=hdr.version,
            processing_id=hdr.processing_id,
            sending_app=hdr.sending_app,
            sending_facility=hdr.sending_facility,
            receiving_app=hdr.receiving_app,
            receiving_facility=hdr.receiving_facility,
            now=now,
        )
        parts = hdr.message_type.split("^")
        if parts[0] == "ADT" and len(parts) > 1:
            msg.set("EVN-1", parts[1])
            msg.set("EVN-2", now.strftime("%Y%m%d%H%M%S"))
        root = doc.data if isinstance(doc, jd.JsonDocument) else doc.document_node()
        for f in self.c.fields:
            self._write(msg, f, f.hl7, root, f.path or "")
        for g, steps, fields in self.c.groups:
            for i, item in enumerate(self.fmt.items(doc, steps), start=1):
                seg = f"{g.segment}[{i}]"
                if g.set_id:
                    msg.set(f"{seg}-1", str(i))
                for f in fields:
                    where = f"{g.path} #{i} {f.path}" if f.path else g.path
                    self._write(msg, f, _occurrence(f.hl7, i), item, where)
        out = msg.to_bytes()
        return message.replace(out, "hl7v2", parsed=msg)

    def _write(self, msg: Any, f: _Field, hl7: str, node: Any, where: str) -> None:
        value = None
        if f.steps is not None:
            found = self.fmt.values(node, f.steps)
            value = found[0] if found else None
        text = f.to_hl7(value, where)
        if text is None or text == "":
            return
        try:
            msg.set(hl7, text)
        except MappingError as exc:
            raise MappingError(f"{hl7}: {exc}", location=hl7) from None


# ------------------------------------------------------------------------------------------------ v2 → document
class _V2ToDoc:
    fmt: ClassVar[_Format]
    name: ClassVar[str]

    def __init__(self, layout: str, ctx: TransformContext) -> None:
        self.c = _Compiled(layout, ctx, self.fmt)

    def __call__(self, message: Message) -> Message:
        from hub.transforms.document import document_of

        if message.content_type != "hl7v2":
            raise MappingError(f"{self.name} needs HL7 v2 input, not {message.content_type}")
        msg = document_of(message)
        doc = self.new_document()
        for path, text in self.c.layout.constants.items():
            self.put(doc, path, text, "string")
        for f in self.c.fields:
            if f.path is None:
                continue
            got = f.from_hl7(msg.get(f.hl7), f.hl7)
            if got is not None:
                self.put(doc, f.path, *got)
        for g, _, fields in self.c.groups:
            count = len(msg.segments_named(g.segment))  # type: ignore[attr-defined]
            self.start_group(doc, g.path)
            for i in range(1, count + 1):
                item = self.item_path(g.path, i)
                self.put(doc, item, "", "item")
                for f in fields:
                    if f.path is None:
                        continue
                    hl7 = _occurrence(f.hl7, i)
                    got = f.from_hl7(msg.get(hl7), hl7)
                    if got is not None:
                        self.put(doc, self.join(item, f.path), *got)
        return message.replace(doc.to_bytes(), self.fmt.name, parsed=doc)

    # the format's side
    def new_document(self) -> Any:
        raise NotImplementedError

    def put(self, doc: Any, path: str, text: str, kind: str | None) -> None:
        raise NotImplementedError

    def start_group(self, doc: Any, path: str) -> None:
        raise NotImplementedError

    def item_path(self, path: str, i: int) -> str:
        raise NotImplementedError

    def join(self, item: str, rel: str) -> str:
        raise NotImplementedError


def _check_writable_json(c: _Compiled, name: str) -> None:
    paths = list(c.layout.constants) + [f.path for f in c.fields if f.path]
    for p in paths:
        steps = jd.parse_path(p)
        if not steps or any(k == "all" for k, _ in steps):
            raise ConfigError(f"{name}: layout {c.name}: {p}: a path written to must name one place (no [*])")
    for g, steps, fields in c.groups:
        if not steps or steps[-1][0] != "all" or any(k == "all" for k, _ in steps[:-1]) or len(steps) < 2:
            raise ConfigError(f"{name}: layout {c.name}: group {g.path}: write it as $.name[*] (one [*], last)")
        for f in fields:
            if f.path and any(k == "all" for k, _ in jd.relative_steps(f.path)):
                raise ConfigError(f"{name}: layout {c.name}: {f.path}: a path written to must name one place")


class JsonToV2(_DocToV2):
    class Config(TransformConfig):
        """JSON → an HL7 v2 message by a layout under ``mappings/json/`` (HL7 path ↔ JSON path, repeating groups
        such as ``$.results[*]`` ↔ OBX): ``{type: json_to_v2, layout: json/lab_result.yaml}``."""

        type: Literal["json_to_v2"] = "json_to_v2"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["json/lab_result.yaml"])

    fmt = _Json()
    name = "json_to_v2"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        super().__init__(config.layout, ctx)


class XmlToV2(_DocToV2):
    class Config(TransformConfig):
        """XML → an HL7 v2 message by a layout under ``mappings/xml/`` (HL7 path ↔ XML path, repeating groups such
        as ``/lab/result`` ↔ OBX): ``{type: xml_to_v2, layout: xml/lab_result.yaml}``."""

        type: Literal["xml_to_v2"] = "xml_to_v2"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["xml/lab_result.yaml"])

    fmt = _Xml()
    name = "xml_to_v2"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        super().__init__(config.layout, ctx)


class V2ToJson(_V2ToDoc):
    class Config(TransformConfig):
        """HL7 v2 → JSON by a layout under ``mappings/json/`` read backwards (the same table as json_to_v2):
        ``{type: v2_to_json, layout: json/lab_result.yaml}``. Numbers and booleans as JSON types where the layout
        says ``type: number|boolean``; compact unless ``indent``."""

        type: Literal["v2_to_json"] = "v2_to_json"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["json/lab_result.yaml"])
        indent: int | None = Field(None, ge=1, le=8, description="Indent the JSON by this many spaces.")

    fmt = _Json()
    name = "v2_to_json"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        super().__init__(config.layout, ctx)
        self.indent = config.indent
        _check_writable_json(self.c, self.name)

    def new_document(self) -> jd.JsonDocument:
        return jd.JsonDocument.new(indent=self.indent)

    def put(self, doc: jd.JsonDocument, path: str, text: str, kind: str | None) -> None:
        if kind == "item":
            doc.put(path, {}, "json")
        else:
            doc.put(path, text, kind)

    def start_group(self, doc: jd.JsonDocument, path: str) -> None:
        doc.put(path.strip()[: path.strip().rindex("[")], [], "json")

    def item_path(self, path: str, i: int) -> str:
        p = path.strip()
        return f"{p[: p.rindex('[')]}[{i - 1}]"

    def join(self, item: str, rel: str) -> str:
        return item + rel.strip()[1:]


class V2ToXml(_V2ToDoc):
    class Config(TransformConfig):
        """HL7 v2 → XML by a layout under ``mappings/xml/`` read backwards (the same table as xml_to_v2):
        ``{type: v2_to_xml, layout: xml/lab_result.yaml}``. Written UTF-8 with an XML declaration."""

        type: Literal["v2_to_xml"] = "v2_to_xml"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["xml/lab_result.yaml"])

    fmt = _Xml()
    name = "v2_to_xml"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        super().__init__(config.layout, ctx)
        c = self.c
        paths = list(c.layout.constants) + [f.path for f in c.fields if f.path] + [g.path for g, _, _ in c.groups]
        roots = {xd.parse_path(p)[0].qname for p in paths}
        root = c.layout.root or (sorted(roots)[0] if len(roots) == 1 else None)
        if root is None:
            raise ConfigError(f"{self.name}: layout {c.name}: the paths start at different roots; set root:")
        for p in paths:
            steps = xd.parse_path(p)
            if not all(s.plain for s in steps) or steps[0].test != root.rpartition(":")[2]:
                raise ConfigError(f"{self.name}: layout {c.name}: {p}: write it as /{root}/name… to be written")
        for _, _, fields in c.groups:
            for f in fields:
                if f.path and not all(s.plain for s in xd.relative_steps(f.path)):
                    raise ConfigError(f"{self.name}: layout {c.name}: {f.path}: write it as name/… to be written")
        self.root = root

    def new_document(self) -> xd.XmlDocument:
        return xd.XmlDocument.new(self.root)

    def put(self, doc: xd.XmlDocument, path: str, text: str, kind: str | None) -> None:
        if kind == "item":
            doc.set(path, "")  # creates the element (empty)
        else:
            doc.set(path, text)

    def start_group(self, doc: xd.XmlDocument, path: str) -> None:
        return None

    def item_path(self, path: str, i: int) -> str:
        return f"{path.strip()}[{i}]"

    def join(self, item: str, rel: str) -> str:
        r = rel.strip()
        if r in (".", "./"):
            return item
        return item + (r[1:] if r.startswith("./") else "/" + r)
