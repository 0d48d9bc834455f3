"""hub — an open-source healthcare integration engine (HL7 v2, FHIR R4, X12, CSV)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
