"""Every function the v2 → FHIR tables may name (``map: fn:name(args)``): :data:`FUNCTIONS`, complete.

Importing this module imports each module of table functions — :mod:`.functions` (used by every message
family), then :mod:`.functions_adt` and :mod:`.functions_pharmacy` — which register their functions in
:data:`.functions_base.FUNCTIONS` at import. :mod:`.mapdefs` reads the registry from here, so the import graph
runs one way: mapdefs → table_functions → functions* → functions_base.
"""

from __future__ import annotations

# imported for their registrations, in this order (a later registration of a name would replace an earlier one)
from . import functions, functions_adt, functions_pharmacy  # noqa: F401 - imported only to register
from .functions_base import FUNCTIONS

__all__ = ["FUNCTIONS"]
