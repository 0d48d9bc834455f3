"""X12 for the hub: read, address by path, write 837P/837I, post 835s, acknowledge (999/TA1), read 999/277CA.

Pure code, no I/O beyond reading a stream it is handed::

    doc = parse_document(raw)                 # X12Document: get("CLM01"), get("NM1[85]03"), loops("2300")
    for seg in iter_segments(open(path, "rb")):   # streaming, chunked
    for tx in iter_transactions(stream): ...      # one ST…SE at a time
    for claim in iter_loops(stream, "2300"): ...  # one claim (with its 2400 lines and context) at a time

    write_837(claims, "clearinghouse", numbers, kind="P")   # → bytes; MappingError for an unbillable claim
    number_interchange(raw, "clearinghouse", numbers)   # the same interchange with new ISA13/GS06/ST02
    validate(raw)                              # pyx12 5010 validation → [Issue]

    rows = remit_to_rows(stream); list(rows); rows.issues   # 835 → posting rows + balancing issues
    x12_835_to_csv(raw, layout)                # transform entry point (header row first)
    remit_to_fhir(raw)                         # collection Bundle of ExplanationOfBenefit

    make_999(raw, numbers, partner); make_ta1(raw, numbers, partner)
    read_999(raw); read_277ca(raw)             # → [AckRecord]

    claim_from_dft(parse_hl7(raw)); claims_from_fhir(bundle)   # into the neutral claim model

Modules: :mod:`.reader` (tokeniser, envelopes), :mod:`.loops` (loop tables), :mod:`.document` (paths),
:mod:`.writer` (envelopes, control numbers written and re-taken), :mod:`.partners` (settings, control numbers),
:mod:`.model` (claim model, NPI), :mod:`.claim_checks` (what a claim needs to be billed), :mod:`.claims_837`
(837 writer), :mod:`.remit` (835), :mod:`.validate` (pyx12), :mod:`.acks`, :mod:`.from_hl7v2`, :mod:`.from_fhir`,
:mod:`.components` (the transforms of a channel, X12 metadata and split). pyx12 is imported only by
:mod:`.validate`, on first use.
"""

from __future__ import annotations

from .acks import AckRecord, InterchangeCheck, check_interchanges, make_999, make_ta1, read_277ca, read_999
from .claim_checks import check_claim
from .claims_837 import write_837
from .components import meta, split_transactions  # channel hooks: hub.transforms.document META, x12_transaction split
from .document import LoopView, X12Document, iter_loops, parse_document, parse_path
from .from_fhir import claims_from_fhir
from .from_hl7v2 import claim_from_dft, v2_to_x12_837
from .loops import LoopTracker, spec_for
from .model import Address, Claim, Patient, Payer, Provider, ServiceLine, Subscriber, npi_is_valid
from .partners import ControlNumbers, InMemoryControlNumbers, Partner, get_partner, load_partners
from .reader import Delimiters, Segment, SegmentReader, Transaction, iter_segments, iter_transactions
from .remit import (
    CsvLayout,
    RemitClaim,
    RemitReader,
    RemitRows,
    load_layout,
    remit_to_fhir,
    remit_to_rows,
    write_remit_csv,
    x12_835_to_csv,
)
from .validate import ValidationReport, validate, validate_report
from .writer import SegmentWriter, number_interchange, write_interchange

__all__ = [
    # reading
    "Delimiters",
    "Segment",
    "SegmentReader",
    "Transaction",
    "iter_segments",
    "iter_transactions",
    "LoopTracker",
    "spec_for",
    "X12Document",
    "LoopView",
    "iter_loops",
    "parse_document",
    "parse_path",
    # writing / 837
    "SegmentWriter",
    "write_interchange",
    "number_interchange",
    "write_837",
    "Address",
    "Claim",
    "Patient",
    "Payer",
    "Provider",
    "ServiceLine",
    "Subscriber",
    "check_claim",
    "npi_is_valid",
    "claim_from_dft",
    "v2_to_x12_837",
    "claims_from_fhir",
    # partners
    "ControlNumbers",
    "InMemoryControlNumbers",
    "Partner",
    "get_partner",
    "load_partners",
    # 835
    "CsvLayout",
    "RemitClaim",
    "RemitReader",
    "RemitRows",
    "load_layout",
    "remit_to_fhir",
    "remit_to_rows",
    "write_remit_csv",
    "x12_835_to_csv",
    # validation and acknowledgements
    "ValidationReport",
    "validate",
    "validate_report",
    "AckRecord",
    "InterchangeCheck",
    "check_interchanges",
    "make_999",
    "make_ta1",
    "read_999",
    "read_277ca",
    # channel hooks
    "meta",
    "split_transactions",
]
