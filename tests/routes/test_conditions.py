"""Filters and `when` conditions on HL7 paths."""

from __future__ import annotations

import pytest

from hub.message import Message
from hub.routes import compile_condition
from hub.spec import Condition

ORU = (
    b"MSH|^~\\&|LAB|LABCO|HUB|CLINIC|20261123||ORU^R01^ORU_R01|L1|P|2.5.1\r"
    b"PID|1||MRN1^^^CLINIC^MR~ALT9^^^X^PI||DOE^JANE\r"
    b"OBX|1|NM|2345-7^Glucose^LN||105|mg/dL|70-99|H\r"
    b"OBX|2|NM|718-7^Hemoglobin^LN||13.5|g/dL|12-16|N\r"
)


def m() -> Message:
    return Message(ORU, "hl7v2")


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"path": "MSH-9.1", "equals": "ORU"}, True),
        ({"path": "MSH-9.1", "in": ["ADT", "SIU"]}, False),
        ({"path": "OBX-8", "equals": "H"}, True),  # any OBX
        ({"path": "OBX[2]-8", "equals": "H"}, False),
        ({"path": "PID-3.1", "in": ["ALT9"]}, True),  # any repetition
        ({"path": "OBX-3.1", "matches": "^718-"}, True),
        ({"path": "PID-19", "exists": False}, True),
        ({"path": "PID-5.1", "exists": True}, True),
        ({"path": "ZZZ-1", "exists": True}, False),
        ({"all": [{"path": "MSH-9.1", "equals": "ORU"}, {"path": "OBX-8", "equals": "H"}]}, True),
        ({"any": [{"path": "MSH-9.1", "equals": "ADT"}, {"path": "MSH-9.2", "equals": "R01"}]}, True),
        ({"not": {"path": "MSH-9.1", "equals": "ORU"}}, False),
    ],
)
def test_conditions(spec, expected):
    assert compile_condition(Condition.model_validate(spec))(m()) is expected


def test_paths_on_a_format_without_paths_never_match():
    assert (
        compile_condition(Condition.model_validate({"path": "MSH-9.1", "exists": True}))(Message(b"plain", "raw"))
        is False
    )
