"""`hub check`: every problem printed as file:line: message, exit 1; clean config exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub import registry
from hub.cli import main
from hub.engine import check
from hub.spec import SourceConfig, load_config, parse_duration
from support import ROOT, write_config

GOOD = """
name: good
source: {type: file, path: in}
routes:
  - {name: r, to: [out]}
destinations:
  out: {type: file, path: "out/{control_id}.hl7"}
"""


def problems_of(tmp_path: Path, channel: str, hub: str = "web: {listen: 127.0.0.1:18080}\n", name: str = "c"):
    cfg = load_config(write_config(tmp_path / "cfg", hub, {name: channel}))
    return [str(p) for p in check(cfg)]


def line_of(problems: list[str], text: str) -> int:
    [p] = [p for p in problems if text in p]
    return int(p.split(":")[1])


def test_the_example_clinic_is_clean(capsys):
    assert main(["check", "--config", str(ROOT / "config")]) == 0
    assert "ok:" in capsys.readouterr().out


def test_unknown_key_is_reported_at_its_line(tmp_path):
    text = GOOD.replace("  out: {type: file, path", "  out: {type: file, colour: red, path")
    probs = problems_of(tmp_path, text)
    assert line_of(probs, "colour: unknown key") == 7
    assert probs[0].startswith(str(tmp_path / "cfg" / "channels" / "c.yaml") + ":7:")


def test_unknown_destination_in_to(tmp_path):
    probs = problems_of(tmp_path, GOOD.replace("to: [out]", "to: [out, nowhere]"))
    assert line_of(probs, "no destination named 'nowhere'") == 5


def test_missing_mapping_table(tmp_path):
    text = GOOD.replace(
        "{name: r, to: [out]}", "{name: r, transforms: [{type: map, path: PV1-2, table: nope.csv}], to: [out]}"
    )
    probs = problems_of(tmp_path, text)
    assert line_of(probs, "mapping table nope.csv not found") == 5


def test_undefined_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("HUB_NOT_SET", raising=False)
    probs = problems_of(tmp_path, GOOD.replace("path: in}", "path: '${HUB_NOT_SET}'}"))
    assert line_of(probs, "${HUB_NOT_SET} is not defined") == 3
    # a default or an env: entry in hub.yaml makes it fine
    assert problems_of(tmp_path, GOOD.replace("path: in}", "path: '${HUB_NOT_SET:-in}'}")) == []
    assert problems_of(tmp_path, GOOD.replace("path: in}", "path: '${HUB_NOT_SET}'}"), "env: {HUB_NOT_SET: in}\n") == []


def test_malformed_yaml_names_file_and_line(tmp_path):
    probs = problems_of(tmp_path, GOOD.replace("routes:", "routes: [\n"))
    assert any("invalid YAML" in p for p in probs)


def test_bad_values_are_explained(tmp_path):
    probs = problems_of(
        tmp_path, GOOD.replace('{type: file, path: "out', '{type: file, queue: {max_attempts: 0}, path: "out')
    )
    assert line_of(probs, "max_attempts") == 7
    probs = problems_of(tmp_path, GOOD.replace("type: file, path: in", "type: ftp, path: in"))
    assert any("unknown source type 'ftp'" in p for p in probs)
    probs = problems_of(tmp_path, GOOD + "filters:\n  - {path: MSH-9, equals: A, in: [B]}\n")
    assert line_of(probs, "exactly one of equals") == 9


class _Listener:
    class Config(SourceConfig):
        listen: str

    def __init__(self, config, ctx):
        pass


def test_duplicate_listen_ports(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._cache, ("source", "listener"), _Listener)
    chan = "name: {n}\nsource: {{type: listener, listen: '127.0.0.1:{port}'}}\n"
    cfg = load_config(
        write_config(
            tmp_path / "cfg",
            "web: {listen: 127.0.0.1:18080}\n",
            {
                "a": chan.format(n="a", port=2575),
                "b": chan.format(n="b", port=2575),
                "c": chan.format(n="c", port=18080),
            },
        )
    )
    probs = [str(p) for p in check(cfg)]
    assert any("b.yaml:2: source.listen 127.0.0.1:2575 is already used by channel a" in p for p in probs)
    assert any("c.yaml:2: source.listen 127.0.0.1:18080 is already used by web.listen" in p for p in probs)


def test_duplicate_channel_names(tmp_path):
    cfg = load_config(write_config(tmp_path / "cfg", "", {"a": GOOD, "b": GOOD}))
    assert any("channel name 'good' is also used" in str(p) for p in check(cfg))


def test_cli_prints_problems_and_exits_1(tmp_path, capsys):
    folder = write_config(tmp_path / "cfg", "", {"c": GOOD.replace("to: [out]", "to: [gone]")})
    assert main(["check", "--config", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{folder / 'channels' / 'c.yaml'}:5: routes[r].to: no destination named 'gone'" in out


@pytest.mark.parametrize(
    "text,seconds", [("30s", 30), ("5m", 300), ("2h", 7200), ("30d", 2592000), ("250ms", 0.25), (7, 7)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


# ---------------------------------------------------------------------------------------- every problem in one run
BROKEN = """\
name: broken
source: {type: mllp, listen: '127.0.0.1:0', bogus: 1}
filters:
  - {path: PID-3..1, exists: true}
  - {path: MSH-9, equals: ADT, in: [x]}
routes:
  - name: r1
    when: {path: 'MSH-99.1x', equals: A}
    transforms:
      - {type: set, path: MSH-55, value: X}
      - {type: copy, from: PID-3.1, to: 'PID-3[1]..2'}
      - {type: nosuch}
    to: [out]
  - name: r2
    to: [missing]
destinations:
  out: {type: memory, wrong: 2}
"""


def test_check_reports_every_problem_of_a_file_in_one_run(tmp_path, capsys):
    cfg = write_config(tmp_path, "", {"broken": BROKEN})
    assert main(["check", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith(str(cfg))]
    found = {int(ln.split(":")[1]): ln for ln in lines}
    assert "exactly one of equals" in found[5]  # the first problem: before the fix, the only one reported
    assert "source.bogus: unknown key" in found[2]
    assert "'PID-3..1'" in found[4]
    assert "'MSH-99.1x'" in found[8]
    assert "MSH-55" in found[10] and "25 fields" in found[10]
    assert "'PID-3[1]..2'" in found[11]
    assert "unknown transform type 'nosuch'" in found[12]
    assert "no destination named 'missing'" in found[15]
    assert "destinations.out.wrong: unknown key" in found[17]
    assert [int(ln.split(":")[1]) for ln in lines] == sorted(found)  # in the file's order
    assert out.strip().endswith(f"{len(lines)} problem(s)")


@pytest.mark.parametrize("path", ["PID-3..1", "MSH-99.1x", "MSH-55", "PID-0", "OBX[3]-5.x"])
def test_hl7_paths_that_address_nothing_are_refused(tmp_path, path):
    channel = (
        "name: c\nsource: {type: memory}\n"
        f"filters:\n  - {{path: '{path}', exists: true}}\n"
        f"routes:\n  - name: r\n    transforms:\n      - {{type: delete, paths: [PID-19, '{path}']}}\n    to: [out]\n"
        "destinations:\n  out: {type: memory}\n"
    )
    problems = [str(p) for p in check(load_config(write_config(tmp_path, "", {"c": channel})))]
    assert len(problems) == 2, problems
    assert ":4: filters.0.path" in problems[0]
    assert ":8: routes[r].transforms[0].paths" in problems[1]


def test_paths_of_other_formats_and_z_segments_are_not_hl7_checked(tmp_path):
    channel = (
        "name: c\nsource: {type: memory, format: x12}\n"
        "filters:\n  - {path: 'NM1[85]03', exists: true}\n"
        "routes:\n  - {name: r, to: [out]}\ndestinations:\n  out: {type: memory}\n"
    )
    z = (
        "name: z\nsource: {type: mllp, listen: '127.0.0.1:0'}\n"
        "filters:\n  - {path: 'ZPD-99.2', exists: true}\n"
        "routes:\n  - name: r\n    transforms:\n      - {type: set, path: MSH-25, value: X}\n    to: [out]\n"
        "destinations:\n  out: {type: memory}\n"
    )
    assert check(load_config(write_config(tmp_path, "", {"c": channel, "z": z}))) == []
