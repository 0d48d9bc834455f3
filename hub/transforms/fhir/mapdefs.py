"""Load the v2 → FHIR tables of ``mappings/fhir/`` (see its README) and compile them for the converter.

Written by hand: no library reads the HL7 v2-to-FHIR IG's spreadsheets. Compiling does the slow work once per
table change — parsing conditions, resolving FHIR element paths against the R4 index (list or not, which type),
finding the maps rows name — so that converting a message only walks prepared rows.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from hub.errors import ConfigError

from . import r4
from .conditions import ConditionError, Path, parse_condition, parse_source
from .table_functions import FUNCTIONS  # every function a table may name (fn:name(args))

__all__ = [
    "Defs", "SegmentMap", "DatatypeMap", "Row", "Target", "Step", "MessageDef", "Node", "MsgRow", "Ref",
    "ResourceRule", "load_defs", "FUNCTIONS",
]  # fmt: skip


_TEXT_MAPS = {"ST": "text", "TX": "formatted", "FT": "formatted", "text": "text", "formatted": "formatted"}


@dataclass(frozen=True)
class Step:
    name: str
    slot: str | None
    many: bool
    type: str
    children: r4.TypeRef | None


@dataclass(frozen=True)
class Target:
    """A compiled FHIR element path relative to a resource or data type."""

    text: str
    steps: tuple[Step, ...]
    keys: tuple[tuple[str, ...], ...]  # keys[i]: the slot key of the list item at step i (its path with slots)

    @property
    def type(self) -> str:
        return self.steps[-1].type

    @property
    def last(self) -> Step:
        return self.steps[-1]


@dataclass
class Row:
    """One row of a segment or data type map."""

    file: str
    line: int
    src: Path
    cond: Callable[[Any], bool] | None
    target: Target | None
    kind: str  # const | prim | text | map | fn
    ftype: str  # FHIR type the value must have ("" when the target decides nothing: a map)
    vocab: str = ""
    const: Any = None
    map_name: str = ""
    map: DatatypeMap | None = None
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    binding: frozenset[str] | None = None  # required codes of the target (a code element)
    table: str = ""  # the HL7 table of a bare code (HL70007): an unmapped code keeps its system
    merge: bool = False  # target $this: the map's result is part of the value being made (SAD inside XAD)
    reads: tuple[Path, ...] = ()  # what the condition reads (OBX-2 decides OBX-5's type): counted as used by --explain

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class SegmentMap:
    name: str
    segment: str
    type: str  # the resource (or "Bundle")
    rows: list[Row]
    file: str

    def fields(self) -> set[tuple[str, int]]:
        return {(r.src.seg, r.src.field) for r in self.rows if not r.src.datatype}


@dataclass
class DatatypeMap:
    name: str
    datatype: str
    type: str  # FHIR type of the result: a data type, a primitive or a resource
    rows: list[Row]
    file: str
    resource: bool = False
    primitive: bool = False
    _pure: bool | None = None

    @property
    def pure(self) -> bool:
        """Its result depends on the value mapped and the tables only (no condition or function reads the segment,
        the patient or other resources): the converter may reuse it for the same text."""
        if self._pure is None:
            self._pure = False  # a map that (wrongly) contains itself is not pure
            ok = True
            for r in self.rows:
                paths = [a for a in (*r.args, *r.reads) if isinstance(a, Path)]
                if (
                    any(not a.datatype for a in paths)
                    or (r.kind == "fn" and not getattr(r.fn, "pure", False))
                    or (r.kind == "map" and (r.map is None or r.map.resource or not r.map.pure))
                ):
                    ok = False
                if not ok:
                    break
            self._pure = ok
        return self._pure


@dataclass(frozen=True)
class Ref:
    """``Left[n].element=Right[m]``: set after a message row."""

    left: str
    target: Target
    right: str


@dataclass
class MsgRow:
    file: str
    line: int
    cond: Callable[[Any], bool] | None
    label: str  # "Patient[1]" (or "Bundle")
    type: str
    map_name: str
    maps: list[SegmentMap]
    refs: list[Ref]
    creates: bool = False  # the first row that names the label: each occurrence makes a new instance
    entry: str = ""  # how the entry is written, when not as resources.csv says: update | create | fill | replace


@dataclass
class Node:
    """A position in a message structure: a segment or a group."""

    name: str
    path: str
    min: int
    max: int  # 0 = unbounded
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    rows: list[MsgRow] = field(default_factory=list)
    starts: frozenset[str] = frozenset()  # a group: the segments an occurrence can begin with
    index: int = 0

    @property
    def group(self) -> bool:
        return bool(self.children) or len(self.name) > 3

    @property
    def repeats(self) -> bool:
        return self.max != 1


@dataclass
class MessageDef:
    name: str
    root: Node
    file: str

    def nodes(self) -> list[Node]:
        out: list[Node] = []

        def walk(n: Node) -> None:
            for c in n.children:
                out.append(c)
                walk(c)

        walk(self.root)
        return out


@dataclass
class ResourceRule:
    type: str
    key_type: str  # identifier type code to prefer ("" = the first identifier)
    mode: str  # update | create
    display: str  # element giving a Reference's display
    without_key: str  # post | display | derive
    defaults: list[tuple[Target, Any]]


@dataclass
class Defs:
    folder: FsPath
    structures: dict[str, str] = field(default_factory=dict)  # "ADT^A04" → "ADT_A01"
    messages: dict[str, MessageDef] = field(default_factory=dict)
    segments: dict[str, SegmentMap] = field(default_factory=dict)
    datatypes: dict[str, DatatypeMap] = field(default_factory=dict)
    resources: dict[str, ResourceRule] = field(default_factory=dict)

    def structure(self, mtype: str, trigger: str, declared: str = "") -> str | None:
        if declared and declared in self.messages:
            return declared
        s = self.structures.get(f"{mtype}^{trigger}")
        if s is None and f"{mtype}_{trigger}" in self.messages:
            s = f"{mtype}_{trigger}"
        return s

    def supported(self) -> list[str]:
        """The trigger events that convert, sorted (for the refusal reason)."""
        return sorted(e for e, s in self.structures.items() if s in self.messages)


# ---------------------------------------------------------------------------------------------- reading CSV
def _rows(path: FsPath) -> list[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = None
        out = []
        for row in reader:
            if not row or not any(c.strip() for c in row):
                continue
            if row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [h.strip().lower() for h in row]
                continue
            cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
            out.append((reader.line_num, cells))
    if header is None:
        raise ConfigError(f"{path}: empty table (a header row is needed)")
    return out


def _where(path: FsPath, line: int) -> str:
    return f"{path.as_posix()}:{line}"


_NAME = re.compile(r"^([A-Z][A-Z0-9]{1,3})\[([A-Za-z]+)(?:-[^\]]*)?\]$")


def _split_name(name: str) -> tuple[str, str]:
    """``PID[Patient]`` → ("PID", "Patient"); ``OBX[Observation-Component]`` → ("OBX", "Observation")."""
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a map name like PID[Patient] or XAD[Address]")
    return m.group(1), m.group(2)


# ---------------------------------------------------------------------------------------------- targets
_STEP = re.compile(r"^(_?[A-Za-z][A-Za-z0-9]*)(?:\[([^\]]*)\])?$")


def compile_target(base: r4.TypeRef, text: str) -> Target:
    steps: list[Step] = []
    keys: list[tuple[str, ...]] = []
    ref: r4.TypeRef | None = base
    acc: list[str] = []
    for part in text.split("."):
        m = _STEP.match(part.strip())
        if m is None:
            raise ValueError(f"{text!r}: {part!r} is not an element name")
        name, slot = m.group(1), m.group(2)
        if ref is None:
            raise ValueError(f"{text!r}: {steps[-1].name} is a primitive and has no {name}")
        primitive_ext = name.startswith("_")  # _birthDate: the extensions of a primitive value (FHIR JSON)
        el = r4.child(ref, name[1:] if primitive_ext else name)
        if el is None:
            raise ValueError(f"{text!r}: {base.name} has no element {'.'.join([*(s.name for s in steps), name])}")
        if primitive_ext:
            if el.children is not None:
                raise ValueError(f"{text!r}: {name[1:]} is not a primitive")
            el = r4.Elem(name, el.many, "Element", 0, r4.TypeRef("Element"), None)
        if slot is not None and (slot == "" or "-" in slot or slot == "+"):
            slot = None  # line[1-3], name[+]: no slot, one more item per value
        acc.append(f"{name}[{slot}]" if slot is not None else name)
        steps.append(Step(el.name, slot, el.many, el.type, el.children))
        keys.append(tuple(acc))
        ref = el.children
    return Target(text, tuple(steps), tuple(keys))


def _constant(text: str) -> Any:
    t = text.strip()
    if t[:1] in ("{", "["):
        import json

        try:
            return json.loads(t)
        except ValueError:
            raise ValueError(f"value {t[:40]!r} is not valid JSON") from None
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        return t[1:-1]
    if t in ("true", "false"):
        return t == "true"
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    return t


_FN = re.compile(r"^fn:([a-z_][a-z0-9_]*)\s*(?:\((.*)\))?$")


def _fn_args(text: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for a in (x.strip() for x in text.split(",")) if text.strip() else []:
        if len(a) >= 2 and a[0] == a[-1] and a[0] in "\"'":
            out.append(a[1:-1])
            continue
        try:
            out.append(parse_source(a))
        except ConditionError:
            out.append(a)  # a label (DiagnosticReport[1]) or a word
    return tuple(out)


# ---------------------------------------------------------------------------------------------- maps
def _compile_map_rows(
    path: FsPath,
    rows: list[tuple[int, dict[str, str]]],
    base: r4.TypeRef | None,
    src_col: str,
    primitive_type: str = "",
) -> list[Row]:
    out: list[Row] = []
    for line, c in rows:
        where = _where(path, line)
        try:
            src = parse_source(c.get(src_col, ""))
            cond = _condition(c.get("condition", ""))
            tgt_text = c.get("target", "")
            target = None
            merge = tgt_text == "$this" and base is not None
            if tgt_text and tgt_text != "$this":
                if base is None:
                    raise ValueError(f"the map's result is a {primitive_type}: leave target empty")
                target = compile_target(base, tgt_text)
            elif base is not None and not merge:
                raise ValueError("target is empty")
            ftype = target.type if target is not None else primitive_type
            binding = None
            if target is not None:
                el_binding = _binding_of(base, target)  # type: ignore[arg-type]
                binding = r4.required_codes(el_binding)
            mp = c.get("map", "")
            value = c.get("value", "")
            vocab = c.get("vocabulary", "")
            if vocab and not (path.parent.parent / "codes" / f"{vocab}.csv").is_file():  # a typo would map nothing
                raise ValueError(f"vocabulary {vocab!r}: there is no codes/{vocab}.csv")
            table = c.get("table", "")
            if table and not re.fullmatch(r"HL7\d{4}|\d{4}", table):
                raise ValueError(f"table {table!r} is not an HL7 table like HL70007")
            row = Row(
                path.as_posix(),
                line,
                src,
                cond[0] if cond else None,
                target,
                "prim",
                ftype,
                vocab=vocab,
                binding=binding,
                table=table[-4:] if table else "",
                merge=merge,
                reads=tuple(cond[1]) if cond else (),
            )
            if merge and not mp:
                raise ValueError("target $this needs a map of the same type")
            if value:
                row.kind, row.const = "const", _constant(value)
            elif mp.startswith("fn:"):
                m = _FN.match(mp)
                if m is None:
                    raise ValueError(f"{mp!r} is not a function call like fn:name(args)")
                fn = FUNCTIONS.get(m.group(1))
                if fn is None:
                    raise ValueError(f"unknown function {m.group(1)!r} (known: {', '.join(sorted(FUNCTIONS))})")
                row.kind, row.fn, row.args = "fn", fn, _fn_args(m.group(2) or "")
            elif mp in _TEXT_MAPS:
                row.kind = _TEXT_MAPS[mp]
            elif mp:
                _split_name(mp)
                row.kind, row.map_name = "map", mp
            elif ftype and not r4.is_primitive(ftype) and not vocab and not table:
                raise ValueError(f"{tgt_text} is a {ftype}: name a map (e.g. CWE[{ftype}]) or a vocabulary")
            out.append(row)
        except (ValueError, ConditionError, KeyError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return out


_CONDITIONS: dict[str, Any] = {}


def _condition(text: str) -> Any:
    """One compiled condition per text: the rows that share a condition share its function, so the converter
    evaluates it once per segment repetition (OBX-2 EQUALS "NM" on many rows of OBX[Observation])."""
    got = _CONDITIONS.get(text)
    if got is None:
        got = _CONDITIONS[text] = parse_condition(text)
    return got


def _binding_of(base: r4.TypeRef, target: Target) -> str | None:
    ref: r4.TypeRef | None = base
    el = None
    for st in target.steps:
        if ref is None:
            return None
        el = r4.child(ref, st.name)
        if el is None:
            return None
        ref = el.children
    return el.binding if el is not None else None


def _load_segment_map(path: FsPath) -> SegmentMap:
    name = path.stem
    try:
        seg, typ = _split_name(name)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if typ != "Bundle" and not r4.is_resource(typ):
        raise ConfigError(f"{path}: {typ} is not a FHIR R4 resource")
    base = r4.TypeRef(typ if typ != "Bundle" else "Bundle")
    rows = _compile_map_rows(path, _rows(path), base, "field")
    return SegmentMap(name, seg, typ, rows, path.as_posix())


def _load_datatype_map(path: FsPath) -> DatatypeMap:
    name = path.stem
    try:
        dt, typ = _split_name(name)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # IG names use lower-case primitives and a few aliases
    typ = {"String": "string", "Boolean": "boolean", "Code": "code", "Uri": "uri", "DateTime": "dateTime"}.get(typ, typ)
    if typ not in r4.index()["types"]:
        raise ConfigError(f"{path}: {typ} is not a FHIR R4 type")
    primitive = r4.is_primitive(typ)
    rows = _compile_map_rows(
        path, _rows(path), None if primitive else r4.TypeRef(typ), "component", typ if primitive else ""
    )
    return DatatypeMap(name, dt, typ, rows, path.as_posix(), resource=r4.is_resource(typ), primitive=primitive)


# ---------------------------------------------------------------------------------------------- messages
_LABEL = re.compile(r"^([A-Z][A-Za-z]+)(?:\[([^\]]+)\])?$")
_CARD = {"1": (1, 1), "0..1": (0, 1), "0..*": (0, 0), "1..*": (1, 0), "": (0, 0)}


def _label(text: str) -> tuple[str, str]:
    m = _LABEL.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a resource label like Patient[1]")
    return (f"{m.group(1)}[{m.group(2)}]" if m.group(2) else m.group(1)), m.group(1)


def _refs(text: str, labels: dict[str, str]) -> list[Ref]:
    out = []
    for part in (p.strip() for p in re.split(r"[;\n]", text) if p.strip()):
        left, sep, right = part.partition("=")
        if not sep:
            raise ValueError(f"reference {part!r} needs Left[n].element=Right[m]")
        left, right = left.strip(), right.strip()
        if left.endswith(".reference"):
            left = left[: -len(".reference")]
        if right.endswith(".id"):
            right = right[: -len(".id")]
        m = re.match(r"^([A-Z][A-Za-z]+(?:\[[^\]]+\])?)\.(.+)$", left)
        if m is None:
            raise ValueError(f"reference {part!r}: the left side is Label.element")
        llabel, ltype = _label(m.group(1))
        rlabel, _ = _label(right)
        if llabel not in labels:
            labels[llabel] = ltype
        out.append(Ref(llabel, compile_target(r4.TypeRef(ltype), m.group(2)), rlabel))
    return out


def _load_message(path: FsPath, segments: dict[str, SegmentMap]) -> MessageDef:
    name = path.stem
    root = Node(name, "", 1, 1)
    by_path: dict[str, Node] = {"": root}
    last_pos: dict[str, str] = {}  # group path → the last child path used (a repeat further down is a new position)
    labels: dict[str, str] = {}
    created: set[str] = set()
    for line, c in _rows(path):
        where = _where(path, line)
        try:
            seg_path = c.get("segment", "")
            if not seg_path:
                raise ValueError("segment is empty")
            parts = seg_path.split(".")
            parent = root
            ppath = ""
            for i, part in enumerate(parts):
                base_name = part.split("#", 1)[0]
                cpath = f"{ppath}.{part}" if ppath else part
                last = i == len(parts) - 1
                node = by_path.get(cpath)
                prev = last_pos.get(ppath)
                # a name declared before, after another position of the same group: a second position with that
                # name (ADT_A17's second PID and OBSERVATION group)
                if node is None or (prev is not None and prev != cpath and node.parent is parent):
                    card = _CARD.get(c.get("card", "") if last else "")
                    if card is None:
                        raise ValueError(f"card {c.get('card')!r} is not 1, 0..1, 0..* or 1..*")
                    node = Node(base_name, cpath, card[0], card[1], parent, index=len(parent.children))
                    parent.children.append(node)
                    by_path[cpath] = node
                last_pos[ppath] = cpath
                parent, ppath = node, cpath
            node = parent
            label_text = c.get("resource", "")
            if label_text:
                if node.group:
                    raise ValueError(f"{seg_path} is a group: a resource is made from a segment")
                label, rtype = _label(label_text)
                map_name = c.get("map", "")
                smaps = []
                for one in (m.strip() for m in map_name.split(";") if m.strip()):  # several maps fill one resource
                    smap = segments.get(one)
                    if smap is None:
                        raise ValueError(f"no segment map {one} (segments/{one}.csv)")
                    if smap.type != rtype:
                        raise ValueError(f"{one} fills a {smap.type}, not a {rtype}")
                    smaps.append(smap)
                cond = parse_condition(c.get("condition", ""))
                row = MsgRow(path.as_posix(), line, cond[0] if cond else None, label, rtype, map_name, smaps, [])
                row.entry = c.get("entry", "")
                if row.entry not in ("", "update", "create", "fill", "replace"):
                    raise ValueError(f"entry {row.entry!r} must be update, create, fill or replace")
                if label not in created and label != "Bundle":
                    row.creates = True
                    created.add(label)
                labels.setdefault(label, rtype)
                row.refs = _refs(c.get("references", ""), labels)
                node.rows.append(row)
            elif c.get("references"):
                raise ValueError("references need a resource on the row")
        except (ValueError, ConditionError, KeyError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    _finish(root)
    return MessageDef(name, root, path.as_posix())


def _finish(node: Node) -> None:
    for i, c in enumerate(node.children):
        c.index = i
        if c.children:
            _finish(c)
    if node.children:
        starts: set[str] = set()
        for c in node.children:
            starts |= {c.name} if not c.children else set(c.starts)
            if c.min > 0:
                break
        node.starts = frozenset(starts)


# ---------------------------------------------------------------------------------------------- resources
def _load_resources(path: FsPath) -> dict[str, ResourceRule]:
    out: dict[str, ResourceRule] = {}
    for line, c in _rows(path):
        where = _where(path, line)
        try:
            rtype = c.get("resource", "")
            if not r4.is_resource(rtype):
                raise ValueError(f"{rtype!r} is not a FHIR R4 resource")
            key = c.get("key", "identifier") or "identifier"
            m = re.fullmatch(r"identifier(?:\[type=([^\]]+)\])?", key)
            if m is None:
                raise ValueError(f"key {key!r} must be identifier or identifier[type=CODE]")
            mode = c.get("mode", "update") or "update"
            if mode not in ("update", "create"):
                raise ValueError(f"mode {mode!r} must be update or create")
            without = c.get("without_key", "post") or "post"
            if without not in ("post", "display", "derive"):
                raise ValueError(f"without_key {without!r} must be post, display or derive")
            defaults = []
            for part in (p.strip() for p in c.get("defaults", "").split(";") if p.strip()):
                k, sep, v = part.partition("=")
                if not sep:
                    raise ValueError(f"default {part!r} needs element=value")
                defaults.append((compile_target(r4.TypeRef(rtype), k.strip()), _default_value(v.strip())))
            out[rtype] = ResourceRule(rtype, m.group(1) or "", mode, c.get("display", ""), without, defaults)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return out


def _default_value(text: str) -> Any:
    import json

    t = text.strip()
    if t.startswith(("{", "[")):
        return json.loads(t)
    return _constant(t)


# ---------------------------------------------------------------------------------------------- all of it
def load_defs(folder: FsPath) -> Defs:
    d = Defs(folder)
    st = folder / "structures.csv"
    if st.is_file():
        for line, c in _rows(st):
            ev, s = c.get("event", ""), c.get("structure", "")
            if not re.fullmatch(r"[A-Z0-9]{3}\^[A-Z0-9]{3}", ev) or not s:
                raise ConfigError(f"{_where(st, line)}: event must look like ADT^A04 and structure like ADT_A01")
            d.structures[ev] = s
    for p in sorted((folder / "datatypes").glob("*.csv")):
        m = _load_datatype_map(p)
        d.datatypes[m.name] = m
    for p in sorted((folder / "segments").glob("*.csv")):
        sm = _load_segment_map(p)
        d.segments[sm.name] = sm
    rules = folder / "resources.csv"
    if rules.is_file():
        d.resources = _load_resources(rules)
    for p in sorted((folder / "messages").glob("*.csv")):
        md = _load_message(p, d.segments)
        d.messages[md.name] = md
    # resolve the maps rows name
    owners: list[DatatypeMap | SegmentMap] = [*d.datatypes.values(), *d.segments.values()]
    for owner in owners:
        for row in owner.rows:
            if row.kind == "map":
                mp = d.datatypes.get(row.map_name)
                if mp is None:
                    raise ConfigError(f"{row.where}: no data type map {row.map_name} (datatypes/{row.map_name}.csv)")
                if row.merge and mp.type != owner.type:
                    raise ConfigError(f"{row.where}: target $this needs a map that makes a {owner.type}, not {mp.type}")
                if row.target is not None and mp.resource and row.target.type != "Reference":
                    raise ConfigError(f"{row.where}: {row.map_name} makes a {mp.type}: its target must be a Reference")
                if (
                    row.target is not None
                    and not mp.resource
                    and not mp.primitive
                    and mp.type != row.target.type
                    and row.target.type not in ("Element", "BackboneElement")
                ):
                    if not (
                        mp.type == "Quantity"
                        and row.target.type
                        in ("SimpleQuantity", "Duration", "Age", "Count", "Distance", "MoneyQuantity")
                    ):
                        raise ConfigError(
                            f"{row.where}: {row.map_name} makes a {mp.type}, "
                            f"the target {row.target.text} is a {row.target.type}"
                        )
                row.map = mp
    return d
