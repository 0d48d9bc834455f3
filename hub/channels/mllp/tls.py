"""What both ends of MLLP share beyond framing: the ``tls:`` settings (:class:`MllpTls`), the TLS contexts built
from them (:func:`server_context` for the listener, :func:`client_context` for the sender and ``hub send``), and
the reading of the duration settings both configs take (:func:`optional_duration`, :func:`seconds_or_never`)."""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import Field, model_validator

from hub.channels.base import Context
from hub.spec import Strict, parse_duration

__all__ = ["MllpTls", "server_context", "client_context", "optional_duration", "seconds_or_never"]


def optional_duration(v: str | float | None) -> str | float | None:
    """Validator of a duration setting that may be null: checks it parses, keeps it as written."""
    if v is not None:
        parse_duration(v)
    return v


def seconds_or_never(v: str | float | None) -> float | None:
    """A duration setting in seconds; None or 0 means "never"."""
    if v is None:
        return None
    s = parse_duration(v)
    return s if s > 0 else None


class MllpTls(Strict):
    """TLS for an MLLP listener or sender. Files are PEM, relative to home."""

    cert: str | None = Field(
        None,
        description="This side's certificate (chain). Required for a listener; for a sender, the client certificate "
        "it presents when the peer asks for mutual TLS.",
        examples=["/etc/hub/tls/hub.crt"],
    )
    key: str | None = Field(None, description="The private key of `cert`.", examples=["/etc/hub/tls/hub.key"])
    ca: str | None = Field(
        None,
        description="CA certificate(s) the peer's certificate must chain to. Listener: checks client certificates "
        "(mutual TLS); sender: checks the server (default: the system's CAs).",
        examples=["/etc/hub/tls/partners-ca.crt"],
    )
    client_cert: Literal["none", "optional", "required"] = Field(
        "none", description="Listener: ask peers for a certificate signed by `ca` (required = mutual TLS)."
    )
    verify: bool = Field(
        True, description="Sender: verify the server's certificate and name (turn off only for tests)."
    )
    server_name: str | None = Field(
        None, description="Sender: the name the server's certificate must carry (default: the host of `address`)."
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")

    @model_validator(mode="after")
    def _pair(self) -> MllpTls:
        if bool(self.cert) != bool(self.key):
            raise ValueError("tls: cert and key go together")
        if self.client_cert != "none" and not self.ca:
            raise ValueError("tls: client_cert needs ca (the CA that signs the peers' certificates)")
        return self


def _min_version(tls: MllpTls) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2


def server_context(tls: MllpTls, ctx: Context) -> ssl.SSLContext:
    """The listener's TLS context (reads the files: call at start, not in a constructor)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.minimum_version = _min_version(tls)
    assert tls.cert and tls.key
    c.load_cert_chain(str(ctx.resolve(tls.cert)), str(ctx.resolve(tls.key)))
    if tls.client_cert != "none":
        assert tls.ca
        c.load_verify_locations(cafile=str(ctx.resolve(tls.ca)))
        c.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    return c


def client_context(tls: MllpTls, ctx: Context | None = None) -> ssl.SSLContext:
    """A sender's TLS context (reads the files)."""
    resolve = ctx.resolve if ctx is not None else (lambda p: p)
    c = ssl.create_default_context(cafile=str(resolve(tls.ca)) if tls.ca else None)
    c.minimum_version = _min_version(tls)
    if not tls.verify:
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
    if tls.cert and tls.key:
        c.load_cert_chain(str(resolve(tls.cert)), str(resolve(tls.key)))
    return c
