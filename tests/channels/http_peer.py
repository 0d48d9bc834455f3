"""A real HTTP(S) peer on 127.0.0.1 for the ``http`` connectors' tests: it records every request, answers from a
script (status, headers, body, delay), serves an OAuth 2 client-credentials token endpoint at ``/token`` and can
require a bearer token it issued, HTTP Basic, or (with TLS) a client certificate."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_cert: dict[str, Any] | None = None


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class HttpPeer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[Seen] = []
        self.script: list[Answer] = []
        self.default = Answer(200, b"ok", {"Content-Type": "text/plain"})
        self.responder: Any = None  # optional fn(Seen) -> Answer, used when the script is empty
        self.client_id, self.client_secret = "hub-client", "s3cret-synthetic"
        self.token_lifetime = 3600
        self.tokens: list[str] = []  # issued, newest last
        self.valid: set[str] = set()
        self.need_bearer = False
        self.basic: tuple[str, str] | None = None
        self.token_requests: list[dict[str, str]] = []
        self.lock = threading.Lock()
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(n) if n else b""
                cert = None
                if isinstance(self.connection, ssl.SSLSocket):
                    cert = self.connection.getpeercert() or None
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, cert)
                if self.path == "/token":
                    self._token(seen)
                    return
                with peer.lock:
                    peer.seen.append(seen)
                    auth = seen.headers.get("authorization", "")
                    if peer.need_bearer and auth.removeprefix("Bearer ") not in peer.valid:
                        a = Answer(401, b"bad token", {"Content-Type": "text/plain"})
                    elif (
                        peer.basic is not None
                        and auth != "Basic " + base64.b64encode(":".join(peer.basic).encode()).decode()
                    ):
                        a = Answer(401, b"bad password", {"WWW-Authenticate": 'Basic realm="x"'})
                    elif peer.script:
                        a = peer.script.pop(0)
                    elif peer.responder is not None:
                        a = peer.responder(seen)
                    else:
                        a = peer.default
                self._send(a)

            def _token(self, seen: Seen) -> None:
                form = dict(p.split("=", 1) for p in seen.body.decode().split("&") if "=" in p)
                want = "Basic " + base64.b64encode(f"{peer.client_id}:{peer.client_secret}".encode()).decode()
                ok = seen.headers.get("authorization") == want or (
                    form.get("client_id") == peer.client_id and form.get("client_secret") == peer.client_secret
                )
                with peer.lock:
                    peer.token_requests.append(form)
                    if not ok or form.get("grant_type") != "client_credentials":
                        self._send(Answer(401, b'{"error":"invalid_client"}', {"Content-Type": "application/json"}))
                        return
                    tok = f"tok-{len(peer.tokens) + 1}"
                    peer.tokens.append(tok)
                    peer.valid.add(tok)
                body = json.dumps({"access_token": tok, "token_type": "Bearer", "expires_in": peer.token_lifetime})
                self._send(Answer(200, body.encode(), {"Content-Type": "application/json"}))

            def _send(self, a: Answer) -> None:
                if a.delay:
                    time.sleep(a.delay)
                try:
                    self.send_response(a.status)
                    for k, v in a.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(a.body)))
                    self.end_headers()
                    self.wfile.write(a.body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def revoke(self) -> None:
        with self.lock:
            self.valid.clear()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
