"""The conditions of the v2 → FHIR tables, in the HL7 v2-to-FHIR IG's own wording (see mappings/fhir/README.md).

Written by hand: the IG's condition column is semi-formal English (``IF PID-11 LST.COUNT EQUALS 1 AND PID-11.9 IS
NOT VALUED``), which no parser library knows. A condition is parsed once, when the tables are loaded, into a Python
closure over a reader object that answers ``value(path)``, ``count(path)`` and ``present(segment)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Path", "parse_condition", "parse_source", "Reader", "ConditionError"]


class ConditionError(ValueError):
    pass


@dataclass(frozen=True)
class Path:
    """A source: ``PID-11.9`` (segment, field 11, component 9), ``XAD.7`` (component 7 of the value a data type
    map reads), ``ORC`` (a segment, for presence)."""

    seg: str  # segment ID, or the data type name for a component path
    field: int  # 0 for a data type component path or a bare segment
    comps: tuple[int, ...]  # component (, subcomponent) numbers
    datatype: bool = False

    def __str__(self) -> str:
        if self.datatype:
            return f"{self.seg}." + ".".join(map(str, self.comps))
        if not self.field:
            return self.seg
        return f"{self.seg}-{self.field}" + "".join(f".{c}" for c in self.comps)


_SEG_PATH = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)((?:\.\d+)*)$")
_DT_PATH = re.compile(r"^([A-Z][A-Z0-9]{1,3})\.(\d+)((?:\.\d+)*)$")
_SEG = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def parse_source(text: str) -> Path:
    """``PID-3`` / ``PID-11.9`` / ``XAD.7`` / ``CWE.1.2`` → :class:`Path`."""
    t = text.strip()
    m = _SEG_PATH.match(t)
    if m:
        comps = tuple(int(x) for x in m.group(3).split(".")[1:])
        return Path(m.group(1), int(m.group(2)), comps)
    m = _DT_PATH.match(t)
    if m:
        comps = (int(m.group(2)), *(int(x) for x in m.group(3).split(".")[1:]))
        return Path(m.group(1), 0, comps, True)
    if _SEG.match(t):
        return Path(t, 0, ())
    raise ConditionError(f"{text!r} is not a v2 path (PID-3, PID-11.9, XAD.7 or a segment ID)")


class Reader(Protocol):
    def value(self, path: Path) -> str: ...

    def count(self, path: Path) -> int: ...

    def present(self, segment: str) -> bool: ...

    def valued(self, path: Path) -> bool: ...  # a whole field: any component of it has a value


Cond = Callable[[Any], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"[^"]*"|'[^']*'|“[^”]*”)
      | (?P<op>==|!=|<>|>=|<=|=|>|<|\(|\)|,)
      | (?P<word>[A-Za-z0-9_.\-+*/:#@$%&]+)
    )""",
    re.X,
)

_COMPARE_WORDS = [  # longest first
    (("GREATER", "THAN", "OR", "EQUALS"), ">="),
    (("GREATER", "THAN", "OR", "EQUAL"), ">="),
    (("LESS", "THAN", "OR", "EQUALS"), "<="),
    (("LESS", "THAN", "OR", "EQUAL"), "<="),
    (("GREATER", "THAN"), ">"),
    (("LESS", "THAN"), "<"),
    (("EQUALS",), "="),
    (("EQUAL", "TO"), "="),
    (("EQUAL",), "="),
    (("IS",), "="),
]


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ConditionError(f"cannot read {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group("str") is not None:
            out.append(("str", m.group("str")[1:-1]))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            out.append(("word", m.group("word")))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = [t for t in _tokens(text) if not (t[0] == "word" and t[1].upper() == "IF")]
        self.i = 0

    # ------------------------------------------------------------------ token helpers
    def peek(self, k: int = 0) -> tuple[str, str] | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def word(self, k: int = 0) -> str:
        t = self.peek(k)
        return t[1].upper() if t is not None and t[0] == "word" else ""

    def take_words(self, *words: str) -> bool:
        if all(self.word(k) == w for k, w in enumerate(words)):
            self.i += len(words)
            return True
        return False

    def take_op(self, op: str) -> bool:
        t = self.peek()
        if t == ("op", op):
            self.i += 1
            return True
        return False

    def fail(self, what: str) -> ConditionError:
        return ConditionError(f"condition {self.text!r}: {what}")

    # ------------------------------------------------------------------ grammar
    def parse(self) -> Cond:
        cond = self.expr()
        rest = self.peek()
        if rest is not None:
            raise self.fail(f"unexpected {rest[1]!r}")
        return cond

    def expr(self) -> Cond:
        parts = [self.conj()]
        while self.take_words("OR"):
            parts.append(self.conj())
        if len(parts) == 1:
            return parts[0]
        alternatives = tuple(parts)

        def any_of(r: Any) -> bool:
            return any(p(r) for p in alternatives)

        return any_of

    def conj(self) -> Cond:
        parts = [self.unary()]
        while self.take_words("AND"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        conjuncts = tuple(parts)

        def all_of(r: Any) -> bool:
            return all(p(r) for p in conjuncts)

        return all_of

    def unary(self) -> Cond:
        if self.take_words("NOT"):
            inner = self.unary()
            return lambda r: not inner(r)
        if self.take_op("("):
            inner = self.expr()
            if not self.take_op(")"):
                raise self.fail("a ')' is missing")
            return inner
        return self.test()

    def literal(self) -> str:
        t = self.peek()
        if t is None or t[0] == "op":
            raise self.fail("a value is missing")
        self.i += 1
        return t[1]

    def literals(self) -> frozenset[str]:
        if not self.take_op("("):
            raise self.fail("IN needs a list in parentheses")
        vals = []
        while True:
            t = self.peek()
            if t is None:
                raise self.fail("a ')' is missing")
            if t == ("op", ")"):
                self.i += 1
                break
            if t == ("op", ","):
                self.i += 1
                continue
            self.i += 1
            vals.append(t[1].strip('"'))
        return frozenset(vals)

    def compare_op(self) -> str | None:
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in ("=", "==", ">", "<", ">=", "<=", "!=", "<>"):
            self.i += 1
            return {"==": "=", "<>": "!="}.get(t[1], t[1])
        for words, op in _COMPARE_WORDS:
            if self.take_words(*words):
                return op
        return None

    def number(self) -> int:
        t = self.literal()
        try:
            return int(t)
        except ValueError:
            raise self.fail(f"{t!r} is not a number") from None

    def test(self) -> Cond:
        t = self.peek()
        if t is None or t[0] != "word" or t[1].upper() in _KEYWORDS:
            raise self.fail("a path (PID-3, XAD.7, ORC) is expected")
        self.i += 1
        try:
            path = parse_source(t[1])
        except ConditionError as exc:
            raise self.fail(str(exc)) from None
        # what follows the path
        if self.take_words("LST.COUNT") or self.take_words("COUNT"):
            op = self.compare_op()
            if op is None:
                raise self.fail("COUNT needs a comparison")
            n = self.number()
            return _numeric(op, n, lambda r: r.count(path))
        if self.take_words("LENGTH"):
            op = self.compare_op()
            if op is None:
                raise self.fail("LENGTH needs a comparison")
            n = self.number()
            return _numeric(op, n, lambda r: len(r.value(path)))
        if (
            self.take_words("IS", "NOT", "VALUED")
            or self.take_words("NOT", "VALUED")
            or self.take_words("IS", "EMPTY")
            or self.take_words("DOES", "NOT", "EXIST")
        ):
            return _valued(path, False)
        if (
            self.take_words("IS", "VALUED")
            or self.take_words("VALUED")
            or self.take_words("EXISTS")
            or self.take_words("IS", "PRESENT")
        ):
            return _valued(path, True)
        if self.take_words("CONTAINS"):
            val = self.literal()
            return lambda r: val in r.value(path)
        if self.take_words("NOT", "CONTAINS") or self.take_words("DOES", "NOT", "CONTAIN"):
            val = self.literal()
            return lambda r: val not in r.value(path)
        if self.take_words("NOT", "IN") or self.take_words("IS", "NOT", "IN"):
            vals = self.literals()
            return lambda r: r.value(path) not in vals
        if self.take_words("IN") or self.take_words("IS", "IN"):
            vals = self.literals()
            return lambda r: r.value(path) in vals
        if (
            self.take_words("NOT", "EQUALS")
            or self.take_words("IS", "NOT")
            or self.take_words("NOT", "EQUAL", "TO")
            or (self.word() == "NOT" and (after := self.peek(1)) is not None and after[0] == "str")
        ):
            if self.word() == "NOT":
                self.i += 1
            val = self.literal()
            return lambda r: r.value(path) != val
        op = self.compare_op()
        if op is not None:
            val = self.literal()
            if op in ("=", "!="):
                return (lambda r: r.value(path) == val) if op == "=" else (lambda r: r.value(path) != val)
            try:
                bound = float(val)
            except ValueError:
                raise self.fail(f"{val!r} is not a number") from None
            return _numeric(op, bound, lambda r: _num(r.value(path)))
        return _valued(path, True)  # a bare path: it is valued ("IF PID-33 AND PID-34 VALUED")


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _numeric(op: str, n: float, get: Callable[[Any], float]) -> Cond:
    if op == "=":
        return lambda r: get(r) == n
    if op == "!=":
        return lambda r: get(r) != n
    if op == ">":
        return lambda r: get(r) > n
    if op == "<":
        return lambda r: get(r) < n
    if op == ">=":
        return lambda r: get(r) >= n
    return lambda r: get(r) <= n


def _valued(path: Path, want: bool) -> Cond:
    if not path.field and not path.datatype:  # a bare segment: is it in the message (group)?
        return (lambda r: r.present(path.seg)) if want else (lambda r: not r.present(path.seg))
    if not path.comps and not path.datatype:  # a whole field: valued when any component is (ORC-7 = ^^^2026…^^R)
        return (lambda r: r.valued(path)) if want else (lambda r: not r.valued(path))
    return (lambda r: r.value(path) != "") if want else (lambda r: r.value(path) == "")


def parse_condition(text: str) -> tuple[Cond, list[Path]] | None:
    """The condition as a function of a :class:`Reader`, and the paths it reads; None for an empty condition."""
    if not text or not text.strip():
        return None
    p = _Parser(text)
    cond = p.parse()
    paths = []
    for kind, tok in p.toks:
        if kind == "word" and tok.upper() not in _KEYWORDS:
            try:
                paths.append(parse_source(tok))
            except ConditionError:
                pass
    return cond, paths


_KEYWORDS = {
    "AND",
    "OR",
    "NOT",
    "IS",
    "IN",
    "EQUALS",
    "EQUAL",
    "TO",
    "VALUED",
    "EMPTY",
    "DOES",
    "EXIST",
    "EXISTS",
    "COUNT",
    "LST.COUNT",
    "LENGTH",
    "GREATER",
    "LESS",
    "THAN",
    "PRESENT",
    "CONTAINS",
    "CONTAIN",
}
