"""Every command the project prints or documents is real: each `ecomml ...` line found in README,
docs/, feature_repo/README.md, the Makefile and the code's messages and docstrings names an existing
command (its --help exits 0), and each `python -m module` names a module that runs something."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml.cli import app

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    ROOT / "README.md",
    ROOT / "Makefile",
    ROOT / "feature_repo" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "ml").rglob("*.py")),
    *sorted((ROOT / "dags").glob("*.py")),
    *sorted((ROOT / "feature_repo").glob("*.py")),
]
ECOMML = re.compile(r"\becomml((?:[ \t]+[a-z][a-z0-9-]*)+)")
PYTHON_M = re.compile(r"python3? -m ([a-zA-Z_][\w.]*)")


def _tree(typer_app) -> dict:
    """{command or group name: None for a command, the group's own tree for a group}."""
    out: dict = {}
    for info in typer_app.registered_commands:
        out[info.name or info.callback.__name__.replace("_", "-")] = None
    for group in typer_app.registered_groups:
        out[group.name] = _tree(group.typer_instance)
    return out


TREE = _tree(app)


def _found(pattern: re.Pattern) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SOURCES:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group(1).strip(), set()).add(str(path.relative_to(ROOT)))
    return found


def _command_path(words: list[str]) -> tuple[list[str], str | None]:
    """The command path the words name and, when they name none, why."""
    node, path = TREE, []
    for word in words:
        if word not in node:
            if node is TREE:
                return path, f"no command or group {word!r}"
            if not path:
                break
            return path, f"group {' '.join(path)!r} has no command {word!r}"
        path.append(word)
        node = node[word]
        if node is None:  # a command: what follows are its arguments
            break
    return path, None


ECOMML_LINES = _found(ECOMML)


def test_the_scan_finds_the_documented_commands():
    heads = {words.split()[0] for words in ECOMML_LINES}
    assert {"demo", "pipeline", "ingest", "features", "warehouse", "recs", "demand", "models"} <= heads, heads


@pytest.mark.parametrize("words", sorted(ECOMML_LINES))
def test_every_printed_ecomml_command_exists(words):
    path, problem = _command_path(words.split())
    where = ", ".join(sorted(ECOMML_LINES[words]))
    assert problem is None, f"`ecomml {words}` ({where}): {problem}"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"`ecomml {' '.join(path)} --help` ({where}): {result.output}"


OUR_MODULES = sorted(m for m in _found(PYTHON_M) if m.split(".")[0] in ("ml", "bench", "dags"))  # not pytest, pip, venv


@pytest.mark.parametrize("module", OUR_MODULES)
def test_every_printed_python_m_module_runs_something(module):
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"`python -m {module}`: no such module"
    source = Path(spec.origin)
    if source.name == "__init__.py":
        source = source.with_name("__main__.py")
        assert source.exists(), f"`python -m {module}`: the package has no __main__.py, it would do nothing"
    else:
        assert '__name__ == "__main__"' in source.read_text(), (
            f"`python -m {module}`: {source} has no __main__ block, it exits 0 doing nothing"
        )
