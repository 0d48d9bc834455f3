"""The repository's documents stay true: the generated reference is current, every component is in it, the worked
example of docs/architecture.md runs as written, and the links of README.md and docs/ lead somewhere."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

from hub import cli, reference, registry

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
REFERENCE = ROOT / "docs" / "reference.md"

# A fenced block that names its file after the language: ```python clinic_hub/truncate.py
_BLOCK = re.compile(r"^```(\w+) (\S+)\n(.*?)^```$", re.S | re.M)


def example_blocks() -> dict[str, str]:
    """The worked example's files, by the name each code block gives."""
    return {m.group(2): m.group(3) for m in _BLOCK.finditer(ARCHITECTURE.read_text(encoding="utf-8"))}


# --------------------------------------------------------------------------------------------- the reference
def test_reference_is_what_the_code_generates():
    current = REFERENCE.read_text(encoding="utf-8")
    assert reference.check(current) is None, "docs/reference.md is out of date: run `hub docs` and commit it"


def test_every_registered_component_has_a_section():
    text = REFERENCE.read_text(encoding="utf-8")
    kinds = {kind for kind, _ in registry.BUILTINS}
    for kind in kinds:
        for name in registry.names(kind):
            assert f"### {kind} `{name}`" in text, f"{kind} {name} is not in docs/reference.md"


def test_reference_is_deterministic_and_says_nothing_of_this_machine():
    text = reference.render()
    assert text == reference.render()
    assert " at 0x" not in text
    assert str(ROOT) not in text
    assert str(Path.home()) not in text


def test_hub_docs_check_tells_a_stale_file(tmp_path, capsys):
    out = tmp_path / "reference.md"
    assert cli.main(["docs", "--out", str(out)]) == 0
    assert cli.main(["docs", "--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("| `path` |", "| `paht` |", 1), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["docs", "--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and "hub docs" in err
    assert cli.main(["docs", "--check", "--out", str(tmp_path / "missing.md")]) == 1


# --------------------------------------------------------------------------------------------- the worked example
@pytest.fixture
def clinic(tmp_path, monkeypatch):
    """The example installed as a third-party package (its entry point as pip writes it) and its config folder."""
    blocks = example_blocks()
    for name in ("clinic_hub/truncate.py", "pyproject.toml", "tests/test_truncate.py"):
        assert name in blocks, f"docs/architecture.md lost the example's {name}"
    for name, text in blocks.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (tmp_path / "clinic_hub" / "__init__.py").write_text("", encoding="utf-8")
    project = tomllib.loads(blocks["pyproject.toml"])["project"]
    dist = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    lines = [
        f"[{group}]" + "".join(f"\n{k} = {v}" for k, v in eps.items()) for group, eps in project["entry-points"].items()
    ]
    (dist / "entry_points.txt").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "config" / "hub.yaml").write_text("store: {url: 'sqlite:///var/hub.db'}\n", encoding="utf-8")

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_cache", {})
    yield tmp_path
    for mod in [m for m in sys.modules if m == "clinic_hub" or m.startswith("clinic_hub.")]:
        del sys.modules[mod]


def test_example_is_found_through_its_entry_point(clinic):
    assert "truncate" in registry.names("transform")
    cls = registry.lookup("transform", "truncate")
    assert cls.__module__ == "clinic_hub.truncate"


def test_example_channel_passes_hub_check_and_hub_test(clinic, capsys):
    config = str(clinic / "config")
    assert cli.main(["check", "--config", config]) == 0, capsys.readouterr().out
    assert cli.main(["test", "--config", config]) == 0, capsys.readouterr().out
    assert "PASS lab_adt" in capsys.readouterr().out


def test_example_own_tests_pass(clinic):
    spec = importlib.util.spec_from_file_location("example_test_truncate", clinic / "tests" / "test_truncate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, n) for n in sorted(vars(module)) if n.startswith("test_")]
    assert tests
    for test in tests:
        test()


def test_example_a_typo_is_a_hub_check_problem(clinic, capsys):
    channel = clinic / "config" / "channels" / "lab_adt.yaml"
    channel.write_text(channel.read_text(encoding="utf-8").replace("max_length", "max_lenght"), encoding="utf-8")
    assert cli.main(["check", "--config", str(clinic / "config")]) == 1
    assert "max_lenght: unknown key" in capsys.readouterr().out


def test_example_appears_in_the_generated_reference(clinic):
    text = reference.render()
    assert "### transform `truncate`" in text
    assert "| `max_length` | `int (≥ 1)` |  | yes | Most characters kept (after unescaping). |" in text


# --------------------------------------------------------------------------------------------- README and links
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize(
    "doc",
    [
        "README.md",
        "docs/architecture.md",
        "docs/guide.md",
        "docs/CONTRIBUTING.md",
        "docs/CHANGELOG.md",
        "docs/reference.md",
    ],
)
def test_relative_links_lead_to_files_of_the_repository(doc):
    path = ROOT / doc
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc} links outside the repository: {target}"
        assert resolved.exists(), f"{doc} links to a missing {target}"


def test_readme_names_every_hub_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sub = next(a for a in cli.parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[attr-defined]
        assert f"`hub {name}" in readme, f"README.md does not mention `hub {name}`"


def test_readme_lists_every_registered_connector_and_transform():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for kind in ("source", "destination", "transform", "assembler"):
        for name in registry.names(kind):
            assert f"`{name}`" in readme, f"README.md does not list the {kind} {name}"
