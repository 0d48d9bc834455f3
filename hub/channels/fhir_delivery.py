"""How the ``fhir_rest`` destination writes a transaction or batch Bundle: in pieces the server accepts, and without
erasing what the server already holds.

**Pieces.** Servers cap what one request may hold (Medplum: 8 entries when any entry is conditional, 50 updates in
any transaction; others have their own limits), so a Bundle is cut into chunks of at most ``max_entries``. The
entries are ordered so that each comes after every entry it references; a reference cycle (Encounter.diagnosis ⇄
Condition.encounter, two merged Patients linking each other) stays in one transaction. Chunks go one after another;
before chunk k is sent, each ``urn:uuid:`` reference to an entry of an earlier chunk becomes the ``Type/id`` the
server reported for it. In ``batch`` and ``resources`` mode the entries of one request are independent, so a chunk
holds only entries whose references are already resolved, and a cycle is written in two steps: first without the
references that cannot be resolved yet, then whole.

**Merging.** A conditional update (``PUT Patient?identifier=…``) replaces the whole resource, so a v2 message that
carries part of a patient would erase the rest. With ``update: merge`` the destination first reads what the server
holds for each conditional update of the chunk (one ``batch`` of searches), merges the message's resource into it by
the rules of ``mappings/fhir/merge.yaml`` and writes ``PUT Type/id`` with ``If-Match`` on the version it read. A 412
(someone wrote in between) means read, merge and send again. How an entry is written: its ``urn:hub:fhir:merge``
hint (merge | fill | replace, read and stripped here), else the rules' ``how`` for its type, else ``update``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import yaml

from hub.errors import ConfigError, DeliveryError, PermanentDelivery, RetryableDelivery, retryable_http_status
from hub.transforms.fhir import r4

__all__ = [
    "MergeRules",
    "load_merge_rules",
    "merge_resource",
    "element_of",
    "plan",
    "BundleDelivery",
    "MERGE_HINT",
    "outcome_summary",
    "retry_after_seconds",
]

MERGE_HINT = "urn:hub:fhir:merge"  # entry.request.extension: {url: MERGE_HINT, valueCode: merge | fill | replace}
HOW = ("merge", "fill", "replace")
CONFLICT_TRIES = 3  # read-merge-write rounds for one chunk before the delivery is retried later
FHIR_JSON = "application/fhir+json"
# what servers say when a transaction or batch holds more than they take (Medplum: "too many entries", "more update
# operations than allowed"; HAPI: "exceeds the maximum"; proxies: 413 Request Entity Too Large)
_TOO_BIG = re.compile(
    r"too many|too large|too costly|too-costly|exceed|maximum|more update operations|entity too large", re.I
)

# ---------------------------------------------------------------------------------------------- merge rules
# Used when mappings/fhir/merge.yaml is absent; the shipped file says the same, with the reasons.
DEFAULT_RULES: dict[str, Any] = {
    "how": {"Observation": "replace", "DiagnosticReport": "replace", "Appointment": "replace"},
    "lists": {
        "*": {
            "identifier": ["system", "value"],
            "telecom": ["system", "use"],
            "address": ["use", "type"],
            "name": ["use"],
            "extension": ["url"],
        },
        "Patient": {
            "link": ["other.reference"],
            "generalPractitioner": ["reference"],
            "communication": ["language.coding[0].code"],
        },
    },
    "together": {
        "Appointment": [["status", "cancelationReason"]],
        "Condition": [["clinicalStatus", "abatement[x]"]],
        "Observation": [["value[x]", "dataAbsentReason"]],
    },
}

KeyPath = tuple[str | int, ...]
_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def _parse_path(text: str) -> KeyPath:
    out: list[str | int] = []
    for part in text.split("."):
        m = _STEP.fullmatch(part)
        if not m:
            raise ValueError(f"{text!r} is not a path like other.reference or language.coding[0].code")
        out.append(m.group(1))
        out.extend(int(i) for i in re.findall(r"\d+", m.group(2)))
    return tuple(out)


def _at(item: Any, path: KeyPath) -> Any:
    for step in path:
        if isinstance(step, int):
            item = item[step] if isinstance(item, list) and len(item) > step else None
        else:
            item = item.get(step) if isinstance(item, dict) else None
        if item is None:
            return None
    return item


def _r4_types() -> dict[str, Any]:
    """The types of the FHIR R4 element index the converter and the validator read (tools/gen_r4_index.py)."""
    return r4.index()["types"]  # type: ignore[no-any-return]


@lru_cache(maxsize=256)
def _choices(resource_type: str) -> dict[str, str]:
    """JSON name → choice element of a resource type (``valueQuantity`` → ``value[x]``)."""
    out = {}
    elements = (_r4_types().get(resource_type) or {}).get("elements") or {}
    for name, spec in elements.items():
        if name.endswith("[x]") and "." not in name and isinstance(spec, list) and len(spec) > 2:
            for t in spec[2]:
                out[name[:-3] + t[0].upper() + t[1:]] = name
    return out


def element_of(resource_type: str, key: str) -> str:
    """The element a JSON property belongs to: ``_birthDate`` → ``birthDate``, ``deceasedBoolean`` → ``deceased[x]``."""
    name = key[1:] if key.startswith("_") else key
    return _choices(resource_type).get(name, name)


@dataclass(frozen=True)
class MergeRules:
    """The merge rules: ``how`` per resource type, the lists merged item by item (``lists[type or "*"][element]`` →
    key paths) and the elements that go ``together``."""

    lists: dict[str, dict[str, tuple[KeyPath, ...]]]
    how: dict[str, str] = field(default_factory=dict)
    together: dict[str, tuple[frozenset[str], ...]] = field(default_factory=dict)
    source: str = "built-in defaults"

    def key_of(self, resource_type: str, element: str) -> tuple[KeyPath, ...] | None:
        own = self.lists.get(resource_type, {})
        keys = own[element] if element in own else self.lists.get("*", {}).get(element)
        return keys or None  # [] in a type's section: that list is replaced as a whole

    def how_for(self, resource_type: str, default: str) -> str:
        return self.how.get(resource_type, self.how.get("*", default))


def _rules(data: Any, source: str) -> MergeRules:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with lists:, how: and together:")
    unknown = set(data) - {"lists", "how", "together"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (expected lists, how, together)"
        )
    for part in ("lists", "how", "together"):
        if not isinstance(data.get(part) or {}, dict):
            raise ConfigError(f'{source}: {part}: must map resource types (or "*") to their rules')
    lists: dict[str, dict[str, tuple[KeyPath, ...]]] = {}
    for rtype, elements in (data.get("lists") or {}).items():
        if not isinstance(elements, dict):
            raise ConfigError(f"{source}: lists.{rtype} must map element names to key paths")
        lists[str(rtype)] = {}
        for element, keys in elements.items():
            keys = [keys] if isinstance(keys, str) else keys if keys is not None else []
            if not isinstance(keys, list):
                raise ConfigError(f"{source}: lists.{rtype}.{element} must be a list of paths")
            try:
                lists[str(rtype)][str(element)] = tuple(_parse_path(str(k)) for k in keys)
            except ValueError as exc:
                raise ConfigError(f"{source}: lists.{rtype}.{element}: {exc}") from None
    how = {str(k): str(v) for k, v in (data.get("how") or {}).items()}
    for rtype, v in how.items():
        if v not in HOW:
            raise ConfigError(f"{source}: how.{rtype}: {v!r} is not one of {', '.join(HOW)}")
    together: dict[str, tuple[frozenset[str], ...]] = {}
    for rtype, groups in (data.get("together") or {}).items():
        if not isinstance(groups, list) or not all(isinstance(g, list) and len(g) > 1 for g in groups):
            raise ConfigError(
                f"{source}: together.{rtype} must be a list of groups such as [status, cancelationReason]"
            )
        together[str(rtype)] = tuple(frozenset(str(x) for x in g) for g in groups)
    return MergeRules(lists, how, together, source)


def load_merge_rules(path: Path | None, *, required: bool = False) -> MergeRules:
    """The rules in ``path``; the built-in defaults when it is None or absent (unless ``required``)."""
    if path is None or not path.is_file():
        if required:
            raise ConfigError(f"merge rules {path} not found")
        return _rules(DEFAULT_RULES, "built-in defaults")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _rules(data or {}, str(path))


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _merge_list(held: list[Any], carried: list[Any], keys: tuple[KeyPath, ...], fill: bool) -> list[Any]:
    """Item by item: the message's items with a key replace the server's items with that key (fill: are added only
    when the server has none with that key); the server's items with other keys stay. A missing key part is a value
    of its own (a name without ``use`` replaces the server's name without ``use``)."""

    def key(item: Any) -> str:
        return _canon([_at(item, p) for p in keys])

    groups: dict[str, list[Any]] = {}
    for item in carried:
        groups.setdefault(key(item), []).append(item)
    held_keys = {key(item) for item in held}
    out: list[Any] = []
    placed: set[str] = set()
    for item in held:
        k = key(item)
        if k in groups and not fill:
            if k not in placed:  # the message's items take the place of the server's first item with that key
                out.extend(groups[k])
                placed.add(k)
            continue
        out.append(item)
    for k, items in groups.items():
        if k not in placed and k not in held_keys:
            out.extend(items)
    return out


def merge_resource(held: dict[str, Any], carried: dict[str, Any], how: str, rules: MergeRules) -> dict[str, Any]:
    """The resource to write back: ``held`` (the server's copy) combined with ``carried`` (the message's).

    merge: an element the message carries replaces the server's, one it does not carry is kept, the lists named in
    the rules are merged item by item, and elements named ``together`` come from the message as a group. fill: the
    server's values win; only elements and list items it lacks are added. replace: the message's resource. An
    element is all its JSON properties: ``birthDate`` with ``_birthDate``, every ``value[x]`` variant. ``id`` and
    ``meta`` always come from the server's copy."""
    rtype = str(held.get("resourceType") or carried.get("resourceType"))
    if how == "replace":
        out = dict(carried)
    else:
        mine: dict[str, list[str]] = {}  # element → the server's properties of it
        theirs: dict[str, list[str]] = {}  # element → the message's
        for src, into in ((held, mine), (carried, theirs)):
            for k in src:
                if k not in ("resourceType", "id", "meta"):
                    into.setdefault(element_of(rtype, k), []).append(k)
        elements = set(theirs)
        for group in rules.together.get(rtype, ()):
            if elements & group:
                elements |= {e for e in mine if e in group} | (group & set(theirs))
                if how == "fill" and mine.keys() & group:
                    elements -= group  # the server holds part of the group: its group stands
        out = dict(held)
        for elem in elements:
            keys = rules.key_of(rtype, elem)
            if keys and isinstance(carried.get(elem), list) and isinstance(held.get(elem), list):
                out[elem] = _merge_list(held[elem], carried[elem], keys, fill=how == "fill")
                continue
            if how == "fill" and elem in mine:
                continue
            for k in mine.get(elem, []):
                del out[k]
            for k in theirs.get(elem, []):
                out[k] = carried[k]
    for name in ("id", "meta"):
        out.pop(name, None)
        if name in held:
            out[name] = held[name]
    return out


# ---------------------------------------------------------------------------------------------- references
def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        for v in node.values():
            if isinstance(v, (dict, list)):
                yield from _references(v)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v)


_DROP = object()


def _rewrite(node: Any, resolve: Callable[[str], str | None]) -> Any:
    """A copy of ``node`` with each reference replaced by ``resolve(ref)``; where that is None the reference cannot
    be written yet and the smallest thing holding it goes: the list item around it, or else the whole element."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                new = resolve(v)
                if new is None:
                    return _DROP
                out[k] = new
            elif isinstance(v, (dict, list)):
                nv = _rewrite(v, resolve)
                if nv is _DROP:
                    return _DROP
                out[k] = nv
            else:
                out[k] = v
        return out
    if isinstance(node, list):
        items = [x for x in (_rewrite(v, resolve) for v in node) if x is not _DROP]
        return items if items or not node else _DROP  # FHIR has no empty lists: an emptied one goes too
    return node


def _rewrite_resource(resource: dict[str, Any], resolve: Callable[[str], str | None]) -> dict[str, Any]:
    out = {}
    for k, v in resource.items():
        nv = _rewrite(v, resolve) if isinstance(v, (dict, list)) else v
        if nv is not _DROP:
            out[k] = nv
    return out


def _strip_history(location: str) -> str:
    """``http://x/fhir/Patient/1/_history/2`` → ``Patient/1`` (the last type/id pair)."""
    parts = location.split("?")[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:])


# ---------------------------------------------------------------------------------------------- entries and plan
@dataclass(eq=False)
class Entry:
    index: int
    resource: dict[str, Any] | None
    request: dict[str, Any]
    full_url: str | None
    how: str
    hinted: bool = False  # the entry's own urn:hub:fhir:merge hint said how
    deps: list[int] = field(default_factory=list)
    location: str | None = None  # Type/id on the server, once known (read or written)
    status: str = ""  # the last write's status, as the server said it
    shown: str = ""  # the location as the server reported it
    created: bool = False

    @property
    def type(self) -> str:
        if self.resource:
            return str(self.resource.get("resourceType"))
        return str(self.request.get("url", "")).split("?")[0].split("/")[0]

    @property
    def method(self) -> str:
        return str(self.request.get("method", "")).upper()

    @property
    def conditional_update(self) -> bool:
        return self.method == "PUT" and "?" in str(self.request.get("url", "")) and self.resource is not None

    @property
    def merges(self) -> bool:
        """Read what the server holds first and write the merge back: a conditional update (unless replace), or a
        conditional create whose hint says merge or fill (without a hint a conditional create leaves the server's copy
        as it is, as the server would)."""
        if self.resource is None or self.how == "replace":
            return False
        if self.conditional_update:
            return True
        return self.hinted and self.method == "POST" and bool(self.request.get("ifNoneExist"))

    @property
    def search(self) -> str:
        """The search that finds the server's copy: ``Type?query`` of a conditional update or create."""
        if self.method == "POST" and self.request.get("ifNoneExist"):
            return f"{self.type}?{self.request['ifNoneExist']}"
        return str(self.request.get("url"))

    @property
    def conditional(self) -> bool:
        """Sending it again finds what the first send wrote instead of writing it twice."""
        url = str(self.request.get("url", ""))
        return bool(self.request.get("ifNoneExist")) or "?" in url or self.method in ("PUT", "DELETE", "GET")

    @property
    def identifier(self) -> str | None:
        """``system|value`` from the conditional URL, else the resource's first identifier."""
        query = str(self.request.get("url", "")).partition("?")[2] or str(self.request.get("ifNoneExist") or "")
        for k, v in parse_qsl(query, keep_blank_values=True):
            if k == "identifier":
                return v
        for ident in (self.resource or {}).get("identifier") or []:
            if isinstance(ident, dict) and ident.get("value"):
                return f"{ident.get('system') or ''}|{ident['value']}"
        return None

    @property
    def label(self) -> str:
        """Resource type and identifier, never other content (a reason may be read by people who may not see PHI)."""
        ident = self.identifier
        return f"{self.type} identifier={ident}" if ident else f"{self.type} (entry {self.index})"


def _entries(bundle: dict[str, Any], update: str, rules: MergeRules) -> list[Entry]:
    """The Bundle's entries, each with how it is written: the entry's hint, else (update: merge) the rules' ``how``
    for its type, else ``update``."""
    out: list[Entry] = []
    for i, raw in enumerate(bundle.get("entry") or []):
        if not isinstance(raw, dict):
            raise PermanentDelivery(f"Bundle.entry[{i}] is not an object")
        request = dict(raw.get("request") or {})
        resource = raw.get("resource") if isinstance(raw.get("resource"), dict) else None
        how = rules.how_for(str((resource or {}).get("resourceType")), "merge") if update == "merge" else "replace"
        hints = [x for x in request.get("extension") or [] if isinstance(x, dict) and x.get("url") == MERGE_HINT]
        if hints:
            how = str(hints[-1].get("valueCode"))
            if how not in HOW:
                raise PermanentDelivery(f"Bundle.entry[{i}].request: merge hint {how!r} is not one of {', '.join(HOW)}")
            rest = [x for x in request["extension"] if x not in hints]  # the hint is ours: the server never sees it
            if rest:
                request["extension"] = rest
            else:
                del request["extension"]
        if not request.get("method"):
            raise PermanentDelivery(f"Bundle.entry[{i}] has no request.method")
        out.append(Entry(i, resource, request, raw.get("fullUrl"), how, hinted=bool(hints)))
    by_url = {e.full_url: e.index for e in out if _placeholder(e.full_url)}
    for e in out:
        e.deps = sorted({by_url[r] for r in _references(e.resource) if r in by_url})
    return out


def _placeholder(full_url: str | None) -> bool:
    """A fullUrl that only this Bundle knows (``urn:uuid:``/``urn:oid:``): references to it must be resolved."""
    return bool(full_url) and str(full_url).startswith("urn:")


def _components(entries: list[Entry]) -> list[list[int]]:
    """Strongly connected components (Tarjan, iterative), each after every component it references."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on: set[int] = set()
    out: list[list[int]] = []
    counter = 0
    for root in range(len(entries)):
        if root in index:
            continue
        work = [(root, iter(entries[root].deps))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, deps = work[-1]
            for d in deps:
                if d not in index:
                    index[d] = low[d] = counter
                    counter += 1
                    stack.append(d)
                    on.add(d)
                    work.append((d, iter(entries[d].deps)))
                    break
                if d in on:
                    low[node] = min(low[node], index[d])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == node:
                            break
                    out.append(sorted(comp))
    return out


Step = list[tuple[Entry, bool]]  # (entry, stub): a stub leaves out references that cannot be resolved yet


def plan(entries: list[Entry], mode: str, max_entries: int) -> list[Step]:
    """The requests, in order. transaction: components kept whole and packed into chunks of at most max_entries
    (a component larger than that is written as stubs, then whole). batch/resources: every entry after what it
    references, by levels; a cycle as stubs, then whole."""
    comps = _components(entries)
    steps: list[Step] = []
    if mode == "transaction":  # within a transaction the server resolves references: the Bundle's order is kept
        current: Step = []
        for comp in comps:
            members = [entries[i] for i in comp]
            if len(comp) > max_entries:
                if current:
                    steps.append(current)
                    current = []
                for stub in (True, False):
                    for s in range(0, len(members), max_entries):
                        steps.append([(e, stub) for e in members[s : s + max_entries]])
                continue
            if len(current) + len(comp) > max_entries:
                steps.append(current)
                current = []
            current.extend((e, False) for e in members)
        if current:
            steps.append(current)
        return [sorted(step, key=lambda x: x[0].index) for step in steps]
    levels: dict[int, Step] = {}
    known_at: dict[int, int] = {}  # entry → the level after which the server knows its id
    for comp in comps:
        inside = set(comp)
        base = max((known_at[d] + 1 for i in comp for d in entries[i].deps if d not in inside), default=0)
        cyclic = len(comp) > 1 or comp[0] in entries[comp[0]].deps
        for i in comp:
            known_at[i] = base
            if cyclic:
                levels.setdefault(base, []).append((entries[i], True))
                levels.setdefault(base + 1, []).append((entries[i], False))
            else:
                levels.setdefault(base, []).append((entries[i], False))
    size = 1 if mode == "resources" else max_entries
    for level in sorted(levels):
        items = sorted(levels[level], key=lambda x: x[0].index)
        steps.extend(items[s : s + size] for s in range(0, len(items), size))
    return steps


# ---------------------------------------------------------------------------------------------- delivery
Call = Callable[[str, str, bytes | None, dict[str, str]], Awaitable[httpx.Response]]


def retry_after_seconds(r: httpx.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), or None."""
    value = r.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def outcome_summary(text_or_body: Any) -> str:
    """An OperationOutcome's diagnostics, for a reason (the codes and texts the server wrote, not the resource)."""
    body = text_or_body
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return ""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        msgs = []
        for i in body.get("issue") or []:
            if not isinstance(i, dict):
                continue
            text = str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
            where = [str(x) for x in i.get("expression") or i.get("location") or [] if x]
            msgs.append(f"{text} ({', '.join(where)})" if where else text)  # paths name elements, never values
        return "; ".join(dict.fromkeys(msgs))[:800]
    return ""


def _code(status: Any) -> int:
    s = str(status or "").strip()
    return int(s[:3]) if s[:3].isdigit() else 0


@dataclass
class _Sent:
    step_entry: tuple[Entry, bool]
    body: dict[str, Any]  # the Bundle entry (fullUrl, resource, request) as sent

    @property
    def entry(self) -> Entry:
        return self.step_entry[0]

    @property
    def if_match(self) -> bool:
        return bool(self.body["request"].get("ifMatch"))


class BundleDelivery:
    """One transaction or batch Bundle, written in chunks. ``call`` does one HTTP request (auth, transport errors →
    RetryableDelivery); this class decides what to send and judges the answers."""

    def __init__(
        self,
        call: Call,
        base: str,
        bundle: dict[str, Any],
        *,
        mode: str,
        max_entries: int,
        update: str,
        rules: MergeRules,
    ) -> None:
        self.call = call
        self.base = base
        self.bundle = bundle
        self.mode = mode
        self.max_entries = max_entries
        self.rules = rules
        self.entries = _entries(bundle, update, rules)
        self.steps = plan(self.entries, mode, max_entries)
        self.unit = {"transaction": "transaction", "batch": "batch", "resources": "request"}[mode]
        self.requests = 0  # HTTP round trips, reads included
        self.k = 0  # the chunk being written (1-based)
        self.last: httpx.Response | None = None

    async def run(self) -> str:
        for k, step in enumerate(self.steps, 1):
            self.k = k
            await self._step(k, step)
        last = self.last
        head = f"HTTP {last.status_code} {last.reason_phrase}".rstrip() if last is not None else "nothing to send"
        n = len(self.entries)
        lines = [
            f"{head} ({n} entries in {self._units(len(self.steps))}, {self.requests} HTTP "
            f"request{'s' if self.requests != 1 else ''})"
        ]
        lines += [f"entry {e.index}: {e.status} {e.shown or e.location or ''}".rstrip() for e in self.entries]
        return "\n".join(lines)

    # -- one chunk
    async def _step(self, k: int, step: Step) -> None:
        pending = step
        for _ in range(CONFLICT_TRIES):
            prepared = await self._prepare(k, pending)
            if not prepared:
                return
            if self.mode == "transaction":
                conflicts = await self._transaction(k, prepared)
            elif self.mode == "batch":
                conflicts = await self._batch(k, prepared)
            else:
                conflicts = await self._one(k, prepared[0])
            if not conflicts:
                return
            # transaction: nothing of it was written, all again; otherwise only the entries that met a newer version
            pending = step if self.mode == "transaction" else [s.step_entry for s in conflicts]
        raise RetryableDelivery(
            f"{self._where(k)}: the server's copy kept changing between our read and our write (HTTP 412 "
            f"{CONFLICT_TRIES} times) for {', '.join(e.label for e, _ in pending)}; {self._progress(k)}"
        )

    async def _prepare(self, k: int, step: Step) -> list[_Sent]:
        """Read what the server holds for the chunk's conditional updates, merge, resolve references."""
        held: dict[int, dict[str, Any]] = {}
        merging = [e for e, _ in step if e.merges]
        if merging:
            # the chunk's conditional creates are looked up too, so that references to them compare as Type/id
            # with the references in the server's copy (a link or generalPractitioner is not added twice)
            lookups = merging + [
                e
                for e, _ in step
                if e not in merging and e.request.get("ifNoneExist") and e.location is None and e.method == "POST"
            ]
            urls = [e.search for e in lookups]
            for e, found in zip(lookups, await self._read(k, urls), strict=False):
                if len(found) > 1 and e in merging:
                    what = f"identifier {e.identifier}" if e.identifier else "what its conditional update searches for"
                    raise PermanentDelivery(
                        f"{self._where(k)}: {len(found)} {e.type} resources on the server have {what}; "
                        f"resolve the duplicate on the server, then replay; {self._progress(k)}"
                    )
                if not found and e in merging and not e.status:
                    e.location = None  # gone since an earlier read: the conditional update creates it
                if len(found) == 1:
                    e.location = f"{found[0].get('resourceType')}/{found[0].get('id')}"
                    if e in merging:
                        held[e.index] = found[0]
        in_chunk = {e.full_url for e, _ in step if e.full_url} if self.mode == "transaction" else set()
        by_url = {e.full_url: e for e in self.entries if _placeholder(e.full_url)}
        out: list[_Sent] = []
        for e, stub in step:
            if e.resource is None:
                out.append(_Sent((e, stub), {"request": dict(e.request)}))
                continue
            if (
                not stub
                and e.index not in held
                and e.created is False
                and e.status
                and e.method == "POST"
                and e.request.get("ifNoneExist")
            ):
                continue  # its stub found the server's own copy: a conditional create does not touch it
            unresolved: list[str] = []

            # this entry's stub flag and list, bound now (the closure is used within this iteration only)
            def resolve(ref: str, stub: bool = stub, unresolved: list[str] = unresolved) -> str | None:
                target = by_url.get(ref)
                if target is None:
                    return ref
                if target.location:
                    return target.location
                if ref in in_chunk:
                    return ref  # the server resolves it within the transaction
                if not stub:
                    unresolved.append(target.label)
                return None

            resource = _rewrite_resource(e.resource, resolve)
            if unresolved:
                raise PermanentDelivery(
                    f"{self._where(k)}: {e.label} refers to {', '.join(unresolved)}, whose location the server did not "
                    f"report; {self._progress(k)}"
                )
            request = {x: v for x, v in e.request.items() if x != "extension" or v}
            if e.index in held:
                server = held[e.index]
                resource = merge_resource(server, resource, e.how, self.rules)
                request = _plain(request, "PUT", f"{server['resourceType']}/{server['id']}")
                version = (server.get("meta") or {}).get("versionId")
                if version:
                    request["ifMatch"] = f'W/"{version}"'
            elif not stub and e.status and e.location and e.method == "POST":
                request = _plain(request, "PUT", e.location)  # the second step of a cycle: the stub has an id now
            body: dict[str, Any] = {"resource": resource, "request": request}
            if e.full_url:
                body = {"fullUrl": e.full_url, **body}
            out.append(_Sent((e, stub), body))
        return out

    async def _read(self, k: int, urls: list[str]) -> list[list[dict[str, Any]]]:
        """Search results for each URL: one batch of GETs (resources mode: one GET each)."""
        if self.mode == "resources":
            out = []
            for url in urls:
                r = await self._http("GET", f"{self.base}/{url}", None)
                if r.status_code >= 300:
                    raise self._failed(k, f"reading {url.split('?')[0]} before writing", r.status_code, r.text, r)
                out.append(_matches(_json(r)))
            return out
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": u}} for u in urls],
        }
        r = await self._http("POST", self.base, bundle)
        if r.status_code >= 300:
            raise self._failed(k, "reading what the server holds", r.status_code, r.text, r)
        answers = (_json(r) or {}).get("entry") or []
        out = []
        for i, url in enumerate(urls):
            a = answers[i] if i < len(answers) and isinstance(answers[i], dict) else {}
            code = _code((a.get("response") or {}).get("status"))
            if not 200 <= code < 300:
                raise self._failed(
                    k,
                    f"reading {url.split('?')[0]}",
                    code,
                    (a.get("response") or {}).get("outcome") or a.get("resource"),
                    r,
                )
            out.append(_matches(a.get("resource")))
        return out

    async def _transaction(self, k: int, sent: list[_Sent]) -> list[_Sent]:
        r = await self._http("POST", self.base, self._bundle("transaction", sent))
        if r.status_code == 412 and any(s.if_match for s in sent):
            return sent
        if r.status_code >= 300:
            raise self._failed(k, "", r.status_code, r.text, r, [s.entry for s in sent])
        answers = (_json(r) or {}).get("entry") or []
        for i, s in enumerate(sent):
            a = answers[i] if i < len(answers) and isinstance(answers[i], dict) else {}
            self._record(s.entry, a.get("response") or {}, a.get("resource"))
        return []

    async def _batch(self, k: int, sent: list[_Sent]) -> list[_Sent]:
        r = await self._http("POST", self.base, self._bundle("batch", sent))
        if r.status_code >= 300:
            raise self._failed(k, "", r.status_code, r.text, r, [s.entry for s in sent])
        answers = (_json(r) or {}).get("entry") or []
        conflicts, failed = [], []
        for i, s in enumerate(sent):
            a = answers[i] if i < len(answers) and isinstance(answers[i], dict) else {}
            resp = a.get("response") or {}
            code = _code(resp.get("status"))
            if 200 <= code < 300:
                self._record(s.entry, resp, a.get("resource"))
            elif code == 412 and s.if_match:
                conflicts.append(s)
            else:
                failed.append((s.entry, code, outcome_summary(resp.get("outcome") or a.get("resource"))))
        if failed:
            worst = max((c for _, c, _ in failed), key=lambda c: (retryable_http_status(c), c))
            detail = "; ".join(f"{e.label} → HTTP {c or '?'}{': ' + o if o else ''}" for e, c, o in failed)
            written = len(sent) - len(failed) - len(conflicts)
            others = f"the other {written} of this batch were written; " if written else ""
            raise self._error(
                worst,
                f"{self._where(k)}: {len(failed)} of {len(sent)} entries failed: {detail}; {others}{self._progress(k)}",
                r,
            )
        return conflicts

    async def _one(self, k: int, s: _Sent) -> list[_Sent]:
        e, req = s.entry, s.body["request"]
        headers = {}
        for field_, header in (
            ("ifNoneExist", "If-None-Exist"),
            ("ifMatch", "If-Match"),
            ("ifNoneMatch", "If-None-Match"),
        ):
            if req.get(field_):
                headers[header] = str(req[field_])
        body = s.body.get("resource")
        r = await self._http(str(req["method"]), f"{self.base}/{req['url']}", body, headers)
        if r.status_code == 412 and s.if_match:
            return [s]
        if r.status_code >= 300:
            raise self._failed(k, "", r.status_code, r.text, r, [e])
        location = r.headers.get("Location") or r.headers.get("Content-Location")
        self._record(e, {"status": f"{r.status_code} {r.reason_phrase}".rstrip(), "location": location}, _json(r))
        return []

    # -- helpers
    async def _http(
        self, method: str, url: str, body: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        content = (
            json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") if body is not None else None
        )
        self.requests += 1
        try:
            r = await self.call(method, url, content, headers or {})
        except DeliveryError as exc:  # a timeout, a refused connection, a token endpoint down: same kind, with where
            raise type(exc)(
                f"{self._where(self.k)}: {exc}; {self._progress(self.k)}",
                response=exc.response,
                retry_after=exc.retry_after,
            ) from exc
        self.last = r
        return r

    def _bundle(self, kind: str, sent: list[_Sent]) -> dict[str, Any]:
        out = {k: v for k, v in self.bundle.items() if k not in ("id", "type", "entry", "total", "link", "signature")}
        return {**out, "type": kind, "entry": [s.body for s in sent]}

    def _record(self, e: Entry, response: dict[str, Any], resource: Any) -> None:
        e.status = str(response.get("status") or "")
        location = response.get("location")
        if not location and isinstance(resource, dict) and resource.get("id") and resource.get("resourceType"):
            location = f"{resource['resourceType']}/{resource['id']}"
        if location:
            e.shown = str(location)
            e.location = _strip_history(str(location))
        e.created = e.created or _code(e.status) == 201

    def _units(self, n: int, adjective: str = "") -> str:
        noun = self.unit if n == 1 else "batches" if self.unit == "batch" else f"{self.unit}s"
        return " ".join(x for x in (str(n), adjective, noun) if x)

    def _where(self, k: int) -> str:
        if self.mode == "resources":
            e = self.steps[k - 1][0][0]
            return f"request {k} of {len(self.steps)} ({e.label})"
        return f"{self.unit} {k} of {len(self.steps)}"

    def _progress(self, k: int) -> str:
        """What is on the server now, and whether sending the message again is safe."""
        done = {e.index for step in self.steps[: k - 1] for e, _ in step}
        if not done:
            written = f"no earlier {self.unit} was written"
        else:
            written = f"the {self._units(k - 1, 'earlier')} ({len(done)} entries) {'were' if k > 2 else 'was'} written"
        plain = [e for e in self.entries if not e.conditional]
        if plain:
            again = f"{len(plain)} entries are plain creates (POST without ifNoneExist): a replay writes them again"
        else:
            again = "every entry is conditional, so a replay updates what is there and creates nothing twice"
        return f"{written}; {again}"

    def _failed(
        self, k: int, doing: str, code: int, body: Any, r: httpx.Response, entries: list[Entry] | None = None
    ) -> Exception:
        why = outcome_summary(body)
        held = f"; it held {', '.join(e.label for e in entries)}" if entries else ""
        hint = ""
        if entries and len(entries) > 1 and code in (400, 403, 413, 422) and _TOO_BIG.search(why or str(body)[:2000]):
            other = "mode: batch or resources" if self.mode == "transaction" else "mode: resources"
            hint = (
                f"; the server refuses {self.unit}s this large: lower max_entries (now {self.max_entries}) "
                f"or use {other}"
            )
        status = f"HTTP {code or '?'}{': ' + why if why else ''}"
        what = f"{self._where(k)}{' ' + doing if doing else ''}: {status}{held}{hint}; {self._progress(k)}"
        return self._error(code, what, r)

    def _error(self, code: int, reason: str, r: httpx.Response) -> Exception:
        done = [f"entry {e.index}: {e.status} {e.shown or e.location or ''}".rstrip() for e in self.entries if e.status]
        response = "\n".join([*done, r.text[:20000]]) or None
        if retryable_http_status(code):
            return RetryableDelivery(reason, response=response, retry_after=retry_after_seconds(r))
        return PermanentDelivery(reason, response=response)


def _plain(request: dict[str, Any], method: str, url: str) -> dict[str, Any]:
    """The entry's request as a plain write to ``url`` (its conditions dropped, its extensions kept)."""
    conditions = ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince")
    return {**{k: v for k, v in request.items() if k not in conditions}, "method": method, "url": url}


def _json(r: httpx.Response) -> Any:
    try:
        return r.json() if r.text.strip() else None
    except ValueError:
        return None


def _matches(body: Any) -> list[dict[str, Any]]:
    """The resources a search found (``include``d ones and OperationOutcomes left out)."""
    if not isinstance(body, dict):
        return []
    if body.get("resourceType") != "Bundle":
        return [body] if body.get("id") else []
    out = []
    for e in body.get("entry") or []:
        res = e.get("resource") if isinstance(e, dict) else None
        if (
            isinstance(res, dict)
            and (e.get("search") or {}).get("mode", "match") == "match"
            and res.get("resourceType") != "OperationOutcome"
        ):
            out.append(res)
    return out
