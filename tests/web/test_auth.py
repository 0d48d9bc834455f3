"""Users, passwords, tokens, sessions and the audit log in the store (SQLite and PostgreSQL), and `hub user`."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import inspect

from hub.cli import main
from hub.store.auth import PERMISSIONS, ROLES, AuditEntry, AuthStore, LastAdminError, hash_password, verify_password
from support import write_config

PW = "a-long-synthetic-pass"


def test_passwords_are_hashed_with_scrypt_and_salted():
    h1, h2 = hash_password(PW), hash_password(PW)
    assert h1.startswith("scrypt$32768$8$1$") and h1 != h2 and PW not in h1
    assert verify_password(PW, h1) and verify_password(PW, h2)
    assert not verify_password(PW + "x", h1)
    assert not verify_password(PW, None) and not verify_password(PW, "md5$abc") and not verify_password(PW, "scrypt$x")


def test_roles_and_their_permissions():
    assert ROLES == ("viewer", "operator", "analyst", "admin", "sender")
    assert "content" not in PERMISSIONS["viewer"] and "content" not in PERMISSIONS["analyst"]
    assert {"content", "replay"} <= PERMISSIONS["operator"] and "channels" not in PERMISSIONS["operator"]
    assert "channels" in PERMISSIONS["analyst"] and "users" not in PERMISSIONS["analyst"]
    # a sending system posts messages and sees nothing; posting is for senders only, not for people
    assert PERMISSIONS["sender"] == {"send"} and not any("send" in PERMISSIONS[r] for r in ROLES if r != "sender")
    assert PERMISSIONS["admin"] >= set().union(*PERMISSIONS.values()) - {"send"}


def test_the_last_enabled_admin_can_be_neither_disabled_nor_demoted(store):
    auth = AuthStore(store)
    auth.add_user("root", "admin")
    for change in ({"disabled": True}, {"role": "viewer"}, {"role": "sender", "disabled": True}):
        with pytest.raises(LastAdminError, match="root is the last enabled admin"):
            auth.update_user("root", **change)
    assert auth.get_user("root").role == "admin" and not auth.get_user("root").disabled
    auth.update_user("root", password=PW)  # other changes still go through
    auth.add_user("old", "admin")
    auth.update_user("old", disabled=True)  # a second admin may go …
    with pytest.raises(LastAdminError):
        auth.update_user("root", role="operator")  # … a disabled one does not count
    auth.update_user("old", role="viewer")  # demoting a disabled admin leaves root in place: fine
    assert [u.name for u in auth.list_users() if u.role == "admin" and not u.disabled] == ["root"]


def test_two_admins_removing_each_other_at_once_leave_one(store_url):
    """Two nodes (two stores on one database), each disabling the other admin at the same moment: one wins."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from hub.errors import StoreError
    from hub.store import Store

    one, two = Store(store_url, node="one").open(), Store(store_url, node="two").open()
    try:
        a1, a2 = AuthStore(one), AuthStore(two)
        a1.add_user("ann", "admin")
        a1.add_user("bob", "admin")
        for _ in range(5):
            gate = Barrier(2)

            def change(auth: AuthStore, name: str, disabled: bool, gate: Barrier = gate) -> str:
                gate.wait()
                try:
                    auth.update_user(name, disabled=disabled)
                    return "done"
                except LastAdminError:
                    return "refused"
                except StoreError:  # SQLite: the second writer found the database busy — also not applied
                    return "failed"

            with ThreadPoolExecutor(2) as pool:
                got = sorted(
                    f.result() for f in [pool.submit(change, a1, "ann", True), pool.submit(change, a2, "bob", True)]
                )
            assert got.count("done") <= 1
            enabled = [u.name for u in a1.list_users() if u.role == "admin" and not u.disabled]
            assert len(enabled) >= 1
            for name in ("ann", "bob"):
                a1.update_user(name, disabled=False)
    finally:
        one.close()
        two.close()


def test_migration_adds_the_tables(store):
    tables = set(inspect(store.engine).get_table_names())
    assert {"users", "api_tokens", "sessions", "audit_log", "messages"} <= tables


def test_users_tokens_sessions_and_audit(store):
    auth = AuthStore(store)
    ann = auth.add_user("ann", "operator", PW)
    with pytest.raises(ValueError, match="already exists"):
        auth.add_user("ann", "viewer", PW)
    with pytest.raises(ValueError, match="at least 10"):
        auth.add_user("bob", "viewer", "short")
    with pytest.raises(ValueError, match="unknown role"):
        auth.add_user("bob", "root", PW)
    with pytest.raises(ValueError, match="user name"):
        auth.add_user("bad name!", "viewer", PW)
    assert auth.authenticate("ann", PW) == ann
    assert auth.authenticate("ann", "wrong-password-here") is None
    assert auth.authenticate("nobody", PW) is None
    bot = auth.add_user("prometheus", "viewer")  # token only
    assert not bot.has_password and auth.authenticate("prometheus", "") is None

    token = auth.create_token("prometheus", label="scraper")
    assert token.startswith("hub_") and auth.user_for_token(token).name == "prometheus"
    assert auth.user_for_token(token + "x") is None
    listed = auth.list_tokens("prometheus")
    assert listed[0]["label"] == "scraper" and listed[0]["revoked"] is False and "token_hash" not in listed[0]
    assert auth.revoke_token(listed[0]["id"]) and auth.user_for_token(token) is None
    short = auth.create_token("ann", ttl=0.001)
    time.sleep(0.01)
    assert auth.user_for_token(short) is None  # expired

    cookie, csrf = auth.create_session(ann, ttl=60)
    assert auth.session(cookie) == (ann, csrf)
    auth.update_user("ann", role="viewer")  # a changed login ends its sessions
    assert auth.session(cookie) is None
    cookie, _ = auth.create_session(auth.get_user("ann"), ttl=60)
    auth.update_user("ann", disabled=True)
    assert auth.session(cookie) is None and auth.authenticate("ann", PW) is None
    auth.update_user("ann", disabled=False, password="another-long-pass")
    assert auth.authenticate("ann", "another-long-pass").role == "viewer"
    gone, _ = auth.create_session(auth.get_user("ann"), ttl=0.001)
    time.sleep(0.01)
    assert auth.session(gone) is None
    with pytest.raises(KeyError):
        auth.update_user("ghost", role="viewer")

    auth.audit(AuditEntry("ann", "view_message", role="viewer", message_id=7, channel="adt", remote="127.0.0.1"))
    auth.audit(AuditEntry("ann", "replay", role="operator", message_id=7, channel="adt", detail={"queued": 2}))
    auth.audit(AuditEntry("bob", "pause", channel="lab"))
    assert [a["action"] for a in auth.search_audit()] == ["pause", "replay", "view_message"]
    assert [a["action"] for a in auth.search_audit(username="ann", message_id=7)] == ["replay", "view_message"]
    assert auth.search_audit(action="replay")[0]["detail"] == {"queued": 2}
    assert auth.search_audit(channel="lab")[0]["username"] == "bob"
    assert auth.search_audit(since=time.time() + 10) == []
    first = auth.search_audit(limit=1)
    assert len(auth.search_audit(before_id=first[0]["id"])) == 2


def test_first_admin_comes_from_the_environment_only_when_there_is_no_user(store):
    auth = AuthStore(store)
    assert auth.ensure_admin("root", PW) is True
    assert auth.get_user("root").role == "admin"
    assert auth.ensure_admin("other", PW) is False and auth.get_user("other") is None


def cfg_folder(tmp_path):
    return write_config(tmp_path / "cfg", f"store: {{url: 'sqlite:///{tmp_path / 'hub.db'}'}}\n", {})


def test_hub_user_add_reads_the_password_from_the_environment(tmp_path, monkeypatch, capsys):
    folder = cfg_folder(tmp_path)
    monkeypatch.setenv("HUB_PASSWORD", PW)
    assert main(["user", "add", "ann", "--role", "admin", "--config", str(folder)]) == 0
    assert "added ann (admin)" in capsys.readouterr().out
    assert main(["user", "add", "ann", "--role", "admin", "--config", str(folder)]) == 1
    assert "already exists" in capsys.readouterr().err
    monkeypatch.setenv("HUB_PASSWORD", "short")
    assert main(["user", "add", "bob", "--role", "viewer", "--config", str(folder)]) == 1
    assert main(["user", "token", "ann", "--label", "ci", "--config", str(folder)]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["user", "token", "ghost", "--config", str(folder)]) == 1
    assert main(["user", "add", "prom", "--role", "viewer", "--no-password", "--config", str(folder)]) == 0
    assert main(["user", "list", "--config", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "ann" in out and "prom" in out and "token only" in out

    from hub.store import Store

    s = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:
        assert AuthStore(s).user_for_token(token).name == "ann"
        assert AuthStore(s).authenticate("ann", PW) is not None
    finally:
        s.close()


def test_hub_user_add_asks_on_a_terminal_and_never_uses_a_default(tmp_path, monkeypatch, capsys):
    folder = cfg_folder(tmp_path)
    monkeypatch.delenv("HUB_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(SystemExit, match="HUB_PASSWORD"):
        main(["user", "add", "ann", "--role", "admin", "--config", str(folder)])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter([PW, PW + "!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(SystemExit, match="differ"):
        main(["user", "add", "ann", "--role", "admin", "--config", str(folder)])
    answers = iter([PW, PW])
    assert main(["user", "add", "ann", "--role", "admin", "--config", str(folder)]) == 0
