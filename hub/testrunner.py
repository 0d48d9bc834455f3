"""``hub test``: run every channel's ``<channel>_test.yaml`` with in-memory sources and destinations.

A test file beside ``channels/adt_to_ehr.yaml`` is ``channels/adt_to_ehr_test.yaml``::

    tests:
      - name: A04 becomes a transaction Bundle and is archived verbatim
        input: {file: tests/samples/hl7v2/adt_a04.hl7}      # or {text: "MSH|^~\\&|…"}; paths relative to home
        expect:
          outcome: accepted                                  # accepted | filtered | rejected | error
          reason_contains: "PID"                             # for rejected
          outputs:                                           # per destination, one matcher per message sent
            ehr_fhir: [{json_contains: {resourceType: Bundle, type: transaction}}]
            archive: [{equals_file: tests/samples/hl7v2/adt_a04.hl7}]
            audit: []                                        # nothing sent there

Matchers: ``equals`` / ``equals_file`` (exact content; line endings of the expectation are normalised to the
output's), ``contains`` / ``not_contains`` (text or list), ``json_contains`` (a JSON subset), ``paths``
(``{PID-3.1: "12345"}``: values read from the output in its own path notation), ``content_type``.
Destinations not named under ``outputs`` are not checked. A destination with ``batch:`` gets the case's
messages as the one payload its assembler makes of them (an X12 interchange, an HL7 batch file …).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.channels.channel import Channel
from hub.engine import build
from hub.errors import InputError
from hub.message import Message
from hub.spec import Config, Problem, load_yaml, pydantic_problems
from hub.transforms.document import parse_document

__all__ = ["run_tests", "CaseResult"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Matcher(_Strict):
    equals: str | None = None
    equals_file: str | None = None
    contains: str | list[str] | None = None
    not_contains: str | list[str] | None = None
    json_contains: Any = None
    paths: dict[str, str | None] | None = None
    content_type: str | None = None


class Input(_Strict):
    file: str | None = None
    text: str | None = None


class Expect(_Strict):
    outcome: Literal["accepted", "filtered", "rejected", "error"] | None = None
    reason_contains: str | None = None
    outputs: dict[str, list[Matcher]] = Field(default_factory=dict)


class Case(_Strict):
    name: str
    input: Input
    expect: Expect


class TestFile(_Strict):
    tests: list[Case]


@dataclass
class CaseResult:
    channel: str
    name: str
    ok: bool
    failures: list[str] = field(default_factory=list)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _diff(expected: str, actual: str) -> str:
    d = difflib.unified_diff(_lines(expected), _lines(actual), "expected", "actual", lineterm="", n=1)
    return "\n".join("      " + line for line in d)


def _json_subset(want: Any, have: Any, where: str = "$") -> list[str]:
    """Problems where ``want`` is not contained in ``have`` (dicts: keys subset; lists: each wanted item found)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [f"{where}: expected an object, got {json.dumps(have)[:80]}"]
        out = []
        for k, v in want.items():
            if k not in have:
                out.append(f"{where}.{k}: missing")
            else:
                out.extend(_json_subset(v, have[k], f"{where}.{k}"))
        return out
    if isinstance(want, list):
        if not isinstance(have, list):
            return [f"{where}: expected a list, got {json.dumps(have)[:80]}"]
        out = []
        for i, item in enumerate(want):
            if not any(not _json_subset(item, h) for h in have):
                out.append(f"{where}[{i}]: no element contains {json.dumps(item)[:120]}")
        return out
    if want != have:
        return [f"{where}: expected {json.dumps(want)}, got {json.dumps(have)[:120]}"]
    return []


def _check_output(m: Matcher, out: Message, cfg: Config) -> list[str]:
    problems = []
    actual = _text(out.raw)

    def expect_equal(expected: str) -> None:
        if _lines(expected.strip("\r\n")) != _lines(actual.strip("\r\n")):
            problems.append("content differs:\n" + _diff(expected, actual))

    if m.equals is not None:
        expect_equal(m.equals)
    if m.equals_file is not None:
        path = cfg.resolve(m.equals_file)
        if not path.is_file():
            problems.append(f"equals_file {m.equals_file} not found")
        else:
            expect_equal(_text(path.read_bytes()))
    for needle in [m.contains] if isinstance(m.contains, str) else m.contains or []:
        if needle not in actual:
            problems.append(f"does not contain {needle!r}")
    for needle in [m.not_contains] if isinstance(m.not_contains, str) else m.not_contains or []:
        if needle in actual:
            problems.append(f"contains {needle!r}")
    if m.content_type is not None and m.content_type != out.content_type:
        problems.append(f"content type is {out.content_type}, expected {m.content_type}")
    if m.json_contains is not None:
        try:
            problems.extend(_json_subset(m.json_contains, json.loads(out.raw)))
        except ValueError as exc:
            problems.append(f"not JSON: {exc}")
    if m.paths:
        try:
            doc = parse_document(out.content_type, out.raw)
        except InputError as exc:
            problems.append(f"cannot read output paths: {exc}")
        else:
            for where, want in m.paths.items():
                have = doc.get(where)
                if have != want:
                    problems.append(f"{where} is {have!r}, expected {want!r}")
    return problems


def _run_case(channel: Channel, case: Case, cfg: Config, batches: dict[str, Any] | None = None) -> CaseResult:
    res = CaseResult(channel.name, case.name, True)
    if case.input.file is not None:
        path = cfg.resolve(case.input.file)
        if not path.is_file():
            return CaseResult(channel.name, case.name, False, [f"input file {case.input.file} not found"])
        raw = path.read_bytes()
    elif case.input.text is not None:
        raw = case.input.text.encode("utf-8")
    else:
        return CaseResult(channel.name, case.name, False, ["input needs file or text"])

    processed = channel.process_input(raw, {"source_ref": case.input.file or "text"})  # what receive() runs
    order = {"error": 3, "rejected": 2, "accepted": 1, "filtered": 0}
    outcome = max((p.status for p in processed), key=order.__getitem__) if processed else "filtered"
    reasons = [p.reason for p in processed if p.reason]

    exp = case.expect
    if exp.outcome is not None and outcome != exp.outcome:
        res.failures.append(
            f"outcome is {outcome}, expected {exp.outcome}" + (f" ({'; '.join(reasons)})" if reasons else "")
        )
    if exp.reason_contains is not None and not any(exp.reason_contains in r for r in reasons):
        res.failures.append(f"no reason contains {exp.reason_contains!r} (reasons: {reasons or 'none'})")
    for dest, matchers in exp.outputs.items():
        if dest not in channel.destinations:
            res.failures.append(f"outputs.{dest}: the channel has no such destination")
            continue
        outs = [o for p in processed if p.status == "accepted" for o in p.outputs.get(dest, [])]
        assembler = (batches or {}).get(dest)
        if assembler is not None and outs:  # a `batch:` destination sends the case's messages as one payload
            assembled = assembler(outs)
            for i, why in sorted(assembled.skipped.items()):
                res.failures.append(f"{dest}: message {i + 1} left out of the batch: {why}")
            outs = [outs[0].replace(assembled.content, assembled.content_type)]
        if len(outs) != len(matchers):
            res.failures.append(f"{dest}: {len(outs)} message(s) sent, expected {len(matchers)}")
        for i, (m, o) in enumerate(zip(matchers, outs, strict=False)):
            for problem in _check_output(m, o, cfg):
                res.failures.append(f"{dest}[{i}]: {problem}")
    res.ok = not res.failures
    return res


def run_tests(cfg: Config, only: str | None = None) -> tuple[list[CaseResult], list[Problem]]:
    """Run the test files of every built channel (or only the one named). Returns results and load problems."""
    built = build(cfg, testing=True)
    problems = list(built.problems)
    results: list[CaseResult] = []
    for name, channel in sorted(built.channels.items()):
        if only and name != only:
            continue
        cfile = cfg.channel_files[name]
        tfile = cfile.with_name(cfile.stem + "_test.yaml")
        if not tfile.is_file():
            continue
        data = load_yaml(tfile, cfg.hub.env, problems)
        if data is None:
            continue
        try:
            spec = TestFile.model_validate(data)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, data, str(tfile)))
            continue
        batches = {d: asm for (ch, d), (_, asm) in built.batches.items() if ch == name}
        for case in spec.tests:
            results.append(_run_case(channel, case, cfg, batches))
    return results, problems


def untested_channels(cfg: Config) -> list[str]:
    return [
        c.name
        for c in cfg.channels
        if not cfg.channel_files[c.name].with_name(cfg.channel_files[c.name].stem + "_test.yaml").is_file()
    ]
