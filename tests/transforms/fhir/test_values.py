"""FHIR R4 primitive values (hub.transforms.fhir.values): the R4 regexes plus real calendar dates, clock ranges,
timezones and precision; system URIs made from names and back."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from hub.transforms.fhir import values as v
from hub.transforms.fhir.values import name_of_system_uri, problem, system_uri_of

ARABIC_INDIC = "\u0662\u0660\u0662\u0662"  # "2022" in Arabic-Indic digits


# ----------------------------------------------------------------------------- the values of issue 12
@pytest.mark.parametrize(
    "type_code, value",
    [
        ("dateTime", "2017-01-22T26:56"),  # hour 26, and no seconds (nor a zone)
        ("date", "2022-02-29"),
        ("date", "9999-99-99"),
        ("dateTime", "2022-02-29"),
        ("uri", "urn:hub:id:NIST MPI"),
        ("uri", "urn:hub:code-system:POST 12H CFST:SOMETHING"),
    ],
)
def test_the_values_the_server_refused_are_invalid(type_code, value):
    reason = problem(type_code, value)
    assert reason and value not in reason
    assert not v.is_valid(type_code, value)


def test_hour_26_without_seconds_gives_both_reasons():
    reason = problem("dateTime", "2017-01-22T26:56")
    assert "hour" in reason and "seconds" in reason and "timezone" in reason


# ----------------------------------------------------------------------------- dates and times
@pytest.mark.parametrize(
    "value", ["2024", "2024-02", "2024-02-29", "2000-02-29", "0001-01-01", "1900-02-28", "2023-12-31", "2023-04-30"]
)
def test_valid_dates(value):
    assert v.is_date(value) and v.is_datetime(value) and problem("date", value) is None


@pytest.mark.parametrize(
    "value, word",
    [
        ("1900-02-29", "calendar"),  # 1900 is not a leap year (divisible by 100, not by 400)
        ("2023-02-29", "calendar"),
        ("2024-02-30", "calendar"),
        ("2023-04-31", "calendar"),
        ("2023-06-31", "calendar"),
        ("2023-13-01", "month"),
        ("2023-00-10", "month"),
        ("2023-01-00", "day"),
        ("2023-01-32", "day"),
        ("0000-01-01", "year"),
        ("0000", "year"),
        ("2023-1-5", "month"),
        ("20230105", "format"),
        ("2023-01-05T10:00:00Z", "time"),  # a date has no time
        ("", "empty"),
        (" 2023", "format"),
        ("2023\n", "format"),  # fullmatch, not $ (which matches before a final newline)
        ("\u00b2023", "format"),  # '²' is a digit to str.isdigit
        (ARABIC_INDIC, "format"),
        ("2022-0\u00b2-01", "format"),
    ],
)
def test_invalid_dates(value, word):
    reason = problem("date", value)
    assert reason is not None and word in reason, reason
    assert not v.is_date(value)


@pytest.mark.parametrize(
    "value",
    [
        "2017-01-22T10:56:00Z",
        "2017-01-22T10:56:00-06:00",
        "2017-01-22T10:56:00+14:00",
        "2017-01-22T10:56:00-14:00",
        "2017-01-22T10:56:00+13:59",
        "2017-01-22T10:56:00-00:00",
        "2017-01-22T00:00:00.1Z",
        "2017-01-22T23:59:59.123456789012+05:30",  # any number of fraction digits (R4)
        "2016-12-31T23:59:60Z",  # a leap second
        "2016-12-31T17:59:60-06:00",  # the same leap second, local time
        "2024-02-29T12:00:00+01:00",
    ],
)
def test_valid_datetimes(value):
    assert v.is_datetime(value) and problem("dateTime", value) is None
    assert v.is_instant(value) and problem("instant", value) is None


@pytest.mark.parametrize(
    "value, word",
    [
        ("2017-01-22T24:00:00Z", "hour"),
        ("2017-01-22T10:60:00Z", "minute"),
        ("2017-01-22T10:56:61Z", "second"),
        ("2017-01-22T10:56Z", "seconds"),
        ("2017-01-22T10Z", "seconds"),
        ("2017-01-22T10:56:00", "timezone"),  # R4: a time needs a zone
        ("2017-01-22T10:56:00+14:01", "14:00"),
        ("2017-01-22T10:56:00-15:00", "14:00"),
        ("2017-01-22T10:56:00+05:60", "14:00"),
        ("2017-01-22T10:56:00-0600", "+hh:mm"),
        ("2017-01-22T10:56:00.Z", "fraction"),
        ("2017-01-22 10:56:00Z", "T"),
        ("2023-02-29T10:56:00Z", "calendar"),
        ("2017-01-22T1\u0660:56:00Z", "format"),
        ("2017-01-22T10:56:00z", "format"),
    ],
)
def test_invalid_datetimes(value, word):
    reason = problem("dateTime", value)
    assert reason is not None and word in reason, reason
    assert not v.is_datetime(value) and not v.is_instant(value)


def test_instant_needs_full_precision_and_a_zone():
    for value in ("2017", "2017-01", "2017-01-22", "2017-01-22T10:56:00"):
        assert not v.is_instant(value) and problem("instant", value)
    assert v.is_datetime("2017-01-22") and not v.is_instant("2017-01-22")


@pytest.mark.parametrize("value", ["00:00:00", "23:59:59", "12:30:00.5", "23:59:60"])
def test_valid_times(value):
    assert v.is_time(value) and problem("time", value) is None


@pytest.mark.parametrize(
    "value", ["24:00:00", "12:60:00", "12:30", "12:30:00Z", "12:30:00+01:00", "1:30:00", "", "12:3\u0661:00"]
)
def test_invalid_times(value):
    assert not v.is_time(value) and problem("time", value)


def test_every_day_of_every_month_against_the_calendar():
    """Exhaustive for leap/common years and centuries: every MM-DD from 00-00 to 99-99."""
    for year in (1, 4, 1600, 1900, 2000, 2023, 2024, 2100, 9999):
        for month in range(100):
            for day in range(100):
                s = f"{year:04d}-{month:02d}-{day:02d}"
                try:
                    dt.date(year, month, day)
                    real = True
                except ValueError:
                    real = False
                assert v.is_date(s) is real, s
                assert v.is_datetime(s + "T12:00:00Z") is real, s
                assert (problem("date", s) is None) is real, s


def test_random_datetimes_against_python_datetime():
    """A property test without Hypothesis (not installed here): random parts, some out of range; the oracle is
    Python's datetime (plus the leap second, which it cannot hold)."""
    rnd = random.Random(12)
    for _ in range(20000):
        y, mo, d = rnd.randint(0, 9999), rnd.randint(0, 13), rnd.randint(0, 32)
        h, mi, s = rnd.randint(0, 25), rnd.randint(0, 61), rnd.randint(0, 61)
        zh, zm = rnd.randint(0, 15), rnd.choice((0, 30, 45, 59, 60))
        sign = rnd.choice("+-")
        frac = rnd.choice(("", ".5", ".123", ".000000001"))
        text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{sign}{zh:02d}:{zm:02d}"
        try:
            dt.datetime(y, mo, d, h, mi, min(s, 59))
            ok = y >= 1 and s <= 60 and (zh * 60 + zm <= 14 * 60) and zm <= 59
        except ValueError:
            ok = False
        assert v.is_datetime(text) is ok, text
        assert v.is_instant(text) is ok, text
        assert (problem("dateTime", text) is None) is ok, text


def test_hypothesis_property_if_installed():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.given(st.dates(min_value=dt.date(1, 1, 1)), st.times(), st.integers(-14 * 60, 14 * 60))
    @hypothesis.settings(max_examples=500, deadline=None)
    def prop(date, time, offset):
        zone = f"{'+' if offset >= 0 else '-'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        assert v.is_date(date.isoformat())
        assert v.is_datetime(f"{date.isoformat()}T{time.isoformat()}{zone}")
        assert v.is_time(time.isoformat())

    @hypothesis.given(st.text(max_size=30))
    @hypothesis.settings(max_examples=500, deadline=None)
    def never_raises(text):
        for t in v.PRIMITIVE_TYPES:
            assert isinstance(v.is_valid(t, text), bool)
            r = problem(t, text)
            assert r is None or isinstance(r, str)

    prop()
    never_raises()


# ----------------------------------------------------------------------------- numbers and booleans
def test_booleans_and_numbers_are_json_types():
    assert problem("boolean", True) is None and problem("boolean", False) is None
    assert problem("boolean", "true") and problem("boolean", 1)
    assert (
        problem("integer", 0) is None and problem("integer", -(2**31)) is None and problem("integer", 2**31 - 1) is None
    )
    assert problem("integer", 2**31) and problem("integer", -(2**31) - 1) and problem("integer", True)
    assert problem("integer", 1.5) and problem("integer", "5")  # JSON: a number, not text
    assert problem("positiveInt", 1) is None and problem("positiveInt", 0) and problem("positiveInt", -1)
    assert problem("unsignedInt", 0) is None and problem("unsignedInt", -1) and problem("unsignedInt", 2**31)
    assert (
        problem("decimal", 1) is None
        and problem("decimal", 68.5) is None
        and problem("decimal", Decimal("1.50")) is None
    )
    for bad in (float("nan"), float("inf"), Decimal("NaN"), True, "1.5", None):
        assert problem("decimal", bad), bad


def test_number_text_for_the_converter():
    assert v.is_decimal("68.5") and v.is_decimal("-0.5") and v.is_decimal("1e3") and v.is_decimal("0")
    for bad in ("", "01", "1.", ".5", "+1", "1,5", "NaN", "Infinity", "\u0661", "1\u00b2", " 1"):
        assert not v.is_decimal(bad), bad
    assert (
        v.is_integer("-12")
        and not v.is_integer("012")
        and not v.is_integer("2147483648")
        and not v.is_integer("\u0661")
    )
    assert (
        v.is_positive_int("1") and not v.is_positive_int("0") and v.is_unsigned_int("0") and not v.is_unsigned_int("-0")
    )
    assert v.is_integer("-0")  # R4's integer regex allows it; unsignedInt's does not


# ----------------------------------------------------------------------------- text types
def test_strings():
    assert (
        problem("string", "JANE") is None
        and problem("string", " a\tb\r\n") is None
        and problem("string", "é ü 日本") is None
    )
    assert "empty" in problem("string", "")
    assert "whitespace" in problem("string", " \t\r\n")
    assert "whitespace" in problem("string", "\u00a0")  # a no-break space is no content either
    assert "control" in problem("string", "a\x00b") and "control" in problem("string", "a\x0bb")
    assert problem("string", "x" * (1024 * 1024)) is None and "1 MiB" in problem("string", "x" * (1024 * 1024 + 1))
    assert problem("string", 5) and problem("string", None)
    assert problem("markdown", "# title\n\n*text*") is None and problem("markdown", "  ")


@pytest.mark.parametrize("value", ["male", "in-progress", "a b", "ORU^R01", "é"])
def test_valid_codes(value):
    assert v.is_code(value) and problem("code", value) is None


@pytest.mark.parametrize("value", ["", " a", "a ", "a  b", "a\tb", "a\nb", "a\u00a0b", "a\x01b"])
def test_invalid_codes(value):
    assert not v.is_code(value) and problem("code", value)


def test_ids():
    assert v.is_id("a") and v.is_id("A-1.b") and v.is_id("x" * 64)
    for bad in ("", "x" * 65, "a_b", "a b", "a/b", "é", "\u0661"):
        assert not v.is_id(bad) and problem("id", bad), bad


def test_uris():
    for ok in ("http://loinc.org", "urn:oid:1.2.3", "Patient/1", "#p1", "urn:hub:id:NIST%20MPI", "a"):
        for t in ("uri", "url", "canonical"):
            assert problem(t, ok) is None, ok
    for bad in ("", "a b", "a\tb", "a\u00a0b", "http://x/\x7f", " http://x"):
        assert problem("uri", bad) and not v.is_uri(bad), bad


def test_oids_and_uuids():
    assert v.is_oid("urn:oid:2.16.840.1.113883.6.1") and v.is_oid("urn:oid:0.1")
    for bad in ("2.16.840", "urn:oid:3.1", "urn:oid:1", "urn:oid:1.02", "urn:oid:1..2", "urn:oid:1.\u0662"):
        assert problem("oid", bad), bad
    assert v.is_uuid("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")
    for bad in (
        "c757873d-ec9a-4326-a141-556f43239520",
        "urn:uuid:C757873D-EC9A-4326-A141-556F43239520",
        "urn:uuid:c757873d-ec9a-4326-a141-556f4323952",
    ):
        assert problem("uuid", bad), bad


def test_base64():
    for ok in ("aGVsbG8=", "aGVsbA==", "aGVs", "aG Vs\r\nbG8=", "+/+/"):
        assert problem("base64Binary", ok) is None, ok
    for bad in ("", "aGVsbG8", "aGV=sbG8", "aGVsbG8===", "a===", "aGVs!", "aGVsbG8=\u0661"):
        assert problem("base64Binary", bad), bad


def test_xhtml_and_unknown_types():
    assert problem("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml">x</div>') is None and problem("xhtml", "x")
    assert "not a FHIR primitive type" in problem("CodeableConcept", {})
    assert v.checker("date") is v.is_date and v.checker("Coding") is None


def test_reasons_never_quote_the_value():
    secret = "DOE^JANE 1980"
    for t in v.PRIMITIVE_TYPES:
        r = problem(t, secret)
        assert r is None or secret not in r


# ----------------------------------------------------------------------------- system URIs from names
@pytest.mark.parametrize(
    "name, uri",
    [
        ("NIST MPI", "urn:hub:id:NIST%20MPI"),
        ("EXAMPLE_CLINIC", "urn:hub:id:EXAMPLE_CLINIC"),
        ("POST 12H CFST:x", "urn:hub:id:POST%2012H%20CFST%3Ax"),
        ("2.16.840.1.113883.19", "urn:oid:2.16.840.1.113883.19"),
        ("C757873D-EC9A-4326-A141-556F43239520", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
        ("http://loinc.org", "http://loinc.org"),
        ("urn:oid:2.16.840.1.113883.6.1", "urn:oid:2.16.840.1.113883.6.1"),
        ("Ünïcode", "urn:hub:id:%C3%9Cn%C3%AFcode"),
        ("100%", "urn:hub:id:100%25"),
        ("a~b.c-d", "urn:hub:id:a~b.c-d"),
        ("http://x y", "urn:hub:id:http%3A%2F%2Fx%20y"),  # not a URI (a space): encoded
        ("urn:hub:id:X", "urn:hub:id:urn%3Ahub%3Aid%3AX"),  # starts with the prefix: encoded, so it comes back
        ("3.1", "urn:hub:id:3.1"),  # not an OID (arc 0-2)
    ],
)
def test_system_uri_of(name, uri):
    assert system_uri_of(name, "urn:hub:id:") == uri
    assert v.is_uri(uri)
    back = name_of_system_uri(uri, "urn:hub:id:")
    if name.startswith("C757873D"):
        assert back == name.lower()
    elif name.startswith("urn:oid:"):
        assert back == name[8:]
    else:
        assert back == name


def test_system_uri_round_trip_random_names():
    rnd = random.Random(7)
    alphabet = "AZaz09 -._~:/?#[]@!$&'()*+,;=%\"<>\\^`{|}é日\t"
    for _ in range(5000):
        name = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12)))
        uri = system_uri_of(name, "urn:hub:code-system:")
        assert v.is_uri(uri) and uri == system_uri_of(name, "urn:hub:code-system:")
        assert name_of_system_uri(uri, "urn:hub:code-system:") == name, name


def test_system_uri_edges():
    with pytest.raises(ValueError):
        system_uri_of("", "urn:hub:id:")
    assert name_of_system_uri("urn:hub:id:%FF", "urn:hub:id:") == "%FF"  # not UTF-8: kept as it is
    assert name_of_system_uri("http://loinc.org", "urn:hub:id:") == "http://loinc.org"
