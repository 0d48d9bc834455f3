"""HL7 v2 → FHIR R4 Bundle: an interpreter of the tables in ``mappings/fhir/`` (see its README).

The tables — message structures, segment maps, data type maps, code maps, started from the HL7 v2-to-FHIR IG's
spreadsheets — say what every field becomes; this module only walks them:

1. the structure (MSH-9.3, else ``structures.csv`` for the trigger event) picks ``messages/STRUCTURE.csv``; a
   structure without a map is refused with the reason, never half-converted;
2. the segments are placed into the structure's groups (:func:`_place`, tolerant of what real senders do);
3. each segment is mapped by the message table's rows for its position: the row's segment map fills a resource
   *instance* (``Patient[1]``, one ``Observation[2]`` per OBX …) and its references link instances;
4. every value is converted to its FHIR type and checked as it is written (dates, times, codes, URIs, ids …):
   an invalid one is left out with a warning (``invalid: warn``, the default) or rejects the message with its
   location (``invalid: reject``);
5. instances become Bundle entries (:class:`~.bundle.BundleBuilder`): conditional on the business identifier
   ``resources.csv`` names, with stable fullUrls.

Everything is plain dicts serialised once (no pydantic on this path). Speed: ``tests/bench/bench_fhir.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from hub.errors import MappingError
from hub.message import Message
from hub.spec import TransformConfig
from hub.transforms.hl7v2 import Hl7Message, parse_path
from hub.transforms.hl7v2 import parse as parse_v2

from . import r4
from .bundle import BundleBuilder
from .conditions import Path
from .datatypes import V2, Seg, date_of, dtm
from .document import FhirDocument
from .functions_base import APPENDED, number
from .mapdefs import DatatypeMap, Defs, MessageDef, MsgRow, Node, Row, SegmentMap, Target
from .maps import Tables, load_tables
from .validate import period_reversed, resource_invariants

try:  # orjson is several times faster; the standard library is the fallback
    import orjson

    def dumps(obj: Any) -> bytes:
        out: bytes = orjson.dumps(obj)  # (orjson is untyped here: ignore_missing_imports)
        return out

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


try:  # the FHIR primitive checks (values.py); absent only while it is being written
    from .values import problem as check_value
except ImportError:  # pragma: no cover

    def check_value(type_code: str, value: Any) -> str | None:
        return None


__all__ = ["V2ToFhir", "convert", "dumps", "Conversion"]

_NULL = '""'


def _h(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()[:20]


# ============================================================================================ structure placement
class Occ:
    """One occurrence of a group (the message itself is the root occurrence): what was placed in it and the
    resource instances made in it (by label)."""

    __slots__ = ("labels", "names", "node", "parent")

    def __init__(self, node: Node, parent: Occ | None) -> None:
        self.node = node
        self.parent = parent
        self.labels: dict[str, Inst] = {}
        self.names: dict[str, Seg] = {}  # segment ID → its first segment in this occurrence

    def find(self, name: str) -> Seg | None:
        o: Occ | None = self
        while o is not None:
            s = o.names.get(name)
            if s is not None:
                return s
            o = o.parent
        return None


class _Frame:
    __slots__ = ("node", "occ", "pos")

    def __init__(self, node: Node, occ: Occ) -> None:
        self.node = node
        self.occ = occ
        self.pos = -1


def _fits(child: Node, name: str) -> bool:
    return child.name == name if not child.children else name in child.starts


def _forward(fr: _Frame, name: str) -> int:
    """The first child of the frame's group, from the one used last onward, that can take segment ``name``."""
    kids = fr.node.children
    start = fr.pos if fr.pos >= 0 else 0
    for i in range(start, len(kids)):
        c = kids[i]
        if i == fr.pos and not c.repeats:
            continue
        if _fits(c, name):
            return i
    return -1


def _place(md: MessageDef, segs: list[Seg]) -> tuple[list[tuple[Seg, Node, Occ]], list[tuple[Seg, Occ]]]:
    """Put each segment into the structure: (segment, position, group occurrence) in message order, and the
    segments the structure has no place for (Z-segments, strays) with the occurrence they were found in.

    Written by hand (as :mod:`hub.transforms.hl7v2.validate` does for strict validation): walking the structure in
    order like HAPI, but tolerant — a segment out of order is put where its name fits in an open group rather
    than refused, since a converter must take what senders really send."""
    root = Occ(md.root, None)
    stack = [_Frame(md.root, root)]
    placed: list[tuple[Seg, Node, Occ]] = []
    extra: list[tuple[Seg, Occ]] = []
    for seg in segs:
        name = seg.name
        hit = -1
        depth = len(stack) - 1
        while depth >= 0:
            hit = _forward(stack[depth], name)
            if hit >= 0:
                break
            depth -= 1
        if hit < 0:  # out of order: the innermost open group that has it anywhere, or a group that starts with it
            depth = len(stack) - 1
            while depth >= 0:
                kids = stack[depth].node.children
                hit = next((i for i, c in enumerate(kids) if _fits(c, name)), -1)
                if hit >= 0:
                    break
                depth -= 1
        if hit < 0:
            extra.append((seg, stack[-1].occ))
            continue
        del stack[depth + 1 :]
        fr = stack[depth]
        fr.pos = hit
        node = fr.node.children[hit]
        while node.children:  # open the group (and the groups it starts with) down to the segment
            occ = Occ(node, fr.occ)
            fr = _Frame(node, occ)
            stack.append(fr)
            i = next(i for i, c in enumerate(node.children) if _fits(c, name))
            fr.pos = i
            node = node.children[i]
        occ = fr.occ
        if name not in occ.names:
            occ.names[name] = seg
        placed.append((seg, node, occ))
    return placed, extra


# ============================================================================================ instances
class Inst:
    """One resource being built."""

    __slots__ = ("display", "dropped", "entry", "filled", "key", "label", "res", "same", "seq", "texts", "type")

    def __init__(self, rtype: str, label: str, seq: int) -> None:
        self.type = rtype
        self.label = label
        self.res: dict[str, Any] = {"resourceType": rtype}
        self.seq = seq
        self.filled = False  # a map row wrote something (an instance nothing was written to is left out)
        self.key: dict[str, Any] | None = None
        self.dropped = False
        self.same: Inst | None = None  # a duplicate of this earlier instance (same business identifier)
        self.texts: dict[tuple[str, ...], list[str]] | None = None  # lines collected for a text element
        self.display = ""
        self.entry = ""  # how its entry is written when the message table says (fill, replace …)


def _pick(comps: list[str], where: tuple[int, ...], ss: str) -> str:
    """Component ``where[0]`` of ``comps`` (and its subcomponent ``where[1]``), as written; '' when absent or null."""
    c = where[0]
    v = comps[c - 1] if c <= len(comps) else ""
    if len(where) > 1 and v:
        subs = v.split(ss)
        c2 = where[1]
        v = subs[c2 - 1] if c2 <= len(subs) else ""
    return "" if v == _NULL else v


class Ctx:
    """What a condition or a function reads: the segment being mapped, the field repetition and the data type
    value being mapped, the group occurrence (for segments of the message)."""

    __slots__ = ("dt", "field", "inst", "occ", "parts", "rep", "row", "run", "seg")

    def __init__(self, run: Conversion, seg: Seg | None, occ: Occ) -> None:
        self.run = run
        self.seg = seg
        self.field = 0
        self.rep: list[str] | None = None  # components of the repetition being mapped
        self.dt = ""  # the data type whose value is being mapped
        self.parts: list[str] | None = None  # its components (or subcomponents)
        self.occ = occ
        self.inst: Inst | None = None
        self.row: Row | None = None

    # ------------------------------------------------------------------ raw access
    def raw(self, path: Path) -> str:
        """The value at ``path`` as written (escapes and subcomponents kept); '' when absent or null."""
        if path.datatype:
            parts = self.parts
            if parts is None:
                return ""
            return _pick(parts, path.comps, self.run.v.ss)
        seg = self.seg
        if seg is None or path.seg != seg.name:
            seg = self.occ.find(path.seg) or self.run.v.seg(path.seg)
            if seg is None:
                return ""
            comps = None
        else:
            comps = self.rep if (path.field == self.field and self.rep is not None) else None
        if not path.field:
            return seg.name
        if comps is None:
            comps = self.run.v.first(seg, path.field)
            if not comps:
                return ""
        if not path.comps:
            return self.run.v.cs.join(comps) if len(comps) > 1 else ("" if comps[0] == _NULL else comps[0])
        return _pick(comps, path.comps, self.run.v.ss)

    def value(self, path: Path) -> str:
        """The decoded text at ``path`` (its first component/subcomponent when it has several)."""
        v = self.raw(path)
        if not v:
            return v
        run = self.run.v
        if run.cs in v:
            v = v.split(run.cs, 1)[0]
        if run.ss and run.ss in v:
            v = v.split(run.ss, 1)[0]
        return run.d(v)

    def subs(self, path: Path) -> list[str]:
        """The decoded parts of the value at ``path``: components of a field, subcomponents of a component."""
        v = self.raw(path)
        if not v:
            return []
        sep = self.run.v.cs if (not path.datatype and not path.comps) else self.run.v.ss
        return [self.run.v.d(x) for x in v.split(sep)] if sep and sep in v else [self.run.v.d(v)]

    def count(self, path: Path) -> int:
        seg = (
            self.seg
            if self.seg is not None and self.seg.name == path.seg
            else (self.occ.find(path.seg) or self.run.v.seg(path.seg))
        )
        if seg is None or path.datatype:
            return 0
        return len(self.run.v.reps(seg, path.field))

    def present(self, name: str) -> bool:
        return self.occ.find(name) is not None

    def valued(self, path: Path) -> bool:
        """A whole field is valued when any of its components is (``ORC-7 = ^^^20260316^^R``)."""
        raw = self.raw(path)
        if not raw:
            return False
        v = self.run.v
        return any(p and p != _NULL for c in raw.split(v.cs) for p in (c.split(v.ss) if v.ss else [c]))


# ============================================================================================ the conversion
class Conversion:
    """One message's conversion: the V2 reader, the instances, the warnings (``--explain`` adds coverage)."""

    def __init__(self, msg: Hl7Message, tables: Tables, cfg: V2ToFhir.Config, *, explain: bool = False) -> None:
        self.msg = msg
        self.v = V2(msg)
        self.tables = tables
        self.defs: Defs = tables.defs()
        self.cfg = cfg
        self.warnings: list[str] = []
        self.insts: list[Inst] = []
        self.latest: dict[str, Inst] = {}  # label → the instance made last
        self.refs: list[tuple[dict[str, Any], Inst]] = []
        self.bundle_meta: dict[str, Any] = {}
        self.explain = explain
        self.read: set[tuple[int, int, int, int]] = set()  # (segment index, field, repetition, component) written
        self.extra: list[Seg] = []
        msh = self.v.segs[0]
        # senders write "adt^a04", "ADT^A04 " or "ADT_A04": the event all the same
        self.mtype = self.v.val(msh, 9, 1).strip().upper()
        self.trigger = self.v.val(msh, 9, 2).strip().upper()
        if not self.trigger and "_" in self.mtype:
            self.mtype, _, self.trigger = self.mtype.partition("_")
        self.control_id = self.v.val(msh, 10)
        self.structure = ""
        self.patient_key = ""
        self._patient: Inst | None = None
        self.dt_cache = tables.dt_caches.setdefault((self.v.ckey, cfg.timezone), {})

    # ------------------------------------------------------------------ problems
    def invalid(self, where: str, why: str) -> None:
        if self.cfg.invalid == "reject":
            raise MappingError(f"{where}: {why}", location=where, code="102")
        text = f"{where}: {why}; left out"
        if text not in self.warnings:  # one value read by two rows (OBR-7 for the report and its observations)
            self.warnings.append(text)

    def where(self, ctx: Ctx, row: Row | None = None) -> str:
        seg = ctx.seg
        if seg is None:
            return row.where if row else "?"
        if row is not None and row.src.seg and not row.src.datatype and row.src.seg != seg.name:
            seg = ctx.occ.find(row.src.seg) or self.v.seg(row.src.seg) or seg  # a row reading another segment (OBR-7)
        n = 1
        for s in self.v.segs[: seg.index]:
            if s.name == seg.name:
                n += 1
        base = f"{seg.name}[{n}]" if n > 1 else seg.name
        if not ctx.field:
            return base
        out = f"{base}-{ctx.field}"
        if (ctx.dt and row is not None and row.src.datatype) or (row is not None and row.src.comps):
            out += "." + ".".join(map(str, row.src.comps))
        return out

    # ------------------------------------------------------------------ instances
    def new_instance(self, rtype: str, label: str) -> Inst:
        inst = Inst(rtype, label, len(self.insts))
        self.insts.append(inst)
        if label:
            self.latest[label] = inst
        return inst

    def instance_for(self, row: MsgRow, occ: Occ) -> Inst:
        if row.creates:
            inst = self.new_instance(row.type, row.label)
            occ.labels[row.label] = inst
            return inst
        o: Occ | None = occ
        while o is not None:
            found = o.labels.get(row.label)
            if found is not None:
                return found
            o = o.parent
        inst = self.new_instance(row.type, row.label)
        occ.labels[row.label] = inst
        return inst

    def lookup(self, label: str, occ: Occ) -> Inst | None:
        """The instance a reference names: the nearest one from ``occ`` outwards, else the latest made anywhere
        (an OBX in ORDER_OBSERVATION names the Patient of the sibling PATIENT group)."""
        o: Occ | None = occ
        while o is not None:
            inst = o.labels.get(label)
            if inst is not None:
                return inst
            o = o.parent
        return self.latest.get(label)

    def reference(self, inst: Inst) -> dict[str, Any]:
        """A Reference to ``inst``, filled in when the Bundle is built (the target's fullUrl is known then)."""
        ref: dict[str, Any] = {"reference": ""}
        self.refs.append((ref, inst))
        return ref

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        defs = self.defs
        v = self.v
        structure = defs.structure(self.mtype, self.trigger, v.val(v.segs[0], 9, 3).strip().upper())
        md = defs.messages.get(structure or "")
        if md is None:
            known = ", ".join(defs.supported())
            raise MappingError(
                f"v2_to_fhir has no mapping for {self.mtype or '?'}^{self.trigger or '?'}"
                + (f" (structure {structure})" if structure else "")
                + f"; supported: {known}",
                location="MSH-9",
                code="200",
            )
        self.structure = md.name
        placed, extra = _place(md, v.segs)
        self.extra = [s for s, _ in extra]
        for seg, node, occ in placed:
            if node.rows:
                self.map_segment(seg, node, occ)
        self.apply_extensions()
        return self.build()

    def map_segment(self, seg: Seg, node: Node, occ: Occ) -> None:
        ctx = Ctx(self, seg, occ)
        for row in node.rows:
            if row.cond is not None and not row.cond(ctx):
                continue
            if row.label == "Bundle":
                for smap in row.maps:
                    self.apply_map(smap, seg, self.bundle_meta, ctx, None)
                continue
            inst = self.instance_for(row, occ)
            if row.entry and not inst.entry:
                inst.entry = row.entry
            slots: dict[Any, Any] = {}
            if row.maps:
                ctx.inst = inst
                for smap in row.maps:
                    self.apply_map(smap, seg, inst.res, ctx, inst, slots)
                if inst.type == "Patient" and self._patient is None:
                    self._patient = inst
                    self.patient_key = self.key_text(inst)
            for ref in row.refs:
                left = inst if ref.left == row.label else self.lookup(ref.left, occ)
                right = self.lookup(ref.right, occ)
                if left is None or right is None or right is left:
                    continue
                _put(left.res, ref.target, slots if left is inst else {}, 0, self.reference(right))

    # ------------------------------------------------------------------ segment maps
    def apply_map(
        self,
        smap: SegmentMap,
        seg: Seg,
        out: dict[str, Any],
        ctx: Ctx,
        inst: Inst | None,
        slots: dict[Any, Any] | None = None,
    ) -> None:
        v = self.v
        if slots is None:
            slots = {}
        if smap.segment != seg.name:  # a map of another segment on this row (MSH[Provenance-Operator] on EVN)
            other = ctx.occ.find(smap.segment) or v.seg(smap.segment)
            if other is None:
                return
            seg = other
            ctx = Ctx(self, seg, ctx.occ)
            ctx.inst = inst
        explain = self.explain
        memo: dict[tuple[Any, int, int, int], bool] = {}
        for row in smap.rows:
            src = row.src
            s = seg if src.seg == seg.name else (ctx.occ.find(src.seg) or v.seg(src.seg))
            if s is None:
                continue
            f = s.f
            n = src.field
            if n >= len(f) or not f[n] or f[n] == _NULL:
                continue
            if row.fn is not None and getattr(row.fn, "whole_field", False):
                ctx.field, ctx.rep, ctx.row = n, None, row
                if row.cond is not None and not row.cond(ctx):
                    continue
                val = row.fn(self, ctx, row, v.reps(s, n), *row.args)
                if val is not None and row.target is not None:
                    if _put(out, row.target, slots, 0, val) and inst is not None:
                        inst.filled = True
                    if explain:
                        for ri in range(len(v.reps(s, n))):
                            self.read.add((s.index, n, ri, 0))
                continue
            reps = v.reps(s, n)
            cond = row.cond
            for ri, comps in enumerate(reps):
                ctx.field, ctx.rep, ctx.row = n, comps, row
                ctx.dt, ctx.parts = "", None
                if cond is not None:
                    # a condition reads the segment and this repetition only: its value is kept for the other rows
                    # of this segment that share it
                    ck = (cond, s.index, n, ri)
                    ok = memo.get(ck)
                    if ok is None:
                        ok = memo[ck] = bool(cond(ctx))
                    if not ok:
                        continue
                if src.comps:
                    c = src.comps[0]
                    raw = comps[c - 1] if c <= len(comps) else ""
                    level = 1
                    if len(src.comps) > 1 and raw:
                        subs = raw.split(v.ss) if v.ss else [raw]
                        c2 = src.comps[1]
                        raw = subs[c2 - 1] if c2 <= len(subs) else ""
                        level = 2
                else:
                    raw = v.cs.join(comps) if len(comps) > 1 else comps[0]
                    level = 0
                if not raw or raw == _NULL:
                    continue
                val = self.value(row, raw, level, ctx)
                if val is None:
                    continue
                if val is APPENDED:  # a further line of a text an earlier row began
                    if explain:
                        self.mark(s, n, ri, src.comps[0] if src.comps else 0, row, raw, level)
                    continue
                if row.merge:  # $this: the map's content goes into the resource itself (SCH-11 TQ → start, end)
                    if isinstance(val, dict) and val:
                        _merge_into(out, val)
                        if inst is not None:
                            inst.filled = True
                        if explain:
                            self.mark(s, n, ri, src.comps[0] if src.comps else 0, row, raw, level)
                    continue
                if row.target is None:
                    continue
                if _put(out, row.target, slots, ri, val):
                    if inst is not None:
                        inst.filled = True
                    if explain:
                        self.mark(s, n, ri, src.comps[0] if src.comps else 0, row, raw, level)

    def mark(self, seg: Seg, field: int, rep: int, comp: int, row: Row, raw: str, level: int) -> None:
        """Record which components reached the output (``--explain``)."""
        read = self.read
        for a in (*row.args, *row.reads):  # what a function or the condition reads besides the value (PID-3.4, OBX-2)
            if isinstance(a, Path) and a.seg == seg.name and a.field:
                read.add((seg.index, a.field, rep if a.field == field else 0, a.comps[0] if a.comps else 0))
        if comp:
            read.add((seg.index, field, rep, comp))
            return
        if row.kind == "map" and row.map is not None:
            for r in row.map.rows:
                if r.src.datatype:
                    read.add((seg.index, field, rep, r.src.comps[0]))
                for a in (*r.args, *r.reads):
                    if isinstance(a, Path) and a.datatype and a.comps:
                        read.add((seg.index, field, rep, a.comps[0]))
                for c in getattr(r.fn, "reads", ()):  # components a function reads itself (EI.2–4 for a system)
                    read.add((seg.index, field, rep, c))
        else:
            read.add((seg.index, field, rep, 0))

    def coverage(self) -> list[tuple[str, str, bool]]:
        """After ``run()`` with ``explain``: every populated component of the message as (location, value,
        reached the output). A component counts as reached when a row wrote it (or a row wrote its whole field
        repetition: a function reading the field). MSH-1/MSH-2 (the delimiters) are not data."""
        v = self.v
        read = self.read
        out: list[tuple[str, str, bool]] = []
        seen: dict[str, int] = {}
        for seg in v.segs:
            k = seen[seg.name] = seen.get(seg.name, 0) + 1
            name = seg.name if k == 1 else f"{seg.name}[{k}]"
            for n in range(1, len(seg.f)):
                if seg.name == "MSH" and n <= 2:
                    continue
                if not seg.f[n]:
                    continue
                reps = v.reps(seg, n)
                for ri, comps in enumerate(reps):
                    whole = (seg.index, n, ri, 0) in read
                    for ci, c in enumerate(comps, 1):
                        if not c or c == _NULL:
                            continue
                        loc = (
                            f"{name}-{n}"
                            + (f"({ri + 1})" if len(reps) > 1 else "")
                            + (f".{ci}" if len(comps) > 1 else "")
                        )
                        out.append((loc, v.d(c) if v.cs not in c else c, whole or (seg.index, n, ri, ci) in read))
        return out

    # ------------------------------------------------------------------ values
    def value(self, row: Row, raw: str, level: int, ctx: Ctx) -> Any:
        kind = row.kind
        if kind == "const":
            c = row.const
            return _copy(c) if isinstance(c, (dict, list)) else c  # each Bundle its own objects
        if kind == "fn":
            got = row.fn(self, ctx, row, raw, *row.args)  # type: ignore[misc]
            if type(got) is str and r4.is_primitive(row.ftype) and row.ftype not in _TEXT_TYPES:
                # a function returns FHIR text (an end instant, a system): checked like any value written
                got = " ".join(got.split()) if row.ftype == "code" else got.strip()
                problem = check_value(row.ftype, got) if got else "empty"
                if problem is not None:
                    if got:
                        self.invalid(self.where(ctx, row), problem)
                    return None
            return got
        v = self.v
        if kind == "map":
            mp = row.map
            assert mp is not None
            val = self.apply_datatype(mp, raw, level, ctx)
            if val is None:
                return None
            if mp.primitive:
                return self.primitive(row, val, ctx)
            if mp.resource:  # a resource of its own, unless the row merges its content here ($this)
                return val if row.merge else self.resource_value(mp, val)
            if row.vocab and isinstance(val, dict):
                self.vocab_coding(row, val)
            return val
        if kind in ("text", "formatted"):
            text = v.text(raw) if kind == "formatted" else v.d(raw)
            return self.primitive(row, text, ctx) if text else None
        # a primitive: the first component (subcomponent) of what the row reads
        if level == 0 and v.cs in raw:
            raw = raw.split(v.cs, 1)[0]
        if level <= 1 and v.ss and v.ss in raw:
            raw = raw.split(v.ss, 1)[0]
        if not raw or raw == _NULL:
            return None
        return self.primitive(row, v.d(raw), ctx)

    def vocab_coding(self, row: Row, cc: dict[str, Any]) -> None:
        """A CodeableConcept/Coding the row's vocabulary knows: the sender's coding first, the mapped one added
        after it (a Coding, which holds one, becomes the mapped one)."""
        codings = cc.get("coding") if "coding" in cc else None
        first = codings[0] if codings else (cc if "code" in cc else None)
        if first is None:
            return
        hit = self.tables.code_map(row.vocab).get(first.get("code"))
        if hit is None:
            return
        code, system, display = hit
        mapped = {k: x for k, x in (("system", system), ("code", code), ("display", display)) if x}
        if codings is not None:
            if not any(c.get("system") == mapped.get("system") and c.get("code") == code for c in codings):
                codings.insert(1, mapped)
        else:
            cc.clear()
            cc.update(mapped)

    def primitive(self, row: Row, text: str, ctx: Ctx) -> Any:
        ftype = row.ftype
        vocab = row.vocab
        if ftype not in _TEXT_TYPES:  # senders pad fields ("DONOR "): a code, date or id carries no outer spaces
            text = " ".join(text.split()) if ftype == "code" else text.strip()
            if not text:
                return None
        if ftype in ("Coding", "CodeableConcept"):  # a bare code (ID/IS) → a coding: mapped, else its HL7 table's
            hit = self.tables.code_map(vocab).get(text) if vocab else None
            sent = (
                {"system": f"http://terminology.hl7.org/CodeSystem/v2-{row.table}", "code": text} if row.table else None
            )
            if hit is not None:
                code, system, display = hit
                coding = {k: x for k, x in (("system", system), ("code", code), ("display", display)) if x}
            elif sent is not None:
                coding, sent = sent, None
            else:
                return None
            if ftype == "Coding":
                return coding
            # the sender's code first, the mapped coding after it (README: nothing the sender said is lost)
            same = sent is None or (sent["system"] == coding.get("system") and sent["code"] == coding.get("code"))
            return {"coding": [coding] if same else [sent, coding]}
        if vocab:
            hit = self.tables.code_map(vocab).get(text)
            if hit is not None:
                text = hit[0]
            elif ftype == "boolean":
                text = text.lower()
            if row.binding is not None and text not in row.binding:
                if ctx.seg is not None and row.src.seg == ctx.seg.name:
                    self.invalid(
                        self.where(ctx, row),
                        f"code not in the FHIR value set of {row.target.text if row.target else ''}",
                    )
                return None
        elif row.binding is not None and text not in row.binding:
            self.invalid(
                self.where(ctx, row), f"code not in the FHIR value set of {row.target.text if row.target else ''}"
            )
            return None
        conv = _CONVERT.get(ftype)
        if conv is None:
            val: Any = text
        else:
            val = conv(self, text)
            if val is None:
                self.invalid(self.where(ctx, row), f"not a valid {ftype}")
                return None
        problem = check_value(ftype, val)
        if problem is not None:
            self.invalid(self.where(ctx, row), problem)
            return None
        return val

    def apply_datatype(self, mp: DatatypeMap, raw: str, level: int, ctx: Ctx) -> Any:
        """A data type map applied to one value. The result of a pure map (codes, practitioners, places, most
        identifiers) is kept per text and handed out as a copy: the same practitioner in every message of the day
        is made once (unless making it left a warning: then every message gets its warning)."""
        if not mp.pure or self.explain:
            return self._apply_datatype(mp, raw, level, ctx)
        cache = self.dt_cache
        key = (mp.name, level, raw)
        hit = cache.get(key, _MISS)
        if hit is not _MISS:
            return _copy(hit)
        warned = len(self.warnings)
        val = self._apply_datatype(mp, raw, level, ctx)
        if len(self.warnings) == warned:
            if len(cache) >= _DT_CACHE_SIZE:
                cache.clear()
            cache[key] = val  # kept pristine: every caller, this one too, gets a copy
            return _copy(val)
        return val

    def _apply_datatype(self, mp: DatatypeMap, raw: str, level: int, ctx: Ctx) -> Any:
        v = self.v
        sep = v.cs if level == 0 else (v.ss if level == 1 else "")
        parts = raw.split(sep) if sep and sep in raw else [raw]
        saved = ctx.dt, ctx.parts
        ctx.dt, ctx.parts = mp.datatype, parts
        try:
            if mp.primitive:  # the text of the first row that has one; the outer row converts it
                for r in mp.rows:
                    c = r.src.comps[0]
                    p = parts[c - 1] if c <= len(parts) else ""
                    if v.ss and level == 0 and v.ss in p:
                        p = p.split(v.ss, 1)[0]
                    if not p or p == _NULL:
                        continue
                    if r.cond is not None and not r.cond(ctx):
                        continue
                    text = v.text(p) if r.kind == "formatted" else v.d(p)
                    if text:
                        return text
                return None
            out: dict[str, Any] = {}
            slots: dict[Any, Any] = {}
            for r in mp.rows:
                c = r.src.comps[0]
                p = parts[c - 1] if c <= len(parts) else ""
                if len(r.src.comps) > 1 and p:
                    subs = p.split(v.ss) if v.ss else [p]
                    c2 = r.src.comps[1]
                    p = subs[c2 - 1] if c2 <= len(subs) else ""
                    lvl = level + 2
                else:
                    lvl = level + 1
                if not p or p == _NULL:
                    continue
                if r.cond is not None and not r.cond(ctx):
                    continue
                val = self.value(r, p, lvl, ctx)
                if val is None:
                    continue
                if r.merge:
                    if isinstance(val, dict):
                        _merge_into(out, val)
                    continue
                if r.target is not None:
                    _put(out, r.target, slots, 0, val)
            return out or None
        finally:
            ctx.dt, ctx.parts = saved

    def resource_value(self, mp: DatatypeMap, body: dict[str, Any]) -> dict[str, Any] | None:
        """A data type map that makes a resource (XCN → Practitioner): the resource becomes an entry of its own
        (one per business identifier) and the row's target gets a Reference to it."""
        rule = self.defs.resources.get(mp.type)
        res = {"resourceType": mp.type, **body}
        display = _display(res, rule.display if rule else "")
        ident = _key_of(res, rule.key_type if rule else "")
        if ident is None and (rule is None or rule.without_key == "display"):
            return {"display": display} if display else None
        inst = self.new_instance(mp.type, "")
        inst.res = res
        inst.filled = True
        inst.display = display
        return self.reference(inst)

    def key_of_instance(self, inst: Inst) -> dict[str, Any] | None:
        rule = self.defs.resources.get(inst.type)
        return _key_of(inst.res, rule.key_type if rule else "")

    def key_text(self, inst: Inst) -> str:
        rule = self.defs.resources.get(inst.type)
        k = _key_of(inst.res, rule.key_type if rule else "")
        return f"{k.get('system', '')}|{k.get('value', '')}" if k else ""

    # ------------------------------------------------------------------ extensions.yaml
    def apply_extensions(self) -> None:
        rules = self.tables.extensions
        if not rules:
            return
        msg = self.msg
        for rule in rules:
            seg_name = _path_segment(rule.source)
            if seg_name is not None and self.v.seg(seg_name) is None:
                continue
            target = next((i for i in self.insts if i.type == rule.resource and i.filled), None)
            if target is None:
                continue
            try:
                values = msg.get_all(rule.source) if rule.repeat else [x for x in [msg.get(rule.source)] if x]
            except Exception:
                continue
            for raw in values:
                ext = self._ext_value(rule.type, str(raw))
                if ext is not None:
                    target.res.setdefault("extension", []).append({"url": rule.url, **ext})
                    if self.explain and seg_name is not None:
                        p = parse_path(rule.source)
                        for s in self.v.all(seg_name):
                            self.read.add((s.index, p.field or 0, 0, 0))

    def _ext_value(self, typ: str, raw: str) -> dict[str, Any] | None:
        if raw in ("", _NULL):
            return None
        if typ == "CodeableConcept":
            comps = raw.split(self.v.cs)
            code, display, system = (comps + ["", "", ""])[:3]
            coding = {
                k: x for k, x in (("system", self.tables.system_uri(system)), ("code", code), ("display", display)) if x
            }
            return {"valueCodeableConcept": {"coding": [coding]}} if coding else None
        if typ == "boolean":
            b = self.tables.code_map("yes_no").code(raw)
            return {"valueBoolean": b == "true"} if b in ("true", "false") else None
        conv = _CONVERT.get(typ)
        val: Any = conv(self, raw) if conv else raw
        if val is None or check_value(typ, val) is not None:
            return None
        key = "value" + typ[:1].upper() + typ[1:]
        return {key: val}

    # ------------------------------------------------------------------ the Bundle
    def build(self) -> dict[str, Any]:
        defs = self.defs
        patient_mode = self.cfg.patient
        if patient_mode == "auto":
            patient_mode = "update" if self.mtype in ("ADT", "SIU", "BAR") else "fill"
        seen: dict[tuple[str, str, str], Inst] = {}
        order: list[tuple[Inst, dict[str, Any] | None, str]] = []
        for inst in self.insts:
            if not inst.filled:
                inst.dropped = True
                continue
            if inst.texts:
                for tgt, lines in inst.texts.items():
                    _finish_text(inst.res, tgt, lines)
            rule = defs.resources.get(inst.type)
            if rule is not None:
                for default_tgt, val in rule.defaults:
                    _put_default(inst.res, default_tgt, _copy(val))
            key = _key_of(inst.res, rule.key_type if rule else "")
            if key is None and rule is not None and rule.without_key == "derive":
                key = {
                    "system": self.tables.derived_system(inst.type),
                    "value": _h(self.patient_key, _content_hash(inst.res)),
                }
                inst.res.setdefault("identifier", []).append(key)
            if key is not None:
                k = (inst.type, key.get("system", ""), key.get("value", ""))
                first = seen.get(k)
                if first is not None:
                    inst.same = first
                    inst.dropped = True
                    continue
                seen[k] = inst
            mode = rule.mode if rule else "update"
            if inst.type == "Patient":
                mode = patient_mode
            if inst.entry:
                mode = inst.entry
            order.append((inst, key, mode))
            if not inst.display:
                inst.display = _display(inst.res, rule.display if rule else "")
        b = BundleBuilder(
            self.cfg.bundle, f"{self.v.val(self.v.segs[0], 3)}|{self.v.val(self.v.segs[0], 4)}|{self.control_id}"
        )
        made: dict[int, dict[str, Any]] = {}
        for inst, key, mode in order:
            made[id(inst)] = b.add(inst.res, key, mode=mode)
        for ref, target in self.refs:
            while target.same is not None:
                target = target.same
            got = made.get(id(target))
            ref.clear()
            if got is not None:
                ref.update(got)
                if target.display and "reference" in ref:
                    ref["display"] = target.display
            elif target.display:
                ref["display"] = target.display
        for inst, _, _ in order:
            res = inst.res
            reversed_periods: list[str] = []
            _prune(res, r4.TypeRef(inst.type), reversed_periods)
            for name in reversed_periods:
                self.invalid(f"{inst.type}.{name}", "the period ends before it starts (per-1): its end")
            missing = _missing_required(res)
            if missing:  # (an order cancelled by an ORC alone: no PID, so no patient to name)
                raise MappingError(
                    f"{inst.type}.{missing} is required and the message does not give it "
                    f"(no segment the maps take it from{', no PID' if self.v.seg('PID') is None else ''})",
                    location="PID" if self.v.seg("PID") is None else self.structure,
                    code="101",
                )
            if "dataAbsentReason" in res and any(k.startswith("value") for k in res):
                del res["dataAbsentReason"]  # obs-6: a value the sender gave wins over its absence
            for issue in resource_invariants(res):  # rules across elements (app-3: a booked appointment has a start)
                if issue.severity == "error":
                    raise MappingError(f"{inst.type}: {issue.message}", location=self.structure, code="101")
        if self.explain:  # the Bundle's identifier (MSH-3, MSH-10) and timestamp (MSH-7); MSH-9 chose the map
            self.read.update((0, n, 0, 0) for n in (3, 7, 9, 10))
        meta: dict[str, Any] = {}
        if self.control_id:
            meta["identifier"] = {
                "system": f"urn:hub:message:{_uri_part(self.v.val(self.v.segs[0], 3) or 'unknown')}",
                "value": self.control_id,
            }
        ts = dtm(self.v.val(self.v.segs[0], 7), self.cfg.timezone, instant=True)
        if ts and check_value("instant", ts) is None:
            meta["timestamp"] = ts
        return b.build(meta)


def _uri_part(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="-._~")


# ============================================================================================ writing
def _put(root: dict[str, Any], target: Target, slots: dict[Any, Any], rep: int, value: Any) -> bool:
    """Write ``value`` at ``target`` under ``root``; False when nothing was written (a single element that
    already has a value keeps it: the first row that fills an element wins)."""
    obj = root
    steps = target.steps
    last = len(steps) - 1
    for i, st in enumerate(steps):
        name = st.name
        if i == last:
            if st.many:
                lst = obj.get(name)
                if st.slot is not None and isinstance(value, dict):
                    key = (target.keys[i], rep)
                    item = slots.get(key)
                    if item is None:  # the value itself becomes the item: a Reference stays the one build() fills
                        slots[key] = value
                        if lst is None:
                            lst = obj[name] = []
                        lst.append(value)
                        return True
                    for k, x in value.items():
                        if k not in item:
                            item[k] = x
                    return True
                if lst is None:
                    lst = obj[name] = []
                if isinstance(value, list):
                    lst.extend(value)
                else:
                    lst.append(value)
                return True
            if name in obj:
                cur = obj[name]
                if isinstance(cur, dict) and isinstance(value, dict):
                    added = False
                    for k, x in value.items():
                        if k not in cur:
                            cur[k] = x
                            added = True
                    return added
                return False
            if _choice_taken(obj, name, st):
                return False
            obj[name] = value
            return True
        if st.many:
            lst = obj.get(name)
            if lst is None:
                lst = obj[name] = []
            if st.slot is not None:
                key = (target.keys[i], rep)
                item = slots.get(key)
                if item is None:
                    item = {}
                    slots[key] = item
                    lst.append(item)
            elif lst:
                item = lst[0]
            else:
                item = {}
                lst.append(item)
            obj = item
        else:
            item = obj.get(name)
            if item is None:
                if _choice_taken(obj, name, st):
                    return False
                item = obj[name] = {}
            obj = item
    return False


_CHOICE_BASES = (
    "value",
    "deceased",
    "multipleBirth",
    "effective",
    "onset",
    "abatement",
    "occurrence",
    "medication",
    "timing",
    "bounds",
    "dose",
    "rate",
    "asNeeded",
    "performed",
    "serviced",
    "location",
    "born",
    "age",
    "product",
    "reported",
    "allowed",
    "used",
    "collected",
    "fastingStatus",
    "time",
    "item",
)


def _choice_taken(obj: dict[str, Any], name: str, st: Any) -> bool:
    """A choice element (value[x] …) already has another type: only one may be written."""
    if st.type and name.endswith(st.type[:1].upper() + st.type[1:]):
        base = name[: len(name) - len(st.type)]
        if base in _CHOICE_BASES:
            for k in obj:
                if k != name and k.startswith(base) and len(k) > len(base) and k[len(base)].isupper():
                    return True
    return False


def _merge_into(out: dict[str, Any], val: dict[str, Any]) -> None:
    """A part made by a map of the same type (SAD inside XAD): lists are extended, other elements kept if set."""
    for k, x in val.items():
        cur = out.get(k)
        if cur is None:
            out[k] = x
        elif isinstance(cur, list):
            cur.extend(x if isinstance(x, list) else [x])


def _put_default(res: dict[str, Any], target: Target, value: Any) -> None:
    obj = res
    for st in target.steps[:-1]:
        nxt = obj.get(st.name)
        if nxt is None:
            nxt = {}
            obj[st.name] = [nxt] if st.many else nxt
        elif isinstance(nxt, list):
            nxt = nxt[0]
        obj = nxt
    last = target.steps[-1]
    if last.name in obj or _choice_taken(obj, last.name, last):
        return
    obj[last.name] = [value] if last.many and not isinstance(value, list) else value


def _finish_text(res: dict[str, Any], tgt: tuple[str, ...], lines: list[str]) -> None:
    obj = res
    *path, last = tgt
    for name in path:
        nxt = obj.get(name)
        if isinstance(nxt, list):
            nxt = nxt[0] if nxt else None
        if nxt is None:
            return
        obj = nxt
    text = "\n".join(lines)
    if last == "data":
        obj[last] = base64.b64encode(text.encode("utf-8")).decode("ascii")
    else:
        obj[last] = text


def _prune(node: dict[str, Any], ref: r4.TypeRef | None, reversed_periods: list[str]) -> bool:
    """Remove empty strings, objects and lists (FHIR's ele-1), references that point nowhere and list items that
    miss a required child (an Encounter.diagnosis whose Condition was not made); True when ``node`` is empty."""
    for k in list(node):
        x = node[k]
        t = type(x)
        if t is str:
            if not x:
                del node[k]
            continue
        if t is list:
            if k[:1] == "_":  # a repeating primitive's extensions (_line): items stay at their line's position
                shadow = [
                    None
                    if type(i) is not dict or _prune(i, _ELEMENT, reversed_periods) or _misses_required(i, _ELEMENT)
                    else i
                    for i in x
                ]
                base = node.get(k[1:])
                if type(base) is not list or not any(i is not None for i in shadow[: len(base)]):
                    del node[k]
                else:
                    node[k] = (shadow + [None] * len(base))[: len(base)]
                continue
            child = r4.child(ref, k) if ref is not None else None
            kid_ref = child.children if child is not None else (_ELEMENT if k[:1] == "_" else None)
            check = kid_ref is not None and _checks_required(kid_ref)
            keep = []
            for item in x:
                if type(item) is dict:
                    if _prune(item, kid_ref, reversed_periods) or (check and _misses_required(item, kid_ref)):  # type: ignore[arg-type]
                        continue
                elif item is None or item == "":
                    continue
                keep.append(item)
            if not keep:
                del node[k]
            elif len(keep) != len(x):
                node[k] = keep
        elif t is dict:
            child = r4.child(ref, k) if ref is not None else None
            kid_ref = child.children if child is not None else (_ELEMENT if k[:1] == "_" else None)
            if _prune(x, kid_ref, reversed_periods) or (
                child is not None
                and child.type == "BackboneElement"
                and kid_ref is not None  # (always: a BackboneElement lists its children)
                and _misses_required(x, kid_ref)
            ):
                del node[k]
            elif kid_ref is _PERIOD and "start" in x and "end" in x and period_reversed(x):
                reversed_periods.append(
                    k
                )  # per-1: the sender's end is before its start (build() says so, keeps the start)
                del x["end"]
        elif x is None:
            del node[k]
    return not node


_REQ_TOP: dict[str, tuple[str, ...]] = {}


def _missing_required(res: dict[str, Any]) -> str | None:
    """The first required element ``res`` lacks after the defaults of resources.csv (ServiceRequest.subject,
    Appointment.participant …): what only the message could have said."""
    rtype = res["resourceType"]
    names = _REQ_TOP.get(rtype)
    if names is None:
        names = _REQ_TOP[rtype] = tuple(r4.required_children(r4.TypeRef(rtype)))
    for n in names:
        if n.endswith("[x]"):
            base = n[:-3]
            if not any(k.startswith(base) and len(k) > len(base) and k[len(base)].isupper() for k in res):
                return n
        elif n not in res:
            return n
    return None


def _checks_required(ref: r4.TypeRef) -> bool:
    """Whether a list item of this type can miss something required (a backbone element, an extension)."""
    got = _CHECKS.get(ref)
    if got is None:
        got = _CHECKS[ref] = bool(ref.prefix) or ref.root == "Extension"
    return got


_CHECKS: dict[r4.TypeRef, bool] = {}
_PERIOD = r4.TypeRef("Period")
_REQ_CACHE: dict[r4.TypeRef, tuple[str, ...]] = {}
_ELEMENT = r4.TypeRef("Element")
_MISS = object()
_DT_CACHE_SIZE = 20_000  # results of pure data type maps kept per table set (cleared when full)


def _copy(x: Any) -> Any:
    """A deep copy of JSON-like data (lists, dicts, scalars) — faster than copy.deepcopy for this shape."""
    if isinstance(x, dict):
        return {k: (_copy(v) if isinstance(v, (dict, list)) else v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) if isinstance(v, (dict, list)) else v for v in x]
    return x


_TEXT_TYPES = frozenset(
    ("string", "markdown", "base64Binary", "xhtml")
)  # what a primitive's ``_name`` holds: id and extensions


def _misses_required(item: dict[str, Any], ref: r4.TypeRef) -> bool:
    if ref.root == "Extension" and not ref.prefix:  # ext-1: a value or extensions (a url alone says nothing)
        if "extension" not in item and not any(k.startswith("value") for k in item):
            return True
    req = _REQ_CACHE.get(ref)
    if req is None:
        if ref.prefix or ref.root in ("Extension",):
            req = tuple(r4.required_children(ref))
        else:
            req = ()  # data types: their own invariants are left to fhir_validate
        _REQ_CACHE[ref] = req
    for name in req:
        if name.endswith("[x]"):
            base = name[:-3]
            if not any(k.startswith(base) and len(k) > len(base) and k[len(base)].isupper() for k in item):
                if ref.root == "Extension" and "extension" in item:
                    continue
                return True
        elif name not in item:
            return True
    return False


def _key_of(res: dict[str, Any], key_type: str) -> dict[str, Any] | None:
    raw = res.get("identifier")
    if not raw:
        return None
    idents: list[dict[str, Any]] = [raw] if isinstance(raw, dict) else raw
    if key_type:
        for x in idents:
            typ = x.get("type") or {}
            for c in typ.get("coding") or ():
                if c.get("code") == key_type:
                    return x if x.get("value") else None
    for x in idents:
        if x.get("value"):
            return x
    return None


def _display(res: dict[str, Any], element: str) -> str:
    if not element:
        return ""
    v = res.get(element)
    if isinstance(v, list):
        v = v[0] if v else None
    if isinstance(v, dict):  # a HumanName
        if v.get("text"):
            return str(v["text"])
        return " ".join([*v.get("given", []), v.get("family", "")]).strip()
    return str(v) if v else ""


def _content_hash(res: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(res, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


# ============================================================================================ primitive types
def _date(run: Conversion, text: str) -> str | None:
    return date_of(text)


def _datetime(run: Conversion, text: str) -> str | None:
    return dtm(text, run.cfg.timezone)


def _instant(run: Conversion, text: str) -> str | None:
    return dtm(text, run.cfg.timezone, instant=True)


def _time(run: Conversion, text: str) -> str | None:
    t = text.strip()
    if len(t) >= 4 and t[:4].isdigit() and t[:4].isascii():
        sec = t[4:6] if len(t) >= 6 and t[4:6].isdigit() else "00"
        return f"{t[:2]}:{t[2:4]}:{sec}"
    if len(t) == 2 and t.isdigit() and t.isascii():
        return f"{t}:00:00"
    return None


def _decimal(run: Conversion, text: str) -> int | float | None:
    return number(text)  # a plain number: no exponent, no NaN or infinity (FHIR's decimal)


def _integer(run: Conversion, text: str) -> int | None:
    t = text.strip()
    if t.lstrip("+-").isdigit() and t.isascii():
        return int(t)
    return None


def _boolean(run: Conversion, text: str) -> bool | None:
    t = text.strip()
    hit = run.tables.code_map("yes_no").code(t)
    if hit in ("true", "false"):
        return hit == "true"
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    return None


def _identity(run: Conversion, text: str) -> str | None:
    return text


_CONVERT: dict[str, Callable[[Conversion, str], Any]] = {
    "date": _date,
    "dateTime": _datetime,
    "instant": _instant,
    "time": _time,
    "decimal": _decimal,
    "integer": _integer,
    "positiveInt": _integer,
    "unsignedInt": _integer,
    "boolean": _boolean,
}

_segment_of: dict[str, str | None] = {}


def _path_segment(path: str) -> str | None:
    try:
        return _segment_of[path]
    except KeyError:
        pass
    try:
        name: str | None = parse_path(path).segment
    except Exception:
        name = None
    if len(_segment_of) < 1000:
        _segment_of[path] = name
    return name


# ============================================================================================ entry points
def convert(
    msg: Hl7Message | bytes | str, tables: Tables | None = None, config: V2ToFhir.Config | None = None
) -> dict[str, Any]:
    """One v2 message → a FHIR Bundle (a dict). Raises MappingError for what cannot be mapped."""
    if not isinstance(msg, Hl7Message):
        msg = parse_v2(msg)
    return Conversion(
        msg, tables or load_tables(None), config or V2ToFhir.Config.model_validate({"type": "v2_to_fhir"})
    ).run()


def explain(
    msg: Hl7Message | bytes | str, tables: Tables | None = None, config: V2ToFhir.Config | None = None
) -> tuple[dict[str, Any], list[tuple[str, str, bool]], list[str]]:
    """``hub convert --explain``: the Bundle, every populated component with whether it reached the output
    (:meth:`Conversion.coverage`), and the warnings (values left out as invalid)."""
    if not isinstance(msg, Hl7Message):
        msg = parse_v2(msg)
    conv = Conversion(
        msg, tables or load_tables(None), config or V2ToFhir.Config.model_validate({"type": "v2_to_fhir"}), explain=True
    )
    bundle = conv.run()
    return bundle, conv.coverage(), list(conv.warnings)


class V2ToFhir:
    class Config(TransformConfig):
        """HL7 v2 → a FHIR R4 Bundle by the tables in mappings/fhir: ``{type: v2_to_fhir, bundle: transaction}``."""

        type: Literal["v2_to_fhir"] = "v2_to_fhir"
        bundle: Literal["transaction", "batch", "collection"] = Field(
            "transaction",
            description="Bundle type. transaction: all-or-nothing with conditional create/update and references "
            "between entries; batch: independent entries (references by identifier); collection: just the resources.",
        )
        patient: Literal["auto", "update", "fill", "create"] = Field(
            "auto",
            description="How the Patient entry is written: update = conditional PUT on the MRN (the fhir_rest "
            "destination merges it into what the server holds: what the message carries wins, nothing else is "
            "removed); fill = create when absent, else only add what the server lacks; create = create when absent, "
            "never touch an existing one; auto = update for ADT/SIU/BAR, fill otherwise (a lab's copy of the "
            "demographics never overrides the PM's).",
        )
        timezone: str = Field(
            "Z",
            pattern=r"^(Z|[+-]\d\d:\d\d)$",
            description="Offset given to v2 times that have none (FHIR times need one).",
            examples=["Z", "-06:00"],
        )
        mappings: str = Field(
            "fhir",
            description="Folder of the tables (structures, messages, segments, datatypes, codes …), "
            "relative to the mappings folder.",
        )
        invalid: Literal["warn", "reject"] = Field(
            "warn",
            description="A value that is not valid FHIR (a date like 20220229, an hour 26, a code outside its value "
            "set): warn = leave it out and record a warning on the message (hub show lists it); reject = refuse the "
            "message with the value's location (AR/AE, 422).",
        )

    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config
        folder = ctx.mappings_dir / config.mappings if ctx is not None else None
        self.tables = load_tables(folder)
        self.tables.defs()  # problems in the tables are configuration errors (hub check)

    def __call__(self, message: Message) -> Message:
        if message.content_type != "hl7v2":
            raise MappingError(f"v2_to_fhir needs an HL7 v2 message, got {message.content_type}")
        msg = message.parsed if isinstance(message.parsed, Hl7Message) else None
        if msg is None:
            msg = parse_v2(message.raw)
        conv = Conversion(msg, self.tables, self.config)
        bundle = conv.run()
        out = message.replace(dumps(bundle), "fhir")
        out.parsed = FhirDocument(bundle, out.raw)
        if conv.warnings:
            out.meta["warnings"] = [*out.meta.get("warnings", []), *(f"v2_to_fhir: {w}" for w in conv.warnings)]
        return out
