"""``csv_to_fhir``: CSV rows → FHIR resources (plain JSON), as the layout's ``fhir:`` section maps them. One row
gives the resource itself; several rows give a Bundle with one entry per good row (conditional updates for
transaction/batch bundles when the resource has a first identifier with a system).
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from hub.errors import ConfigError, MappingError
from hub.message import Message
from hub.spec import TransformConfig
from hub.transforms import TransformContext

from .base import LayoutTransform, resolve
from .rows import Record

__all__ = ["CsvToFhir"]


def _json_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


_ELEMENT = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


def _put(resource: dict[str, Any], path: str, value: Any) -> None:
    """Write ``value`` at a dotted element path with list indexes, creating objects and lists as needed."""
    node: Any = resource
    steps = path.split(".")
    for n, step in enumerate(steps):
        m = _ELEMENT.match(step)
        if m is None:
            raise MappingError(f"{path!r} is not an element path like name[0].given[0]", location=path)
        key, index = m.group(1), m.group(2)
        last = n == len(steps) - 1
        if index is None:
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            i = int(index)
            lst = node.setdefault(key, [])
            while len(lst) <= i:
                lst.append(None if last else {})
            if last:
                lst[i] = value
            else:
                if lst[i] is None:
                    lst[i] = {}
                node = lst[i]


def _compact(value: Any) -> Any:
    """Drop empty objects/lists and list holes left by rows without some values."""
    if isinstance(value, dict):
        out = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        items = [_compact(v) for v in value]
        return [v for v in items if v not in (None, {}, [])]
    return value


class CsvToFhir:
    class Config(TransformConfig):
        """CSV rows → FHIR resources (plain JSON), as the layout's ``fhir:`` section maps them.

        One row gives the resource itself; several rows give a Bundle (``bundle``) with one entry per good row.
        ``{type: csv_to_fhir, layout: csv/pm_roster.yaml}``
        """

        type: Literal["csv_to_fhir"] = "csv_to_fhir"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["csv/pm_roster.yaml"])
        bundle: Literal["transaction", "batch", "collection"] = Field(
            "transaction",
            description="Bundle type for several rows. transaction/batch entries are conditional updates "
            "(PUT Patient?identifier=system|value) when the resource has a first identifier with a system, else POST.",
        )
        bad_rows: Literal["reject", "skip"] = Field("reject", description="As for csv_to_v2.")

    name = "csv_to_fhir"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config
        self.base = LayoutTransform(config.layout, ctx, config.bad_rows)
        self.base.name = self.name
        if self.base.layout.fhir is None:
            raise ConfigError(f"csv_to_fhir: layout {config.layout} has no fhir: section")
        self.target = self.base.layout.fhir
        for path in self.target.elements:
            if not all(_ELEMENT.match(s) for s in path.split(".")):
                raise ConfigError(
                    f"csv_to_fhir: layout {config.layout}: {path!r} is not an element path like name[0].given[0]"
                )

    def build(self, rec: Record) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": self.target.resource}
        for path, t in self.target.elements.items():
            value = resolve(t, rec, self.base.layout, path)
            if value is None or value == "":
                continue
            _put(res, path, _json_value(value))
        compacted: dict[str, Any] = _compact(res)
        return compacted

    def _entry(self, res: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"resource": res}
        if self.config.bundle == "collection":
            return entry
        ids = res.get("identifier") or []
        first = ids[0] if ids and isinstance(ids[0], dict) else {}
        if first.get("system") and first.get("value"):
            entry["request"] = {
                "method": "PUT",
                "url": f"{res['resourceType']}?identifier={first['system']}|{first['value']}",
            }
        else:
            entry["request"] = {"method": "POST", "url": res["resourceType"]}
        return entry

    def __call__(self, message: Message) -> Message:
        rows = self.base.rows(message)
        resources = [self.build(rec) for rec in rows.records]
        if len(resources) == 1 and rows.total == 1:
            doc: dict[str, Any] = resources[0]
        else:
            doc = {"resourceType": "Bundle", "type": self.config.bundle, "entry": [self._entry(r) for r in resources]}
        out = message.replace(json.dumps(doc, ensure_ascii=False).encode("utf-8"), "fhir")
        self.base.note_skipped(out, rows)
        return out
