"""Users, roles, API tokens, browser sessions and the audit log, kept in the hub's store.

* Passwords are hashed with scrypt (``hashlib.scrypt``, a memory-hard KDF; parameters are kept in the hash, so
  they can be raised later without breaking old hashes). There is no default password anywhere: the first admin
  comes from ``hub user add`` or from ``HUB_ADMIN_USER``/``HUB_ADMIN_PASSWORD`` at start.
* API tokens and session cookies are random (256 bits); only their SHA-256 is stored, so a copy of the
  database does not hand out logins. A token is shown once, when it is made.
* The audit log records who did what, when, to which message (never the content).

Roles (one per user) and what they may do:

========  ======================================================================================
viewer    channels, queues, counts and message metadata; no message content, no patient ids
operator  viewer + message content (raw, per destination, responses) + replay
analyst   viewer + channels: pause, resume, check and reload the configuration
admin     everything, plus users, tokens and the audit log
sender    only: post messages to the hub's HTTP sources (``POST /fhir/{channel}``) — a machine account for a
          sending system; a channel may name the senders it takes (``source: {type: fhir, senders: [ehr]}``)
========  ======================================================================================

No change leaves the hub without an enabled admin: :meth:`AuthStore.update_user` refuses (:class:`LastAdminError`)
to disable or demote the last one, checked in the same transaction as the change (two admins demoting each
other at the same moment cannot both succeed; on PostgreSQL the enabled admins' rows are locked).

Writes go through the store's group writer (:meth:`Store.run_write`); reads use the store's engine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from hub.errors import StoreError
from hub.store.repository import Repository
from hub.store.schema import api_tokens, audit_log, sessions, users

__all__ = [
    "ROLES",
    "PERMISSIONS",
    "User",
    "AuditEntry",
    "AuthStore",
    "hash_password",
    "verify_password",
    "check_password_strength",
    "MIN_PASSWORD_LENGTH",
    "LastAdminError",
]

ROLES = ("viewer", "operator", "analyst", "admin", "sender")
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"view"}),
    "operator": frozenset({"view", "content", "replay"}),
    "analyst": frozenset({"view", "channels"}),
    "admin": frozenset({"view", "content", "replay", "channels", "users", "audit"}),
    "sender": frozenset({"send"}),  # a sending system: posts messages, sees nothing
}
MIN_PASSWORD_LENGTH = 10
_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,100}$")

# scrypt: N=2^15, r=8, p=1 uses 32 MiB and ~0.1 s per hash here — slow for a guesser, fine for a login.
_N, _R, _P, _DKLEN = 2**15, 8, 1, 32


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64)."""
    salt = os.urandom(16)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=128 * r * n * 2)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, encoded: str | None) -> bool:
    if not encoded:
        return False
    try:
        kind, n, r, p, salt, want = encoded.split("$")
        if kind != "scrypt":
            return False
        ni, ri, pi = int(n), int(r), int(p)
        dk = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=ni,
            r=ri,
            p=pi,
            dklen=_DKLEN,
            maxmem=128 * ri * ni * 2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(dk, base64.b64decode(want))


_DUMMY_HASH: str | None = None


def _burn(password: str) -> None:
    """Spend the time of a real check, so a login for an unknown user takes as long as a wrong password."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(8))
    verify_password(password, _DUMMY_HASH)


def check_password_strength(password: str) -> None:
    """Raise ValueError for a password too weak to keep (length is what matters; no composition rules)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() != password or len(set(password)) < 4:
        raise ValueError("that password is too easy to guess")


class LastAdminError(ValueError):
    """The change would leave the hub without an enabled admin (nobody could manage users any more)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool = False
    has_password: bool = True
    created_at: float = 0.0

    @property
    def permissions(self) -> frozenset[str]:
        return PERMISSIONS.get(self.role, frozenset())

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "has_password": self.has_password,
            "created_at": self.created_at,
            "permissions": sorted(self.permissions),
        }


@dataclass
class AuditEntry:
    username: str
    action: str
    role: str | None = None
    message_id: int | None = None
    channel: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    remote: str | None = None


def _user(row: Any) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=row.role,
        disabled=bool(row.disabled),
        has_password=row.password_hash is not None,
        created_at=row.created_at,
    )


class AuthStore(Repository):
    """Users, tokens, sessions and the audit log on top of a :class:`~hub.store.Store`."""

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, role: str, password: str | None = None) -> User:
        """Create a user. ``password`` None: a token-only user (no login). Raises ValueError when invalid or taken."""
        if not _NAME.match(name):
            raise ValueError("a user name is 1-100 letters, digits or _ . @ -")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        pw_hash = None
        if password is not None:
            check_password_strength(password)
            pw_hash = hash_password(password)
        now = time.time()

        def op(conn: Connection) -> int | None:
            if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
                return None  # not raised here: an exception would abort the writer's whole batch
            res = conn.execute(
                insert(users).values(
                    name=name, role=role, password_hash=pw_hash, disabled=0, created_at=now, updated_at=now
                )
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

        try:
            uid = self._write(op)
        except StoreError as exc:
            if "unique" in str(exc).lower():  # another node made it at the same moment
                raise ValueError(f"user {name!r} already exists") from None
            raise
        if uid is None:
            raise ValueError(f"user {name!r} already exists")
        return User(uid, name, role, False, pw_hash is not None, now)

    def update_user(
        self, name: str, *, role: str | None = None, password: str | None = None, disabled: bool | None = None
    ) -> User:
        values: dict[str, Any] = {"updated_at": time.time()}
        if role is not None:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
            values["role"] = role
        if password is not None:
            check_password_strength(password)
            values["password_hash"] = hash_password(password)
        if disabled is not None:
            values["disabled"] = 1 if disabled else 0

        def op(conn: Connection) -> bool | str:
            u = users.c
            stmt = update(users).where(u.name == name)
            if (role is not None and role != "admin") or disabled:
                # Never the last enabled admin, decided by the UPDATE itself (atomic on SQLite, also against the
                # `hub` CLI in another process); on PostgreSQL the enabled admins' rows are locked first, so a
                # change on another node waits for this one and then counts again.
                conn.execute(select(u.id).where(u.role == "admin", u.disabled == 0).with_for_update())
                others = (
                    select(func.count()).select_from(users).where(u.role == "admin", u.disabled == 0, u.name != name)
                )
                stmt = stmt.where(or_(u.role != "admin", u.disabled != 0, others.scalar_subquery() > 0))
            res = conn.execute(stmt.values(**values))
            if not res.rowcount:
                exists = conn.execute(select(u.id).where(u.name == name)).first() is not None
                return "last admin" if exists else False  # not raised here: an exception would abort the writer's batch
            if password is not None or disabled or role is not None:  # a changed login ends its sessions
                uid = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
                conn.execute(delete(sessions).where(sessions.c.user_id == uid))
            return True

        done = self._write(op)
        if done == "last admin":
            raise LastAdminError(
                f"{name} is the last enabled admin: make another admin first "
                "(the hub would have nobody to manage users)"
            )
        if not done:
            raise KeyError(name)
        user = self.get_user(name)
        assert user is not None
        return user

    def get_user(self, name: str) -> User | None:
        row = self._read(lambda conn: conn.execute(select(users).where(users.c.name == name)).first())
        return _user(row) if row is not None else None

    def list_users(self) -> list[User]:
        return [_user(r) for r in self._read(lambda conn: list(conn.execute(select(users).order_by(users.c.name))))]

    def count_users(self, role: str | None = None) -> int:
        q = select(func.count()).select_from(users)
        if role is not None:
            q = q.where(users.c.role == role, users.c.disabled == 0)
        return int(self._read(lambda conn: conn.execute(q).scalar()) or 0)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user, when the name and password match an enabled user with a password; else None."""
        row = self._read(lambda conn: conn.execute(select(users).where(users.c.name == name)).first())
        if row is None or row.password_hash is None:
            _burn(password)
            return None
        if not verify_password(password, row.password_hash) or row.disabled:
            return None
        return _user(row)

    def ensure_admin(self, name: str, password: str) -> bool:
        """Create the first admin (from the environment) when no user exists yet. True when it was created."""
        if self.count_users() > 0:
            return False
        try:
            self.add_user(name, "admin", password)
        except ValueError as exc:
            if "already exists" in str(exc):
                return False
            raise
        return True

    # ------------------------------------------------------------------ API tokens
    def create_token(self, name: str, *, label: str | None = None, ttl: float | None = None) -> str:
        """A new API token for user ``name`` (shown once: only its hash is kept)."""
        user = self.get_user(name)
        if user is None:
            raise KeyError(name)
        token = "hub_" + secrets.token_urlsafe(32)
        now = time.time()
        self._write(
            lambda conn: conn.execute(
                insert(api_tokens).values(
                    user_id=user.id,
                    token_hash=_digest(token),
                    label=(label or "")[:100] or None,
                    created_at=now,
                    expires_at=now + ttl if ttl else None,
                    revoked=0,
                )
            )
        )
        return token

    def list_tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        t, u = api_tokens.c, users.c
        q = select(t.id, u.name.label("user"), t.label, t.created_at, t.expires_at, t.revoked).join(
            users, u.id == t.user_id
        )
        if name is not None:
            q = q.where(u.name == name)
        rows = self._read(lambda conn: [dict(r._mapping) for r in conn.execute(q.order_by(t.id))])
        for r in rows:
            r["revoked"] = bool(r["revoked"])
        return rows

    def revoke_token(self, token_id: int) -> bool:
        return bool(
            self._write(
                lambda conn: (
                    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(revoked=1)).rowcount
                )
            )
        )

    def user_for_token(self, token: str) -> User | None:
        now = time.time()
        t = api_tokens.c

        def fn(conn: Connection) -> Any:
            return conn.execute(
                select(users)
                .join(api_tokens, t.user_id == users.c.id)
                .where(t.token_hash == _digest(token), t.revoked == 0)
                .where((t.expires_at.is_(None)) | (t.expires_at > now))
            ).first()

        row = self._read(fn)
        if row is None or row.disabled:
            return None
        return _user(row)

    # ------------------------------------------------------------------ sessions
    def create_session(self, user: User, ttl: float) -> tuple[str, str]:
        """A new session for ``user``: (cookie value, CSRF token). Expired sessions are swept at the same time."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = time.time()

        def op(conn: Connection) -> None:
            conn.execute(delete(sessions).where(sessions.c.expires_at < now))
            conn.execute(
                insert(sessions).values(
                    token_hash=_digest(token), user_id=user.id, csrf=csrf, created_at=now, expires_at=now + ttl
                )
            )

        self._write(op)
        return token, csrf

    def session(self, token: str) -> tuple[User, str] | None:
        """(user, CSRF token) of a live session, or None."""
        now = time.time()
        s = sessions.c

        def fn(conn: Connection) -> Any:
            return conn.execute(
                select(users, s.csrf)
                .join(sessions, s.user_id == users.c.id)
                .where(s.token_hash == _digest(token), s.expires_at > now)
            ).first()

        row = self._read(fn)
        if row is None or row.disabled:
            return None
        return _user(row), row.csrf

    def end_session(self, token: str) -> None:
        self._write(lambda conn: conn.execute(delete(sessions).where(sessions.c.token_hash == _digest(token))))

    # ------------------------------------------------------------------ audit
    def audit(self, entry: AuditEntry) -> None:
        row = {
            "at": time.time(),
            "username": entry.username[:100],
            "role": entry.role,
            "action": entry.action[:40],
            "message_id": entry.message_id,
            "channel": (entry.channel or None) and entry.channel[:100],
            "detail": json.dumps(entry.detail, default=str, sort_keys=True) if entry.detail else None,
            "remote": (entry.remote or None) and entry.remote[:100],
        }
        self._write(lambda conn: conn.execute(insert(audit_log).values(**row)))

    def search_audit(
        self,
        *,
        username: str | None = None,
        action: str | None = None,
        message_id: int | None = None,
        channel: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        a = audit_log.c
        q = select(audit_log)
        if username:
            q = q.where(a.username == username)
        if action:
            q = q.where(a.action == action)
        if message_id is not None:
            q = q.where(a.message_id == message_id)
        if channel:
            q = q.where(a.channel == channel)
        if since is not None:
            q = q.where(a.at >= since)
        if until is not None:
            q = q.where(a.at < until)
        if before_id is not None:
            q = q.where(a.id < before_id)
        q = q.order_by(a.id.desc()).limit(max(1, min(limit, 1000)))
        rows = self._read(lambda conn: [dict(r._mapping) for r in conn.execute(q)])
        for r in rows:
            r["detail"] = json.loads(r["detail"]) if r["detail"] else {}
        return rows
