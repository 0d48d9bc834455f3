"""FHIR R4 primitive values: fast checks for the converter's hot path and for ``fhir_validate``.

The rules are the regular expressions of https://hl7.org/fhir/R4/datatypes.html plus what a regular expression
cannot say::

    problem("date", "2022-02-29")        # -> "not a real calendar date (day past the end of the month)"
    problem("dateTime", "2017-01-22T26:56") # -> "hour must be 00-23; a time needs minutes, seconds and a timezone"
    is_datetime("2017-01-22T10:56:00-06:00")  # -> True
    system_uri_of("NIST MPI", "urn:hub:id:")  # -> "urn:hub:id:NIST%20MPI"; name_of_system_uri gives the name back

Values are checked as they appear in FHIR JSON: a boolean is a JSON ``true``/``false``, integer and decimal types
are JSON numbers, everything else a JSON string. The ``is_*`` number functions also accept the number's text
(``is_decimal("68.5")``) because the converter checks v2 text before it turns it into a number; :func:`problem`
does not (a string where FHIR JSON wants a number is a real error).

Decisions beyond the regular expressions (each one what a real server — Medplum — refuses, or what R4's prose says):

* dates: the day must exist in its month (``2022-02-29``, ``2023-04-31``, ``9999-99-99`` are invalid; 2000 and 2024
  are leap years, 1900 is not); year 0000 is invalid (the R4 regex says so).
* dateTime: with a time it needs hours, minutes, seconds and a timezone (R4); the offset is at most ±14:00.
* leap second: ``:60`` is accepted wherever the R4 regex accepts it (any minute). Leap seconds are real, the
  regex allows them and servers that apply the spec's regex (Medplum does) accept them; with offsets such as
  +05:30 a leap second falls on a local minute other than :59, so a tighter rule would reject real values.
* fractional seconds: any number of digits (R4). Medplum allows at most 9; the converter writes at most 4.
* string and markdown: not empty, not only whitespace (R4: "SHOULD always contain non-whitespace content" — in XML
  it would be trimmed to nothing; Medplum refuses it), no control characters other than tab, CR and LF (R4 says
  SHOULD NOT; XML cannot carry them; Medplum refuses them), at most 1 MiB characters for string.
* code: no leading, trailing or doubled whitespace; only single spaces inside (the datatypes page's
  ``[^\\s]+( [^\\s]+)*``). ``\\s`` is Unicode whitespace here: a no-break space does not count as content.
* uri/url/canonical: non-empty, no whitespace and no control characters (R4 ``\\S*``; an empty value is not
  allowed in JSON). Relative URIs are valid ``uri`` values; whether a *system* must be absolute is the caller's rule.
* base64Binary: groups of 4 characters of ``A-Za-z0-9+/`` with ``=`` only as the final padding; whitespace
  between groups is allowed (R4; Medplum refuses it — the converter never writes any).
* digits are ASCII ``0-9`` wherever the spec says ``[0-9]``: '²' or Arabic-Indic digits are invalid (Python's
  ``\\d``, ``int()`` and ``str.isdigit`` accept them, so none of those is used on unchecked text).

Reasons never quote the value: values can be PHI.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "PRIMITIVE_TYPES",
    "problem",
    "is_valid",
    "checker",
    "is_boolean",
    "is_integer",
    "is_positive_int",
    "is_unsigned_int",
    "is_decimal",
    "is_string",
    "is_markdown",
    "is_code",
    "is_id",
    "is_uri",
    "is_url",
    "is_canonical",
    "is_oid",
    "is_uuid",
    "is_base64",
    "is_date",
    "is_datetime",
    "is_instant",
    "is_time",
    "is_xhtml",
    "system_uri_of",
    "name_of_system_uri",
]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_STRING_MAX = 1024 * 1024

# --- regular expressions, compiled once. [0-9] (never \d) so only ASCII digits match; fullmatch, never $ (which
# also matches before a final newline).
_YEAR = r"(?:[0-9](?:[0-9](?:[0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"  # 0001-9999, R4's own spelling
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
_ZONE = r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_DATE_RE = re.compile(_YEAR + r"(?:-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12][0-9]|3[01]))?)?")
_DATETIME_RE = re.compile(
    _YEAR + r"(?:-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12][0-9]|3[01])(?:T" + _TIME + _ZONE + r")?)?)?"
)
_INSTANT_RE = re.compile(_YEAR + r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T" + _TIME + _ZONE)
_TIME_RE = re.compile(_TIME)
_INTEGER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_CODE_RE = re.compile(r"[^\s]+(?: [^\s]+)*")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_URI_BAD = re.compile(r"[\s\x00-\x1f\x7f]")  # whitespace (Unicode) or a control character anywhere
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # controls except tab, LF, CR
_OID_RE = re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+")
_UUID_RE = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)")
_BASE64_WS = re.compile(r"[ \t\r\n]+")
_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/= \t\r\n]*")
_WS = " \t\r\n"
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _day_exists(s: str) -> bool:
    """``s`` matched a date regex and has a day: does that day exist in that month? (Only days 29-31 can fail.)"""
    if s[8:10] <= "28":
        return True
    day, month = int(s[8:10]), int(s[5:7])  # ASCII digits: the regex matched
    if month != 2:
        return day <= _MONTH_DAYS[month]
    if day > 29:
        return False
    year = int(s[0:4])
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# --- the checks, each value -> bool, no exception on any input
def is_boolean(v: Any) -> bool:
    return v is True or v is False


def _int_value(v: Any) -> int | None:
    if type(v) is int:
        return v
    if type(v) is str and _INTEGER_RE.fullmatch(v) is not None:
        return int(v)
    return None


def is_integer(v: Any) -> bool:
    """A 32-bit integer: a JSON number without fraction (or its text)."""
    n = _int_value(v)
    return n is not None and _INT_MIN <= n <= _INT_MAX


def is_positive_int(v: Any) -> bool:
    n = _int_value(v)
    return n is not None and 1 <= n <= _INT_MAX and not (type(v) is str and v[0] == "-")


def is_unsigned_int(v: Any) -> bool:
    n = _int_value(v)
    return n is not None and 0 <= n <= _INT_MAX and not (type(v) is str and v[0] == "-")  # R4: no "-0"


def is_decimal(v: object) -> bool:
    """A finite number (int, float, Decimal — not bool) or its text per R4's decimal regex."""
    if type(v) is int:
        return True
    if type(v) is float:
        return math.isfinite(v)
    if type(v) is str:
        return _DECIMAL_RE.fullmatch(v) is not None
    if type(v) is Decimal:
        return v.is_finite()
    return False


# str.isprintable() is a fast first answer: True means no control character and no whitespace but the space
def is_string(v: Any) -> bool:
    if type(v) is not str or len(v) > _STRING_MAX:
        return False
    if v.isprintable():
        return v.strip(" ") != ""
    return v.strip() != "" and _CONTROL.search(v) is None


def is_markdown(v: Any) -> bool:
    return type(v) is str and v.strip() != "" and _CONTROL.search(v) is None


def is_code(v: Any) -> bool:
    return type(v) is str and _CODE_RE.fullmatch(v) is not None and _CONTROL.search(v) is None


def is_id(v: Any) -> bool:
    return type(v) is str and _ID_RE.fullmatch(v) is not None


def is_uri(v: Any) -> bool:
    """uri, url and canonical: non-empty, no whitespace, no control characters."""
    return type(v) is str and v != "" and ((v.isprintable() and " " not in v) or _URI_BAD.search(v) is None)


is_url = is_uri
is_canonical = is_uri


def is_oid(v: Any) -> bool:
    return type(v) is str and _OID_RE.fullmatch(v) is not None


def is_uuid(v: Any) -> bool:
    return type(v) is str and _UUID_RE.fullmatch(v) is not None


def is_base64(v: Any) -> bool:
    """Groups of 4 of A-Za-z0-9+/ with '=' padding only at the end; whitespace between characters is allowed (R4)."""
    if type(v) is not str:
        return False
    if _BASE64_RE.fullmatch(v) is not None:
        return True
    return _BASE64_WS.search(v) is not None and _BASE64_RE.fullmatch(_BASE64_WS.sub("", v)) is not None


def is_date(v: Any) -> bool:
    """YYYY, YYYY-MM or YYYY-MM-DD, a real calendar date."""
    return type(v) is str and _DATE_RE.fullmatch(v) is not None and (len(v) < 10 or _day_exists(v))


def is_datetime(v: Any) -> bool:
    """A date, or a full date with hh:mm:ss[.fff] and a timezone."""
    return type(v) is str and _DATETIME_RE.fullmatch(v) is not None and (len(v) < 10 or _day_exists(v))


def is_instant(v: Any) -> bool:
    """A full date, hh:mm:ss[.fff] and a timezone."""
    return type(v) is str and _INSTANT_RE.fullmatch(v) is not None and _day_exists(v)


def is_time(v: Any) -> bool:
    """hh:mm:ss[.fff], no timezone."""
    return type(v) is str and _TIME_RE.fullmatch(v) is not None


def is_xhtml(v: Any) -> bool:
    """Narrative.div: a string holding a ``<div>`` element (the content itself is not parsed)."""
    return type(v) is str and v.lstrip().startswith("<div")


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "boolean": is_boolean,
    "integer": lambda v: type(v) is int and _INT_MIN <= v <= _INT_MAX,
    "positiveInt": lambda v: type(v) is int and 1 <= v <= _INT_MAX,
    "unsignedInt": lambda v: type(v) is int and 0 <= v <= _INT_MAX,
    "decimal": lambda v: type(v) is not str and is_decimal(v),
    "string": is_string,
    "markdown": is_markdown,
    "code": is_code,
    "id": is_id,
    "uri": is_uri,
    "url": is_uri,
    "canonical": is_uri,
    "oid": is_oid,
    "uuid": is_uuid,
    "base64Binary": is_base64,
    "date": is_date,
    "dateTime": is_datetime,
    "instant": is_instant,
    "time": is_time,
    "xhtml": is_xhtml,
}
PRIMITIVE_TYPES: frozenset[str] = frozenset(_CHECKS)


def checker(type_code: str) -> Callable[[Any], bool] | None:
    """The JSON-value check of a primitive type (as :func:`problem` applies it), or None for a type that is not
    primitive. For loops that check many values of known types: look the function up once."""
    return _CHECKS.get(type_code)


def is_valid(type_code: str, value: Any) -> bool:
    """Is ``value`` a valid FHIR JSON value of primitive type ``type_code``? (Unknown types: False.)"""
    check = _CHECKS.get(type_code)
    return check is not None and check(value)


def problem(type_code: str, value: Any) -> str | None:
    """None when ``value`` is a valid FHIR JSON value of the primitive type ``type_code``, else a short reason that
    does not quote the value. A type that is not primitive gives a reason too."""
    check = _CHECKS.get(type_code)
    if check is None:
        return f"{type_code} is not a FHIR primitive type"
    if check(value):
        return None
    return _reason(type_code, value)


# --- reasons (the slow path: only for invalid values)
_JSON_KIND = {
    "boolean": "a JSON boolean (true or false)",
    "integer": "a JSON integer",
    "positiveInt": "a JSON integer",
    "unsignedInt": "a JSON integer",
    "decimal": "a JSON number",
}
_LOOSE_DT = re.compile(
    r"(?P<y>[0-9]{4})(?:-(?P<mo>[0-9]{1,2})(?:-(?P<d>[0-9]{1,2})"
    r"(?:[T ](?P<h>[0-9]{1,2})(?::(?P<mi>[0-9]{1,2})(?::(?P<s>[0-9]{1,2})(?P<f>\.[0-9]*)?)?)?"
    r"(?P<tz>Z|[+-](?P<tzh>[0-9]{2}):?(?P<tzm>[0-9]{2})?)?)?)?)?"
)
_FORMATS = {
    "date": "YYYY, YYYY-MM or YYYY-MM-DD",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff]+zz:zz",
    "instant": "YYYY-MM-DDThh:mm:ss[.fff]+zz:zz",
}


def _reason(t: str, v: Any) -> str:
    want = _JSON_KIND.get(t)
    if want is not None:
        if t == "boolean" or type(v) is bool or type(v) not in (int, float, Decimal):
            return f"must be {want}"
        if t == "decimal":
            return "must be a finite number"
        if type(v) is not int:
            return "must be a whole number"
        return {
            "integer": "out of the 32-bit integer range",
            "positiveInt": "must be 1 to 2147483647",
            "unsignedInt": "must be 0 to 2147483647",
        }[t]
    if type(v) is not str:
        return "must be a JSON string"
    if v == "":
        return "must not be empty"
    if t in ("date", "dateTime", "instant"):
        return _date_reason(t, v)
    if t == "time":
        h, mi, sec = (v.split(":", 2) + [None, None])[:3]
        return _clock_reasons(h or "", mi, sec) or "not in the format hh:mm:ss[.fff]"
    if t in ("string", "markdown"):
        if v.strip() == "":
            return "must contain more than whitespace"
        if _CONTROL.search(v):
            return "contains a control character (only tab, CR and LF are allowed)"
        return "longer than 1 MiB"
    if t == "code":
        if _CONTROL.search(v):
            return "contains a control character"
        return "a code has no leading, trailing or repeated whitespace, and only single spaces inside"
    if t == "id":
        return (
            "an id is 1-64 characters of A-Z, a-z, 0-9, '-' and '.'"
            if len(v) <= 64
            else "an id is at most 64 characters"
        )
    if t in ("uri", "url", "canonical"):
        return "a URI has no whitespace or control characters"
    if t == "oid":
        return "an oid is urn:oid: and dot-separated numbers starting 0, 1 or 2, without leading zeros"
    if t == "uuid":
        return "a uuid is urn:uuid: and a lowercase 8-4-4-4-12 hexadecimal UUID"
    if t == "base64Binary":
        if not _BASE64_CHARS.fullmatch(v):
            return "base64 has only A-Z, a-z, 0-9, '+', '/' and '=' padding"
        return "base64 comes in groups of 4 characters, with '=' only as padding at the end"
    if t == "xhtml":
        return "a narrative is a <div> element"
    return "invalid"


def _clock_reasons(h: str, mi: str | None, s: str | None) -> str:
    """What is wrong with hh, mm and ss[.fff] ('' when they are not even two-digit numbers)."""
    out = []
    frac = None
    if s is not None and "." in s:
        s, _, frac = s.partition(".")
    for part, name, top in ((h, "hour", 23), (mi, "minute", 59), (s, "second", 60)):
        if part is None:
            continue
        if len(part) != 2 or not part.isascii() or not part.isdigit():
            return ""
        if int(part) > top:
            out.append(
                f"{name} must be 00-{top}" if name != "second" else "second must be 00-59 (60 for a leap second)"
            )
    if frac is not None and (frac == "" or not (frac.isascii() and frac.isdigit())):
        out.append("fractional seconds need digits after the point")
    if (mi is None or s is None) and not out:
        out.append("needs hh:mm:ss")
    return "; ".join(out)


def _date_reason(t: str, v: str) -> str:
    m = _LOOSE_DT.fullmatch(v)
    if m is None:
        return f"not in the R4 {t} format ({_FORMATS[t]})"
    y, mo, d, h = m["y"], m["mo"], m["d"], m["h"]
    out = []
    if y == "0000":
        out.append("year must be 0001-9999")
    if mo is not None and (len(mo) != 2 or not 1 <= int(mo) <= 12):
        out.append("month must be 01-12")
    elif d is not None and (len(d) != 2 or not 1 <= int(d) <= 31):
        out.append("day must be 01-31")
    elif d is not None and not _day_exists(f"{y}-{mo}-{d}"):
        out.append("not a real calendar date (day past the end of the month)")
    if t == "date" and h is not None:
        out.append("a date has no time")
    elif t == "instant" and (d is None or h is None):
        out.append("an instant needs a full date, a time and a timezone")
    elif h is not None:
        if "T" not in v:
            out.append("the time is separated from the date by T")
        clock = _clock_reasons(h, m["mi"], m["s"] + (m["f"] or "") if m["s"] else None)
        if clock:
            out.append(clock)
        if m["mi"] is None or m["s"] is None:
            out.append("a time needs minutes, seconds and a timezone")
        elif m["tz"] is None:
            out.append("a time needs a timezone (Z or +hh:mm)")
    if m["tz"] is not None and m["tz"] != "Z":
        tzh, tzm = m["tzh"], m["tzm"]
        if tzm is None or ":" not in m["tz"]:
            out.append("a timezone offset is +hh:mm or -hh:mm")
        elif int(tzh) * 60 + int(tzm) > 14 * 60 or int(tzm) > 59:
            out.append("a timezone offset is at most 14:00")
    if not out:  # the regex said no, the loose parse found nothing specific
        out.append(f"not in the R4 {t} format ({_FORMATS[t]})")
    return "; ".join(dict.fromkeys(out))


# --- identifier and code systems from names
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
_BARE_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_BARE_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# RFC 3986 absolute URI: scheme ":" and then only characters a URI may hold (unreserved, reserved, %XX)
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")


def system_uri_of(name: str, prefix: str) -> str:
    """A valid URI for an identifier or code system named ``name``, deterministically:

    * an OID (``2.16.840.1.113883.19``) → ``urn:oid:2.16.840.1.113883.19``;
    * a UUID → ``urn:uuid:`` + the UUID in lowercase;
    * an absolute RFC 3986 URI (``http://loinc.org``, ``urn:oid:…``) → as it is — unless it starts with ``prefix``
      (then it is encoded like any other name, so :func:`name_of_system_uri` can give it back);
    * anything else → ``prefix`` + the name percent-encoded (RFC 3986 unreserved characters ``A-Za-z0-9-._~``
      kept, every other character %XX of its UTF-8 bytes): ``NIST MPI`` → ``urn:hub:id:NIST%20MPI``.

    ``prefix`` is the caller's namespace, e.g. ``urn:hub:id:`` (it must itself be a URI without whitespace).
    An empty name raises ValueError: leave the system out instead.
    """
    if not name:
        raise ValueError("a system needs a name")
    if _UNRESERVED.fullmatch(name):
        if _BARE_OID.fullmatch(name):
            return "urn:oid:" + name
        if _BARE_UUID.fullmatch(name):
            return "urn:uuid:" + name.lower()
        return prefix + name
    if _ABSOLUTE_URI.fullmatch(name) and not name.startswith(prefix):
        return name
    return prefix + quote(name, safe="")


def name_of_system_uri(uri: str, prefix: str) -> str:
    """The inverse of :func:`system_uri_of` for the same ``prefix``: the name a system URI was made from.

    ``prefix`` + encoded name → the name; ``urn:oid:X`` → ``X`` and ``urn:uuid:X`` → ``X`` (v2 carries OIDs and
    UUIDs bare); any other URI → itself. Exact for every name except an OID or UUID already spelled as a URN
    (it comes back bare) and an uppercase UUID (it comes back lowercase).
    """
    if uri.startswith(prefix) and len(uri) > len(prefix):
        rest = uri[len(prefix) :]
        if "%" not in rest:
            return rest
        try:
            return unquote(rest, errors="strict")
        except UnicodeDecodeError:  # not made by system_uri_of (%XX that is not UTF-8): keep it as it is
            return rest
    if uri.startswith("urn:oid:") and _BARE_OID.fullmatch(uri, 8):
        return uri[8:]
    if uri.startswith("urn:uuid:") and _BARE_UUID.fullmatch(uri, 9):
        return uri[9:]
    return uri
