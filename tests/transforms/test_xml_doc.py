"""The XML document: an XPath subset, namespaces matched by local name, get/get_all/set/delete, exact bytes when
unmodified, the declaration and encoding kept when modified, entities refused, errors with line and column — and
properties checked with Hypothesis."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.errors import InputError, MappingError
from hub.message import Message
from hub.transforms.document import check_path, document_of, parse_document
from hub.transforms.xml_doc import XmlDocument, XmlParseError, parse, parse_path

ORDER = """<?xml version="1.0" encoding="ISO-8859-1"?>
<!-- a lab order from the PM -->
<o:order xmlns:o="urn:example:order" xmlns="urn:example:default" id="ORD-1" o:status="new">
  <patient>
    <mrn>MRN001</mrn>
    <name><family>Müller &amp; Söhne</family><given>Jane</given><given>Q</given></name>
    <empty>   </empty>
  </patient>
  <result type="final"><code system="LN">2345-7</code><value>105</value></result>
  <result type="prelim"><code system="LN">718-7</code><value>13.5</value></result>
  <note>see <b>attached</b> report<![CDATA[ <raw> ]]></note>
</o:order>
""".encode("iso-8859-1")


def doc() -> XmlDocument:
    return parse(ORDER)


@pytest.mark.parametrize(
    "path,value",
    [
        ("/order/patient/mrn", "MRN001"),
        ("/o:order/o:patient/o:mrn", "MRN001"),  # prefixes are ignored: local names match
        ("//mrn", "MRN001"),
        ("/order/patient/name/family", "Müller & Söhne"),
        ("/order/patient/name/given[2]", "Q"),
        ("/order/patient/name", "Müller & SöhneJaneQ"),  # an element's string value: all the text inside
        ("/order/@id", "ORD-1"),
        ("/order/@status", "new"),  # o:status by its local name
        ("/order/result[2]/code", "718-7"),
        ("/order/result[@type='prelim']/value", "13.5"),
        ('/order/result[code="2345-7"]/value', "105"),
        ("//result/code/@system", "LN"),
        ("/order/*/mrn", "MRN001"),
        ("/order/note/text()", "see "),
        ("/order/note", "see attached report <raw> "),
        ("/order/patient/empty", None),  # white space only is absent
        ("/order/patient/missing", None),
        ("/other/patient/mrn", None),
        ("/order/result[3]/code", None),
    ],
)
def test_get(path, value):
    assert doc().get(path) == value


def test_get_all():
    d = doc()
    assert d.get_all("//result/code") == ["2345-7", "718-7"]
    assert d.get_all("/order/patient/name/given") == ["Jane", "Q"]
    assert d.get_all("//code/@system") == ["LN", "LN"]
    assert d.get_all("/order/note/text()") == ["see ", " report", " <raw> "]
    assert d.get_all("//nothing") == [] and d.count("/order/result") == 2


def test_unmodified_is_the_very_same_bytes():
    assert doc().to_bytes() == ORDER
    for raw in (b"<a/>", b"<a>x</a>\n\n", "\ufeff<a>é</a>".encode(), "<a>é</a>".encode("utf-16")):
        assert parse(raw).to_bytes() == raw


def test_set_and_delete_keep_the_declaration_the_encoding_and_the_prefixes():
    d = doc()
    d.set("/order/patient/mrn", "MRN<2>")
    d.set("/order/@id", 'O"2')
    d.set("/order/patient/name/family", "Grüße")
    d.set("/order/result[@type='prelim']/value", "14.0")
    d.set("/order/note/text()", "now ")  # the element's own text; <b> kept
    d.set("/order/patient/phone/@use", "home")  # created
    d.set("/order/patient/id[@type='MR']", "M1")  # created with its attribute
    d.set("/order/patient/alias[2]", "second")  # created with the sibling it needs
    d.set("/order/result/flag", "N")  # every result that has… none: created in the first one
    d.delete("/order/patient/empty")
    d.delete("/order/@status")
    d.delete("//nothing")
    out = d.to_bytes()
    assert out.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<!-- a lab order from the PM -->\n')
    assert "Grüße".encode("iso-8859-1") in out, "written in the declared encoding"
    assert b'<o:order xmlns:o="urn:example:order" xmlns="urn:example:default" id="O&quot;2">' in out
    again = parse(out)
    assert again.get("//mrn") == "MRN<2>" and again.get("/order/@id") == 'O"2' and again.get("//empty") is None
    assert again.get("/order/@status") is None and again.get("/order/note") == "now attached"
    assert again.get("//phone/@use") == "home" and again.get("//id[@type='MR']") == "M1"
    assert again.get_all("//alias") == ["second"] and again.count("//alias") == 2
    assert again.get("/order/result[1]/flag") == "N" and again.get("/order/result[2]/value") == "14.0"
    euro = parse('<?xml version="1.0" encoding="ISO-8859-1"?><a>x</a>'.encode("iso-8859-1"))
    euro.set("/a", "€ 5")
    assert euro.to_bytes().endswith(b"<a>&#8364; 5</a>"), "a character the encoding lacks: a reference"


def test_what_set_cannot_create_and_the_root():
    d = doc()
    with pytest.raises(MappingError, match="only a path of /name steps"):
        d.set("//nowhere", "x")
    with pytest.raises(MappingError, match="root element is <o:order>"):
        d.set("/other/x", "x")
    with pytest.raises(MappingError, match="root element cannot be deleted"):
        d.delete("/order")
    new = XmlDocument.new("lab")
    new.set("/lab/result[2]/code", "X")
    assert (
        new.to_bytes() == b'<?xml version="1.0" encoding="UTF-8"?>\n<lab><result/><result><code>X</code></result></lab>'
    )


@pytest.mark.parametrize(
    "raw,where",
    [
        (b"<a><b></a>", "line 1, column 9"),
        (b"<a>\n  <b x='1' x='2'/>\n</a>", "line 2, column 12"),
        (b"", "line 1, column 1"),
        (b"<a>&undefined;</a>", "line 1, column 4"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "line 2"),
        (b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>', "line 1"),
        (b'<!DOCTYPE a SYSTEM "http://127.0.0.1:9/a.dtd"><a>&e;</a>', "line 1, column"),
        (b"<a/><b/>", "line 1, column 5"),
    ],
)
def test_bad_xml_is_refused_with_line_and_column(raw, where):
    with pytest.raises(XmlParseError) as exc:
        parse(raw)
    assert where in str(exc.value) and isinstance(exc.value, InputError)


def test_billion_laughs_is_refused_before_expanding():
    lol = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>'
    with pytest.raises(XmlParseError, match="declaring entities"):
        parse(lol)


@pytest.mark.parametrize(
    "path", ["order/mrn", "/a/", "/a//", "/a[0]", "/a[x]", "/@id", "/a/@id/b", "/a/text()/b", "/a[@x=1]", "$.a", ""]
)
def test_bad_paths(path):
    with pytest.raises(MappingError):
        parse_path(path)
    assert check_path("xml", path) is not None


def test_good_paths_check_clean():
    for path in ("/a", "//a", "/a/b[2]/@c", "/x:a/x:b", "/a/*/c", "/a/b/text()", "/a//c[@t='v'][1]", "/a/b[c='1']"):
        assert check_path("xml", path) is None, path


def test_registered_as_the_xml_content_type():
    assert isinstance(parse_document("xml", b"<a/>"), XmlDocument)
    assert document_of(Message(b"<a><b>c</b></a>", "xml")).get("/a/b") == "c"


# ============================================================================================ properties
_NAMES = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"), max_size=15
)


@st.composite
def _xml(draw, depth=0):
    name = draw(_NAMES)
    attrs = draw(st.dictionaries(_NAMES, _TEXT, max_size=2))
    head = name + "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    if depth >= 2 or draw(st.booleans()):
        body = escape(draw(_TEXT))
    else:
        body = "".join(draw(st.lists(_xml(depth + 1), max_size=3))) + escape(draw(_TEXT))
    return f"<{head}>{body}</{name}>" if body else f"<{head}/>"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_xml(), st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>\n', "<!-- c -->"]))
def test_unmodified_xml_gives_back_its_bytes(body, prolog):
    raw = (prolog + body).encode()
    assert parse(raw).to_bytes() == raw


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_xml(), st.lists(_NAMES, min_size=1, max_size=3), _TEXT, st.booleans())
def test_set_then_get_gives_the_value(body, names, text, attribute):
    d = parse(body.encode())
    root = d.root.name
    path = f"/{root}/" + "/".join(names[:-1] + ([f"@{names[-1]}"] if attribute else [names[-1]]))
    if path.endswith("/"):
        path = path[:-1]
    d.set(path, text)
    again = parse(d.to_bytes())
    assert again.get(path) == (text if text.strip() else None)
