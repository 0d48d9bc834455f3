"""The one exception tree of the hub, and the one place that decides retry vs dead.

::

    HubError
    ├── ConfigError                 a hub.yaml / channel file problem (carries file and line)
    ├── InputError                  bad input: the outcome is ``rejected`` and it is never retried
    │   ├── ParseError              the bytes are not the format they claim to be
    │   │   ├── Hl7ParseError       (→ HL7 AR, ERR code from table 0357)
    │   │   ├── X12ParseError       (→ TA1 / 999 rejection)
    │   │   ├── FhirParseError      (→ 422 OperationOutcome)
    │   │   └── CsvParseError       (→ row report)
    │   ├── ValidationError         the content parsed but breaks the rules it was checked against
    │   └── MappingError            a transform could not map the content (missing code, bad path …)
    ├── StoreError                  the store could not commit: the outcome is ``error``; the peer resends
    └── DeliveryError               sending to a destination failed
        ├── RetryableDelivery       try again later (connection refused, timeout, 408/429/5xx, AE …)
        └── PermanentDelivery       a person must look (4xx, AR, a file that can never be written …)

Transforms raise ``InputError`` subclasses; connectors translate their library's exceptions at one boundary
(``raise RetryableDelivery(...) from exc``) and :func:`classify` turns anything else into one of the two.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

__all__ = [
    "HubError",
    "ConfigError",
    "InputError",
    "ParseError",
    "Hl7ParseError",
    "X12ParseError",
    "FhirParseError",
    "CsvParseError",
    "ValidationError",
    "MappingError",
    "StoreError",
    "DeliveryError",
    "RetryableDelivery",
    "PermanentDelivery",
    "Issue",
    "classify",
    "retryable_http_status",
]


@dataclass(frozen=True)
class Issue:
    """One problem found by a validator. Validators return a list of these and never raise."""

    severity: str  # "error" | "warning" | "information"
    message: str
    location: str = ""  # a path in the format's own notation: "PID-3.1", "2300/CLM01", "Patient.name[0]", "row 7"
    code: str = ""  # the protocol's own code: HL7 table 0357 ("101"), X12 IK4 ("1"), FHIR issue type ("required")

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{self.severity}: {where}{self.message}"


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class ConfigError(HubError):
    """A configuration problem; ``problems`` holds ``(file, line, message)`` triples."""

    def __init__(self, message: str, problems: list[tuple[str, int, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class InputError(HubError):
    """The input cannot be accepted as it is: outcome ``rejected``, never retried.

    ``code`` is the protocol's error code when one applies (HL7 table 0357, X12, FHIR issue type) and
    ``location`` where in the input the problem is.
    """

    def __init__(self, message: str, *, code: str = "", location: str = "", issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.location = location
        self.issues = issues or []


class ParseError(InputError):
    """The bytes are not a well-formed message of the format they claim to be."""


class Hl7ParseError(ParseError):
    """ER7 that cannot be read. ``control_id`` holds MSH-10 when it could still be recovered (for the AR)."""

    def __init__(self, message: str, *, code: str = "100", location: str = "", control_id: str | None = None) -> None:
        super().__init__(message, code=code, location=location)
        self.control_id = control_id


class X12ParseError(ParseError):
    pass


class FhirParseError(ParseError):
    pass


class CsvParseError(ParseError):
    pass


class ValidationError(InputError):
    pass


class MappingError(InputError):
    pass


class StoreError(HubError):
    """The store could not commit. Nothing was accepted; the peer should resend."""


class DeliveryError(HubError):
    """Sending one delivery failed. ``response`` is what the peer answered, if anything (stored on the delivery)."""

    def __init__(self, message: str, *, response: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.response = response
        self.retry_after = retry_after


class RetryableDelivery(DeliveryError):
    pass


class PermanentDelivery(DeliveryError):
    pass


def retryable_http_status(status: int) -> bool:
    """408, 429 and 5xx are worth retrying; every other 4xx is the sender's fault and is not."""
    return status in (408, 429) or status >= 500


_RETRYABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.ENOSPC,  # a full disk, a folder without write permission, a read-only mount: an operator
    errno.EACCES,  # fixes these, and the queue must still be there when they have
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,  # a file where the destination folder should be
    errno.EAGAIN,
    errno.EBUSY,
}


def classify(exc: BaseException) -> DeliveryError:
    """Turn any exception raised while sending into Retryable or Permanent — the one place that decides."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError, ssl.SSLError, EOFError)):
        return RetryableDelivery(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        if exc.errno in _RETRYABLE_ERRNOS:
            return RetryableDelivery(f"{type(exc).__name__}: {exc}")
        return PermanentDelivery(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, InputError):
        return PermanentDelivery(str(exc))
    return RetryableDelivery(f"{type(exc).__name__}: {exc}")
