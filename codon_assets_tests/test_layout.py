"""The project's structural rules, checked on the source: a domain core without Dagster, thin assets, one
configuration module, modules of a readable size."""

import ast
import re
from pathlib import Path

import pytest

from codon_assets_tests.conftest import ROOT

PACKAGES = [ROOT / "codon_assets", ROOT / "resources"]
MAX_MODULE_LINES = 450
MAX_ASSET_BODY_LINES = 40


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in package.rglob("*.py"))


def test_the_core_imports_nothing_of_dagster_the_cli_or_the_resources():
    for path in (ROOT / "codon_assets" / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not re.match(r"(dagster|resources|codon_assets\.(cli|defs|definitions))\b", name), (path, name)


def test_only_the_settings_module_reads_the_environment():
    readers = {path.relative_to(ROOT).as_posix() for path in sources()
               if re.search(r"os\.environ(?!\.setdefault)|os\.getenv", path.read_text())}
    # settings.py; the CLI entry point sets DAGSTER_HOME for the runs it starts.
    assert readers <= {"codon_assets/settings.py", "codon_assets/cli/common.py"}, readers


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_is_over_the_size_limit(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_every_asset_body_is_thin():
    for path in (ROOT / "codon_assets" / "defs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    ast.unparse(d).split("(")[0].endswith(("asset", "multi_asset")) for d in node.decorator_list):
                body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body
                lines = body[-1].end_lineno - body[0].lineno + 1
                assert lines <= MAX_ASSET_BODY_LINES, (path.name, node.name, lines)
