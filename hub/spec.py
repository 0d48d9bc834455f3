"""The models of ``hub.yaml`` and of channel files, and the loader that reports problems as ``file:line: message``.

The shape is the contract of DESIGN.md §5: keys may be added, never renamed. Every model forbids unknown keys,
so a typo is a ``hub check`` error instead of a silently ignored setting. Connector and transform settings are
validated by the models their own modules declare (looked up in :mod:`hub.registry`), so the documentation of a
connector lives beside its code.

YAML is read with PyYAML; the loader keeps the line of every key and list item so that a pydantic error path
(``destinations.ehr.queue.max_attempts``) can be reported at the line where the analyst wrote it. ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment (then from ``env:`` in hub.yaml) while loading; an undefined
variable without a default is a problem at its line.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hub.schedules import check_schedule, parse_duration, parse_size

__all__ = [
    "Strict",
    "HubSpec",
    "ClusterSpec",
    "AlertsSpec",
    "ChannelSpec",
    "RouteSpec",
    "Condition",
    "QueueSpec",
    "BackoffSpec",
    "SourceConfig",
    "DestinationConfig",
    "TransformConfig",
    "Config",
    "Problem",
    "load_config",
    "load_yaml",
    "parse_duration",
    "parse_listen",
    "check_schedule",
]

CONTENT_FORMATS = ("hl7v2", "fhir", "x12", "csv", "raw")


# --------------------------------------------------------------------------------------------------- helpers
def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:2575"`` → (host, port). A bare port listens on 127.0.0.1."""
    host, sep, port = str(value).rpartition(":")
    if not sep:
        host, port = "127.0.0.1", str(value)
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Duration = str | int | float


def _check_duration(v: Any) -> Any:
    if v is not None:
        parse_duration(v)
    return v


# --------------------------------------------------------------------------------------------------- hub.yaml
class StoreSpec(Strict):
    url: str = Field(
        default="sqlite:///var/hub.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    batch_max: int = Field(
        default=500, ge=1, description="Most operations the writer commits in one transaction (group commit)."
    )
    synchronous: Literal["full", "normal"] = Field(
        default="full",
        description="SQLite only: 'full' flushes the WAL to disk before a message is acknowledged (survives power "
        "loss); 'normal' survives a crash of the hub process only. With 'full', workers' claims and delivery results "
        "are flushed within a second (a power loss may send a delivery twice, never lose one).",
    )
    pool_size: int = Field(default=5, ge=1, description="PostgreSQL connections kept for readers and claims.")


class WebTlsSpec(Strict):
    cert: str = Field(description="PEM certificate (chain) file, relative to home.", examples=["/etc/hub/tls/hub.crt"])
    key: str = Field(description="PEM private key file, relative to home.", examples=["/etc/hub/tls/hub.key"])
    ca: str | None = Field(
        default=None, description="PEM CA bundle that signs the clients' certificates (mutual TLS), relative to home."
    )
    client_cert: Literal["none", "optional", "required"] = Field(
        default="none",
        description="Mutual TLS: required = every connection (dashboard, API, senders) must present a certificate "
        "signed by ca — a sending system then proves itself twice, by certificate and by its token; optional = checked "
        "when given.",
    )

    @model_validator(mode="after")
    def _ca_for_clients(self) -> WebTlsSpec:
        if self.client_cert != "none" and not self.ca:
            raise ValueError("web.tls: client_cert needs ca (the CA that signs the clients' certificates)")
        return self


class WebSpec(Strict):
    listen: str = Field(default="127.0.0.1:8080", description="host:port of the API, dashboard and /metrics")
    enabled: bool = True
    tls: WebTlsSpec | None = Field(
        default=None, description="Serve HTTPS with this certificate and key (session cookies are then Secure)."
    )
    session_ttl: Duration = Field(default="12h", description="How long a dashboard login lasts.")
    secure_cookies: bool | None = Field(
        default=None,
        description="Mark the session cookie Secure (HTTPS only). Default: on when tls is set; set true behind a TLS "
        "proxy.",
    )

    _v_listen = field_validator("listen")(lambda cls, v: (parse_listen(v), v)[1])
    _v_ttl = field_validator("session_ttl")(lambda cls, v: _check_duration(v))


class RetentionSpec(Strict):
    messages: Duration = Field(
        default="30d", description="Messages older than this are pruned (with their deliveries)."
    )
    schedule: str = Field(default="0 3 * * *", description="When pruning runs: cron (5 fields) or an interval like 1h.")
    keep_unsent: bool = Field(
        default=True, description="Never prune a message with a delivery still queued, retrying or dead."
    )
    max_size: str | int | None = Field(
        default=None,
        description="When the store is bigger than this (e.g. 20GB, 500MB; bytes if a number), prune the oldest "
        "messages until it is not — never one with a delivery still queued, sending, retrying or dead.",
    )

    _v_messages = field_validator("messages")(lambda cls, v: _check_duration(v))

    @field_validator("max_size")
    @classmethod
    def _size(cls, v: str | int | None) -> str | int | None:
        if v is not None and parse_size(v) <= 0:
            raise ValueError("retention.max_size must be positive")
        return v


class AlertWebhookSpec(Strict):
    """A JSON POST to a URL (a chat room's incoming webhook, a paging service, your own receiver)."""

    url: str = Field(description="http(s) URL the notification is POSTed to as JSON.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers, e.g. {Authorization: 'Bearer ${ALERT_TOKEN}'} (take secrets from ${VAR}).",
    )
    timeout: Duration = Field(default="10s", description="How long one POST may take.")

    _v_timeout = field_validator("timeout")(lambda cls, v: _check_duration(v))

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("alerts.webhook.url must start with http:// or https://")
        return v


class AlertEmailSpec(Strict):
    """A plain-text email through an SMTP server."""

    smtp: str = Field(description="host:port of the SMTP server (587 with starttls, 25 on a trusted relay).")
    from_: str = Field(alias="from", description="Sender address.")
    to: list[str] = Field(min_length=1, description="Recipients.")
    starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS before logging in.")
    username: str | None = Field(default=None, description="SMTP login, if the server wants one.")
    password: str | None = Field(
        default=None, description="SMTP password: write ${SMTP_PASSWORD} and set it in the environment."
    )
    timeout: Duration = Field(default="30s", description="How long one SMTP conversation may take.")

    _v_smtp = field_validator("smtp")(lambda cls, v: (parse_listen(v), v)[1])
    _v_timeout = field_validator("timeout")(lambda cls, v: _check_duration(v))


AlertEvent = Literal["dead_letter", "channel_stopped", "channel_failed"]


class AlertsSpec(Strict):
    """Notifications sent by the hub itself, for sites without Prometheus and Alertmanager.

    The hub checks the store every `check` for deliveries that went dead and for channels that failed to start
    (`channel_failed`) or were stopped (`channel_stopped`: paused), and sends what it found as one notification to
    the webhook and/or the email receiver, at most once per `min_interval` (what happens meanwhile is grouped into
    the next one). A notification names channels, destinations, counts and message ids, with links to the
    dashboard — never message content. With several nodes sharing a store one of them (the holder of the store
    lease `alerts`) sends.
    """

    webhook: AlertWebhookSpec | None = Field(default=None, description="POST each notification as JSON here.")
    email: AlertEmailSpec | None = Field(default=None, description="Email each notification.")
    events: list[AlertEvent] = Field(
        default=["dead_letter", "channel_stopped", "channel_failed"],
        description="What is notified: dead_letter, channel_stopped (paused), channel_failed (its source could "
        "not start). (Not `on:`, which YAML reads as true.)",
    )
    check: Duration = Field(default="30s", description="How often the store and the channels are looked at.")
    min_interval: Duration = Field(
        default="5m", description="At most one notification per this interval; later events wait and are grouped."
    )
    dashboard: str | None = Field(
        default=None,
        description="The dashboard's URL as people reach it (https://hub.clinic.example); notifications link to it.",
    )
    max_ids: int = Field(default=20, ge=0, description="Most message ids listed per destination in a notification.")

    _v_check = field_validator("check")(lambda cls, v: _check_duration(v))
    _v_min = field_validator("min_interval")(lambda cls, v: _check_duration(v))

    @model_validator(mode="after")
    def _a_receiver(self) -> AlertsSpec:
        if self.webhook is None and self.email is None:
            raise ValueError("alerts: give a webhook, an email, or both")
        return self


class ClusterSpec(Strict):
    """How the nodes sharing a store watch each other: each writes a heartbeat every `heartbeat`; a node silent for
    `dead_after` is dead, and the others take over its deliveries in flight (a FIFO queue resumes where it stopped,
    in order), its folder polls and its batches at once instead of waiting for its leases to expire. Pause, resume,
    enable and disable reach every node within one heartbeat."""

    heartbeat: Duration = Field(
        default="2s", description="How often this node writes its heartbeat and reads the shared channel state."
    )
    dead_after: Duration = Field(
        default="10s",
        description="A node whose last heartbeat is older than this is dead and its leases are taken over; at least "
        "twice `heartbeat`.",
    )

    _v_durations = field_validator("heartbeat", "dead_after")(lambda cls, v: _check_duration(v))

    @model_validator(mode="after")
    def _dead_after_heartbeats(self) -> ClusterSpec:
        if parse_duration(self.heartbeat) <= 0:
            raise ValueError("cluster.heartbeat must be more than 0")
        if parse_duration(self.dead_after) < 2 * parse_duration(self.heartbeat):
            raise ValueError("cluster.dead_after must be at least twice cluster.heartbeat")
        return self


class HubSpec(Strict):
    home: str = Field(
        default=".",
        description="Folder that relative paths (store, files, mappings, samples) resolve against; relative to the "
        "config folder.",
    )
    node: str | None = Field(
        default=None,
        description="This node's name in a shared store (default: the hostname); give each hub process on one host its "
        "own.",
    )
    cluster: ClusterSpec = Field(
        default_factory=ClusterSpec,
        description="Heartbeats between the nodes sharing a store, and how soon a silent node's work is taken over.",
    )
    store: StoreSpec = Field(default_factory=StoreSpec)
    web: WebSpec = Field(default_factory=WebSpec)
    channels: str | list[str] = Field(
        default="channels/*.yaml", description="Glob(s) of channel files, relative to the config folder."
    )
    mappings: str = Field(default="mappings", description="Folder of mapping tables, relative to home.")
    python_path: list[str] = Field(
        default_factory=list, description="Folders (relative to home) added to sys.path for python transforms."
    )
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    alerts: AlertsSpec | None = Field(
        default=None,
        description="Webhook and/or email notifications of dead letters and stopped or failed channels, sent by the "
        "hub itself (for sites without Alertmanager).",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Defaults for ${VAR} when the environment lacks them."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"


# --------------------------------------------------------------------------------------------------- channels
class Condition(Strict):
    """A predicate on a message: one path test, or ``all``/``any``/``not`` of conditions.

    ``{path: MSH-9.1, in: [ADT]}``, ``{path: PID-8, equals: F}``, ``{path: OBX-3.1, matches: '^94'}``,
    ``{path: PID-19, exists: false}``, ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``.
    """

    path: str | None = None
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    matches: str | None = None
    exists: bool | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        ops = [k for k in ("equals", "in_", "matches", "exists") if getattr(self, k) is not None]
        groups = [k for k in ("all", "any", "not_") if getattr(self, k) is not None]
        if self.path is not None:
            if groups or len(ops) != 1:
                raise ValueError("a path condition needs exactly one of equals, in, matches, exists")
        elif len(groups) != 1 or ops:
            raise ValueError("a condition is {path: …, equals|in|matches|exists: …} or one of all/any/not")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches: bad regular expression: {exc}") from None
        return self


class TransformConfig(Strict):
    """Base of every transform's settings (each transform module declares its own model)."""

    type: str


class BackoffSpec(Strict):
    initial: Duration = Field(default="1s", description="Wait before the first retry.")
    max: Duration = Field(default="5m", description="Longest wait between retries.")
    multiplier: float = Field(default=2.0, ge=1.0)

    _v = field_validator("initial", "max")(lambda cls, v: _check_duration(v))


class QueueSpec(Strict):
    max_attempts: int = Field(
        default=10, ge=1, description="Attempts before a delivery goes dead (kept, visible, replayable)."
    )
    backoff: BackoffSpec = Field(default_factory=BackoffSpec)
    order_by: str | None = Field(
        default=None,
        description="A path (e.g. PID-3.1) whose value orders delivery per key; different keys flow in parallel.",
    )
    parallel: int = Field(default=4, ge=1, description="With order_by: how many keys are sent at once.")
    batch: int = Field(default=50, ge=1, description="How many queued deliveries a worker claims at a time.")


class SourceConfig(Strict):
    """Base of every source's settings (each source module declares its own model)."""

    type: str
    format: Literal["hl7v2", "fhir", "x12", "csv", "json", "xml", "raw"] | None = Field(
        default=None,
        description="Content type; without it the format is sniffed (MSH|/FHS|/BHS| → hl7v2, ISA → x12, { → fhir "
        'when it names a "resourceType", else json; [ → json, < → xml).',
    )
    split: Literal["none", "hl7_batch", "x12_transaction", "csv_row", "auto"] = Field(
        default="auto", description="Where one input holds many messages: auto splits HL7 batches, none keeps it whole."
    )
    encoding: str | None = Field(default=None, description="Character set when the content does not name one (MSH-18).")
    validate_: Literal["none", "basic", "strict"] = Field(
        default="basic",
        description="Check each message at ingest: basic = the header fields every message needs (cheap); "
        "strict = the format's full structure and data types (HL7 v2 via hl7apy, costs milliseconds). "
        "A message with errors is rejected with the protocol's error code.",
        alias="validate",
    )


class BatchSpec(Strict):
    """Send what queued up as one payload on a schedule (e.g. one X12 interchange of claims every 15 minutes)."""

    schedule: str | int | float = Field(
        description="When to send a batch: a duration (15m) or a cron string.", examples=["15m", "0 * * * *"]
    )
    max: int = Field(default=1000, ge=1, description="Most messages in one batch; more wait for the next one.")
    assemble: dict[str, Any] = Field(
        default_factory=lambda: {"type": "concat"},
        description="How the messages become one payload: {type: concat} (one after another), {type: hl7_batch} "
        "(FHS/BHS … BTS/FTS), {type: x12_837, partner: NAME} (one interchange of claims).",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: Any) -> Any:
        return check_schedule(v)


class DestinationConfig(Strict):
    """Base of every destination's settings (each destination module declares its own model)."""

    type: str
    queue: QueueSpec = Field(default_factory=QueueSpec)
    batch: BatchSpec | None = Field(
        default=None, description="Send queued messages together on a schedule instead of one by one."
    )


class RouteSpec(Strict):
    name: str
    when: Condition | None = None
    transforms: list[dict[str, Any]] = Field(default_factory=list)
    to: list[str] = Field(min_length=1)


class StorageSpec(Strict):
    content: Literal["full", "raw"] = Field(
        default="full",
        description="full: keep each destination's transformed content; raw: drop it once sent (the raw is always "
        "kept).",
    )


class ChannelSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    enabled: bool = True
    source: dict[str, Any]
    filters: list[Condition] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(default_factory=list)
    destinations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    meta: dict[
        Literal["control_id", "message_type", "trigger", "sending_app", "sending_facility", "patient_id"], str
    ] = Field(
        default_factory=dict,
        description="Metadata read from paths of each message, in its own format: "
        "{patient_id: $.patient.mrn, message_type: $.type, control_id: $.id} for JSON, /order/patient/mrn for XML, "
        "PID-2.1 to override what HL7 v2, X12 or FHIR give. A path with a value wins over the format's own; one "
        "with none leaves it. The values are indexed (hub messages, the dashboard's search).",
        examples=[{"patient_id": "$.patient.mrn", "message_type": "$.type", "control_id": "$.id"}],
    )


# --------------------------------------------------------------------------------------------------- YAML loading
class _Lines:
    """Line numbers of the keys of a mapping / items of a list (1-based)."""

    __slots__ = ("items", "line")

    def __init__(self, line: int) -> None:
        self.line = line
        self.items: dict[Any, int] = {}


class LineDict(dict[Any, Any]):
    __slots__ = ("lines",)
    lines: _Lines


class LineList(list[Any]):
    __slots__ = ("lines",)
    lines: _Lines


_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _make_loader(env: dict[str, str], problems: list[Problem], filename: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def interpolate(text: str, line: int) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(
                Problem(
                    filename, line, f"${{{name}}} is not defined (set it in the environment or under env: in hub.yaml)"
                )
            )
            return ""

        return _ENV.sub(sub, text) if "$" in text else text

    def construct_scalar_str(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        return interpolate(loader.construct_scalar(node), node.start_mark.line + 1)

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
        loader.flatten_mapping(node)
        d = LineDict()
        d.lines = _Lines(node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in d:
                problems.append(Problem(filename, key_node.start_mark.line + 1, f"duplicate key {key!r}"))
            d[key] = loader.construct_object(value_node, deep=True)
            d.lines.items[key] = key_node.start_mark.line + 1
        return d

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LineList:
        lst = LineList(loader.construct_object(child, deep=True) for child in node.value)
        lst.lines = _Lines(node.start_mark.line + 1)
        for i, child in enumerate(node.value):
            lst.lines.items[i] = child.start_mark.line + 1
        return lst

    Loader.add_constructor("tag:yaml.org,2002:str", construct_scalar_str)
    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", construct_sequence)
    return Loader


def load_yaml(path: Path, env: dict[str, str] | None = None, problems: list[Problem] | None = None) -> Any:
    """Read one YAML file with line numbers and ``${VAR}`` interpolation. Syntax errors become problems."""
    problems = problems if problems is not None else []
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(Problem(name, 0, f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        return yaml.load(text, Loader=_make_loader(env or {}, problems, name))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(name, line, f"invalid YAML: {reason}"))
        return None


def line_of(data: Any, loc: tuple[Any, ...]) -> int:
    """The line of the deepest element of ``loc`` found in ``data`` (pydantic error locations)."""
    line = getattr(getattr(data, "lines", None), "line", 1)
    node = data
    for part in loc:
        lines = getattr(node, "lines", None)
        if lines is None:
            break
        key = part
        if isinstance(node, LineDict) and key not in node and isinstance(key, str) and key.endswith("_"):
            key = key[:-1]  # in_ / not_ are written in / not
        if (isinstance(node, LineList) and isinstance(key, int) and 0 <= key < len(node)) or (
            isinstance(node, LineDict) and key in node
        ):
            line = lines.items.get(key, line)
            node = node[key]
        else:
            continue  # union/tag names in the loc (e.g. 'function-after[...]') are not keys
    return line


def pydantic_problems(exc: ValidationError, data: Any, filename: str, prefix: tuple[Any, ...] = ()) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in prefix + loc if not (isinstance(p, str) and "[" in p)) or "(top)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(Problem(filename, line_of(data, prefix + loc), f"{where}: {msg}"))
    return out


# --------------------------------------------------------------------------------------------------- the config
@dataclass
class Config:
    """Everything read from a config folder: the hub settings and the channel specs (raw dicts kept for lines)."""

    folder: Path
    hub: HubSpec
    channels: list[ChannelSpec] = field(default_factory=list)
    channel_files: dict[str, Path] = field(default_factory=dict)
    channel_data: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return (self.folder / self.hub.home).resolve()

    @property
    def mappings_dir(self) -> Path:
        return self.resolve(self.hub.mappings)

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.home / p

    def channel(self, name: str) -> ChannelSpec:
        for c in self.channels:
            if c.name == name:
                return c
        raise KeyError(name)

    def line(self, channel: str, *loc: Any) -> tuple[str, int]:
        return str(self.channel_files[channel]), line_of(self.channel_data[channel], loc)

    def store_url(self) -> str:
        """The store URL with a relative SQLite path resolved against home."""
        url = self.hub.store.url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            rest = url[len("sqlite:///") :]
            if rest and not rest.startswith(":memory:"):
                path, q, query = rest.partition("?")
                url = "sqlite:///" + str(self.resolve(path)) + (q + query if q else "")
        return url


def default_config_dir() -> Path:
    return Path(os.environ.get("HUB_CONFIG", "config"))


def load_config(folder: str | os.PathLike[str] | None = None) -> Config:
    """Read hub.yaml and every channel file. Problems are collected, not raised; see :func:`hub.check.check`."""
    folder = Path(folder) if folder is not None else default_config_dir()
    problems: list[Problem] = []
    hub_file = folder / "hub.yaml"
    data: Any = {}
    if not folder.is_dir():
        problems.append(Problem(str(folder), 0, "config folder not found"))
    elif hub_file.exists():
        # env: defaults apply to hub.yaml itself too, so read it once to find them.
        pre = load_yaml(hub_file, {}, [])
        env = {str(k): str(v) for k, v in (pre or {}).get("env", {}).items()} if isinstance(pre, dict) else {}
        data = load_yaml(hub_file, env, problems) or {}
    try:
        hub = HubSpec.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, data, str(hub_file)))
        hub = HubSpec()
    if data and not isinstance(data, dict):
        problems.append(Problem(str(hub_file), 1, "hub.yaml must be a mapping"))

    cfg = Config(folder=folder, hub=hub, problems=problems)
    patterns = [hub.channels] if isinstance(hub.channels, str) else hub.channels
    files: list[Path] = []
    for pattern in patterns:
        files.extend(Path(p) for p in sorted(glob.glob(str(folder / pattern))))
    for path in files:
        if path.name.endswith("_test.yaml"):
            continue
        cdata = load_yaml(path, hub.env, problems)
        if cdata is None:
            continue
        if not isinstance(cdata, dict):
            problems.append(Problem(str(path), 1, "a channel file must be a mapping"))
            continue
        try:
            spec = ChannelSpec.model_validate(cdata)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, cdata, str(path)))
            # Report every problem in one run: leave out what is broken and check the rest of the channel too (its
            # source, destinations and transforms are checked when it is built). A channel with problems never runs.
            salvaged = _salvage(cdata, exc)
            if salvaged is None:
                continue
            spec, cdata = salvaged
        if spec.name in cfg.channel_files:
            problems.append(
                Problem(
                    str(path),
                    line_of(cdata, ("name",)),
                    f"channel name {spec.name!r} is also used by {cfg.channel_files[spec.name]}",
                )
            )
            continue
        cfg.channels.append(spec)
        cfg.channel_files[spec.name] = path
        cfg.channel_data[spec.name] = cdata
    return cfg


def _copy_lines(data: Any) -> Any:
    """A copy of loaded YAML that keeps the line numbers (one level: values are shared)."""
    if isinstance(data, LineDict):
        out = LineDict(data)
        out.lines = _Lines(data.lines.line)
        out.lines.items = dict(data.lines.items)
        return out
    if isinstance(data, LineList):
        lst = LineList(data)
        lst.lines = _Lines(data.lines.line)
        lst.lines.items = dict(data.lines.items)
        return lst
    return data


def _without_items(data: Any, drop: set[int]) -> Any:
    """A LineList without the items at ``drop``, the others keeping their lines."""
    out = LineList(v for i, v in enumerate(data) if i not in drop)
    out.lines = _Lines(getattr(getattr(data, "lines", None), "line", 1))
    kept = [i for i in range(len(data)) if i not in drop]
    lines = getattr(getattr(data, "lines", None), "items", {})
    out.lines.items = {n: lines[i] for n, i in enumerate(kept) if i in lines}
    return out


def _salvage(cdata: Any, exc: ValidationError) -> tuple[ChannelSpec, Any] | None:
    """The channel with the parts that failed validation left out, so the rest can be checked as well; None when
    what failed is the channel itself (its name or its source)."""
    data = _copy_lines(cdata)
    for _ in range(3):
        drop_filters: set[int] = set()
        drop_routes: set[int] = set()
        routes_when: set[int] = set()
        for err in exc.errors():
            loc = tuple(err["loc"])
            if not loc or loc[0] in ("name", "source"):
                return None
            top = loc[0]
            if top == "filters" and len(loc) > 1 and isinstance(loc[1], int):
                drop_filters.add(loc[1])
            elif top == "routes" and len(loc) > 1 and isinstance(loc[1], int):
                (routes_when if len(loc) > 2 and loc[2] == "when" else drop_routes).add(loc[1])
            elif top == "destinations" and len(loc) > 1 and isinstance(data.get("destinations"), dict):
                dests = _copy_lines(data["destinations"])
                dests.pop(loc[1], None)
                data["destinations"] = dests
            else:
                data.pop(top, None)  # an unknown key, a bad description/enabled/storage, a list that is not one …
        if drop_filters and isinstance(data.get("filters"), list):
            data["filters"] = _without_items(data["filters"], drop_filters)
        if isinstance(data.get("routes"), list):
            routes = _copy_lines(data["routes"])
            for i in routes_when - drop_routes:
                if i < len(routes) and isinstance(routes[i], dict):
                    r = _copy_lines(routes[i])
                    r.pop("when", None)
                    routes[i] = r
            data["routes"] = _without_items(routes, drop_routes) if drop_routes else routes
        try:
            return ChannelSpec.model_validate(data), data
        except ValidationError as again:
            exc = again
    return None


def timedelta_of(value: Duration) -> timedelta:
    return timedelta(seconds=parse_duration(value))
