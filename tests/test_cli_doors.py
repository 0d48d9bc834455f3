"""The command line refuses what it cannot do and records what it shows (issue 13): `hub status` outside a project
folder, `hub messages --status banana`, `hub replay` of a message that does not exist, and the audit log of
command-line actions (the same log the web app writes, with the OS user as actor)."""

from __future__ import annotations

import getpass
import json

import pytest

from hub.cli import main
from hub.engine import open_store
from hub.spec import load_config
from hub.store import NewDelivery, NewMessage
from hub.store.auth import AuthStore
from support import write_config

HUB = "store: {{url: 'sqlite:///{db}'}}\nweb: {{enabled: false}}\n"
CHANNEL = """
name: relay
source: {type: memory, format: raw}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""


@pytest.fixture
def project(tmp_path):
    cfg = write_config(tmp_path / "cfg", HUB.format(db=tmp_path / "hub.db"), {"relay": CHANNEL})
    store = open_store(load_config(cfg))
    [a] = store.accept(
        [
            NewMessage(
                "relay",
                b"MSH|one",
                "raw",
                meta={"control_id": "C1", "patient_id": "MRN7"},
                deliveries=[NewDelivery("out")],
            )
        ]
    )
    store.close()
    return cfg, a.message_id


def _audit(cfg):
    store = open_store(load_config(cfg))
    try:
        return AuthStore(store).search_audit()
    finally:
        store.close()


def test_status_outside_a_project_folder_says_so_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HUB_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["status"])
    assert exc.value.code not in (0, None)
    assert "no config" in str(exc.value.code)
    assert list(tmp_path.iterdir()) == []  # no ./config/var/hub.db
    assert capsys.readouterr().out == ""


def test_messages_refuses_an_unknown_status_naming_the_valid_ones(project, capsys):
    cfg, _ = project
    with pytest.raises(SystemExit) as exc:
        main(["messages", "--status", "banana", "--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "banana" in err and "accepted" in err and "dead" in err
    assert main(["messages", "--status", "queued", "--config", str(cfg)]) == 0


def test_replay_of_a_message_that_does_not_exist_says_so(project, capsys):
    cfg, mid = project
    assert main(["replay", "999999", "--config", str(cfg)]) == 1
    captured = capsys.readouterr()
    assert "no message 999999" in captured.err and "queued" not in captured.out
    assert main(["replay", str(mid), "999999", "--config", str(cfg)]) == 1  # nothing half-done
    assert "999999" in capsys.readouterr().err


def test_command_line_actions_are_in_the_audit_log(project, capsys, monkeypatch):
    cfg, mid = project
    actor = f"cli:{getpass.getuser()}"
    args = ["--config", str(cfg)]
    assert _audit(cfg) == []

    assert main(["show", str(mid), *args]) == 0
    [row] = _audit(cfg)
    assert (
        row["username"] == actor
        and row["action"] == "view_message"
        and row["message_id"] == mid
        and row["channel"] == "relay"
    )

    assert main(["messages", "--patient-id", "MRN7", *args]) == 0
    assert main(["messages", "--text", "one", *args]) == 0
    assert main(["replay", str(mid), *args]) == 0
    assert main(["prune", "--older-than", "30d", *args]) == 0
    monkeypatch.setenv("HUB_PASSWORD", "a synthetic test password 42")
    assert main(["user", "add", "ops", "--role", "operator", *args]) == 0
    assert main(["user", "token", "ops", *args]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]

    rows = _audit(cfg)
    assert all(r["username"] == actor for r in rows)
    actions = sorted(r["action"] for r in rows)
    assert actions == sorted(["view_message", "search", "search", "replay", "prune", "user_add", "token_create"])
    searches = [
        json.loads(r["detail"]) if isinstance(r["detail"], str) else r["detail"]
        for r in rows
        if r["action"] == "search"
    ]
    assert any(d.get("patient_id") == "MRN7" for d in searches) and any(d.get("text") is True for d in searches)
    assert all("one" not in json.dumps(d) for d in searches)  # the searched text is not kept, only that there was one
    assert token not in json.dumps(rows, default=str)  # never a secret
