"""The analyst-editable tables behind HL7 v2 ⇄ FHIR, read from ``mappings/fhir/`` (no Python needed to change them).

::

    mappings/fhir/
      systems.yaml        coding systems (CWE-3 name ⇄ URI), identifier systems per assigning authority
      extensions.yaml     rules: a v2 path (a Z-segment, a site-specific field) ⇄ an extension on a resource
      codes/<name>.csv    code maps, one per vocabulary: v2_code,fhir_code,fhir_system,fhir_display[,v2_display]

A code map is read both ways: v2 → FHIR takes the row of the v2 code; FHIR → v2 takes the *first* row whose
fhir_code matches (so the order of rows decides the reverse). The tables shipped with the hub were generated from
the concept maps of the HL7 v2-to-FHIR Implementation Guide; the README lists them.

Tables are read when a transform is built (``hub check`` reports problems) and cached per folder and mtime, so a
channel's transforms share them and an edited file is picked up by the next build.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload
from urllib.parse import quote, unquote

import yaml

from hub.errors import ConfigError

from .values import is_oid, is_uri, is_uuid, name_of_system_uri, system_uri_of

__all__ = ["Tables", "CodeMap", "ExtensionRule", "load_tables"]


_HL7_TABLE = "http://terminology.hl7.org/CodeSystem/v2-"
_UNKNOWN_CS = "urn:hub:code-system:"


@dataclass
class CodeMap:
    name: str
    forward: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # v2 code → (code, system, display)
    reverse: dict[str, str] = field(default_factory=dict)  # fhir code → v2 code (first row wins)
    v2_display: dict[str, str] = field(default_factory=dict)

    def get(self, v2_code: str | None) -> tuple[str, str, str] | None:
        if not v2_code:
            return None
        hit = self.forward.get(v2_code)
        if hit is None:
            hit = self.forward.get(v2_code.upper()) or self.forward.get(v2_code.lower())
        return hit

    @overload
    def code(self, v2_code: str | None, default: str) -> str: ...
    @overload
    def code(self, v2_code: str | None, default: None = None) -> str | None: ...
    def code(self, v2_code: str | None, default: str | None = None) -> str | None:
        hit = self.get(v2_code)
        return hit[0] if hit else default

    @overload
    def back(self, fhir_code: str | None, default: str) -> str: ...
    @overload
    def back(self, fhir_code: str | None, default: None = None) -> str | None: ...
    def back(self, fhir_code: str | None, default: str | None = None) -> str | None:
        if not fhir_code:
            return default
        return self.reverse.get(fhir_code, default)


@dataclass
class ExtensionRule:
    source: str
    resource: str
    url: str
    type: str = "string"
    repeat: bool = False


_TYPES = {"string", "code", "boolean", "integer", "decimal", "date", "dateTime", "CodeableConcept"}


@dataclass
class Tables:
    folder: Path
    codes: dict[str, CodeMap] = field(default_factory=dict)
    coding_systems: dict[str, str] = field(default_factory=dict)  # name → URI
    coding_names: dict[str, str] = field(default_factory=dict)  # URI → name (first wins)
    identifier_systems: dict[str, str] = field(default_factory=dict)
    authorities: dict[str, str] = field(default_factory=dict)  # URI → "AUTHORITY" (or AUTHORITY^TYPE key)
    identifier_system_default: str = "urn:hub:id:{authority}"
    derived_identifier_system: str = "urn:hub:derived:{resource}"
    location_system: str = "urn:hub:location"
    extensions: list[ExtensionRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cs_cache: dict[str, str] = {}
        self._id_cache: dict[tuple[str, str, str, str], str] = {}
        self._derived_cache: dict[str, str] = {}
        # v2_to_fhir's results of pure data type maps, per (decoding, timezone): they depend on these tables
        self.dt_caches: dict[tuple[str, str], dict[tuple[str, int, str], Any]] = {}
        self._translations: set[tuple[str, str, str]] | None = None
        self._defs: Any = None

    def defs(self) -> Any:
        """The compiled message, segment and data type tables (:mod:`.mapdefs`), loaded at first use."""
        if self._defs is None:
            from .mapdefs import load_defs

            self._defs = load_defs(self.folder)
        return self._defs

    def code_map(self, name: str) -> CodeMap:
        m = self.codes.get(name)
        if m is None:
            m = self.codes[name] = CodeMap(name)
        return m

    def is_translation(self, v2_code: str | None, coding: dict[str, Any]) -> bool:
        """Whether ``coding`` is what a code map under codes/ makes of ``v2_code`` (the FHIR code v2_to_fhir adds
        after the sender's coding): fhir_to_v2 writes the sender's code back, not the translation as an alternate."""
        pairs = self._translations
        if pairs is None:
            pairs = self._translations = {
                (v2.upper(), hit[0], hit[1]) for m in self.codes.values() for v2, hit in m.forward.items()
            }
        return (str(v2_code or "").upper(), coding.get("code"), coding.get("system", "")) in pairs

    def system_uri(self, name: str) -> str:
        """CWE-3 name → Coding.system ('' for none)."""
        if not name:
            return ""
        hit = self._cs_cache.get(name)
        if hit is not None:
            return hit
        uri = self.coding_systems.get(name)
        if uri is None:
            if name.startswith("HL7") and name[3:].isdigit():
                uri = _HL7_TABLE + name[3:]
            else:  # an OID, a UUID, a URI as it is; any other name percent-encoded (never a space in a system)
                uri = system_uri_of(name, _UNKNOWN_CS)
        if len(self._cs_cache) < 10000:
            self._cs_cache[name] = uri
        return uri

    def system_name(self, uri: str | None) -> str:
        """Coding.system → CWE-3 name ('' for none)."""
        if not uri:
            return ""
        name = self.coding_names.get(uri)
        if name is not None:
            return name
        if uri.startswith(_HL7_TABLE) and uri[len(_HL7_TABLE) :].isdigit():
            return "HL7" + uri[len(_HL7_TABLE) :]
        if uri.startswith((_UNKNOWN_CS, "urn:oid:")):
            return name_of_system_uri(uri, _UNKNOWN_CS)
        return uri

    # ------------------------------------------------------------------ identifier systems
    def identifier_system(
        self, authority: str, type_code: str = "", universal_id: str = "", universal_type: str = ""
    ) -> str:
        key = (authority, type_code, universal_id, universal_type)
        hit = self._id_cache.get(key)
        if hit is not None:
            return hit
        uri = None
        if authority:
            if type_code:
                uri = self.identifier_systems.get(f"{authority}^{type_code}")
            if uri is None:
                uri = self.identifier_systems.get(authority)
        if uri is None and universal_id:  # only what really is an OID, a UUID or a URI (senders mislabel them)
            ut = universal_type.upper()
            if ut == "ISO" and is_oid(f"urn:oid:{universal_id}"):
                uri = f"urn:oid:{universal_id}"
            elif ut == "UUID" and is_uuid(f"urn:uuid:{universal_id.lower()}"):
                uri = f"urn:uuid:{universal_id.lower()}"
            elif ut in ("URI", "URL") and ":" in universal_id and is_uri(universal_id):
                uri = universal_id
        if uri is None:
            uri = self._default_system(authority or universal_id or "local", type_code)
        if len(self._id_cache) < 10000:
            self._id_cache[key] = uri
        return uri

    def _default_system(self, authority: str, type_code: str) -> str:
        """``identifier_system_default`` for an authority systems.yaml does not list: the name percent-encoded (an
        OID becomes ``urn:oid:``), so a system is always a valid URI (``NIST MPI`` → ``urn:hub:id:NIST%20MPI``)."""
        template = self.identifier_system_default.replace("{type}", quote(type_code or "", safe=""))
        prefix, _, suffix = template.partition("{authority}")
        if not suffix:
            return system_uri_of(authority, prefix)
        return prefix + quote(authority, safe="") + suffix

    def authority_of(self, system: str | None) -> tuple[str, str]:
        """Identifier.system → (assigning authority, the type code the system was keyed with, or '')."""
        if not system:
            return "", ""
        hit = self.authorities.get(system)
        if hit is not None:
            auth, _, typ = hit.partition("^")
            return auth, typ
        prefix, _, suffix = self.identifier_system_default.partition("{authority}")
        if prefix and system.startswith(prefix) and (not suffix or system.endswith(suffix)):
            if not suffix:
                return name_of_system_uri(system, prefix), ""
            return unquote(system[len(prefix) : len(system) - len(suffix)]), ""
        if system.startswith("urn:oid:"):
            return system[8:], ""
        return system, ""

    def derived_system(self, resource: str) -> str:
        hit = self._derived_cache.get(resource)
        if hit is None:
            hit = self.derived_identifier_system.replace("{resource}", resource)
            if len(self._derived_cache) < 1000:
                self._derived_cache[resource] = hit
        return hit


def _read_codes(path: Path) -> CodeMap:
    m = CodeMap(path.stem)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return m
        cols = [h.strip().lower() for h in header]
        need = ("v2_code", "fhir_code")
        if not all(n in cols for n in need):
            raise ConfigError(f"{path}: a code map needs the columns v2_code,fhir_code[,fhir_system,fhir_display]")
        iv, ic = cols.index("v2_code"), cols.index("fhir_code")
        isys = cols.index("fhir_system") if "fhir_system" in cols else None
        idisp = cols.index("fhir_display") if "fhir_display" in cols else None
        iv2d = cols.index("v2_display") if "v2_display" in cols else None
        for row in reader:
            if not row or row[0].startswith("#"):
                continue
            row = row + [""] * (len(cols) - len(row))
            v2, code = row[iv].strip(), row[ic].strip()
            if not v2 or not code:
                continue
            system = row[isys].strip() if isys is not None else ""
            display = row[idisp].strip() if idisp is not None else ""
            m.forward.setdefault(v2, (code, system, display))
            m.reverse.setdefault(code, v2)
            if iv2d is not None and row[iv2d].strip():
                m.v2_display.setdefault(v2, row[iv2d].strip())
    return m


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


def _stamp(folder: Path) -> tuple[Any, ...]:
    out: list[Any] = []
    for p in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if p.suffix in (".csv", ".yaml", ".yml"):
            try:
                out.append((str(p), p.stat().st_mtime_ns))
            except OSError:
                pass
    return tuple(out)


_cache: dict[str, tuple[tuple[Any, ...], Tables]] = {}


def load_tables(folder: str | os.PathLike[str] | None) -> Tables:
    """The tables of ``folder`` (``mappings/fhir``); a missing folder gives the built-in defaults (HL7 tables only)."""
    if folder is None:
        folder = Path(__file__).resolve().parents[3] / "mappings" / "fhir"
    folder = Path(folder)
    stamp = _stamp(folder)
    key = str(folder.resolve()) if folder.exists() else str(folder)
    hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    t = Tables(folder)
    codes_dir = folder / "codes"
    if codes_dir.is_dir():
        for p in sorted(codes_dir.glob("*.csv")):
            t.codes[p.stem] = _read_codes(p)
    systems = folder / "systems.yaml"
    if systems.is_file():
        data = _read_yaml(systems)
        if not isinstance(data, dict):
            raise ConfigError(f"{systems}: expected a mapping with coding_systems and identifier_systems")
        for name, uri in (data.get("coding_systems") or {}).items():
            t.coding_systems[str(name)] = str(uri)
            t.coding_names.setdefault(str(uri), str(name))
        for name, uri in (data.get("identifier_systems") or {}).items():
            t.identifier_systems[str(name)] = str(uri)
            t.authorities.setdefault(str(uri), str(name))
        for k in ("identifier_system_default", "derived_identifier_system", "location_system"):
            if data.get(k):
                setattr(t, k, str(data[k]))
    ext = folder / "extensions.yaml"
    if ext.is_file():
        data = _read_yaml(ext)
        for i, r in enumerate((data or {}).get("rules") or []):
            if not isinstance(r, dict) or not {"source", "resource", "url"} <= set(r):
                raise ConfigError(f"{ext}: rule {i + 1} needs source, resource and url")
            rule = ExtensionRule(
                str(r["source"]),
                str(r["resource"]),
                str(r["url"]),
                str(r.get("type", "string")),
                bool(r.get("repeat", False)),
            )
            if rule.type not in _TYPES:
                raise ConfigError(f"{ext}: rule {i + 1}: type {rule.type!r} is not one of {', '.join(sorted(_TYPES))}")
            from hub.transforms.hl7v2 import parse_path

            try:
                parse_path(rule.source)
            except Exception as exc:
                raise ConfigError(f"{ext}: rule {i + 1}: {exc}") from None
            t.extensions.append(rule)
    _cache[key] = (stamp, t)
    return t
