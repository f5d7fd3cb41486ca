"""The import contracts of `make lint` catch what they promise to.

`lint-imports` runs on a tiny tree of packages with the project's root names, checked against the real
pyproject.toml (copied as it is): the clean tree, whose imports follow every allowed edge, passes; each forbidden import
added to it breaks exactly the contracts that forbid it, named in the output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS: list[dict[str, Any]] = CONFIG["contracts"]
ROOTS: list[str] = CONFIG["root_packages"]
RUN_LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"

# The imports the architecture allows, one of each kind, so a contract that forbids too much fails the clean tree.
ALLOWED: dict[str, list[str]] = {
    "cli": ["api", "ingestor", "gateway", "simulators", "migrations", "core"],
    "api": ["core"],
    "ingestor": ["core"],
    "gateway": ["core"],
    "simulators": ["core"],
    "migrations": ["core"],
    "bench": ["api", "gateway", "simulators", "core", "tests"],
    "tests": ["cli", "api", "ingestor", "gateway", "simulators", "migrations", "core", "bench"],
}


def _contract(kind: str, *, source: str | None = None, forbidden: str | None = None) -> str:
    """The name of the one contract of this type (forbidding `forbidden` to `source`)."""
    found = [
        contract["name"]
        for contract in CONTRACTS
        if contract["type"] == kind
        and (source is None or source in contract.get("source_modules", []))
        and (forbidden is None or forbidden in contract.get("forbidden_modules", []))
    ]
    assert len(found) == 1, f"expected one {kind} contract ({source} -> {forbidden}) in pyproject.toml, found {found}"
    return str(found[0])


LAYERS = _contract("layers")
MIGRATIONS_ONLY_CORE = _contract("forbidden", source="migrations", forbidden="api")
NO_TEST_CODE = _contract("forbidden", source="core", forbidden="tests")


def _write_tree(root: Path, extra: tuple[str, str] | None = None) -> None:
    """Each root package with a module importing what ALLOWED lists; `extra` = (importer, imported) on top."""
    for package in ROOTS:
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("", encoding="utf-8")
        imports = [f"import {target}.mod\n" for target in ALLOWED.get(package, [])]
        if extra and extra[0] == package:
            imports.append(f"import {extra[1]}.mod\n")
        (root / package / "mod.py").write_text("".join(imports), encoding="utf-8")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # Wide lines keep contract names whole; no coverage start-up: nothing here runs the project's code.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"}
    }
    env.update(COLUMNS="400", NO_COLOR="1")
    return subprocess.run(  # noqa: S603 -- the installed import-linter on a tree this test wrote
        [sys.executable, "-c", RUN_LINT_IMPORTS, "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _broken(output: str) -> set[str]:
    return {contract["name"] for contract in CONTRACTS if f"{contract['name']} BROKEN" in output}


def test_the_clean_tree_keeps_every_contract(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    result = _lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for contract in CONTRACTS:
        assert f"{contract['name']} KEPT" in output, output


# (importer, imported, the contracts it breaks). Contracts see indirect imports too: migrations imports core, so
# whatever core must not import, migrations must not either; tests import every package, so importing tests
# reaches cli.
FORBIDDEN = [
    ("core", "api", {LAYERS, MIGRATIONS_ONLY_CORE}),
    ("core", "cli", {LAYERS, MIGRATIONS_ONLY_CORE}),
    ("gateway", "cli", {LAYERS}),
    ("simulators", "gateway", {LAYERS}),
    ("api", "ingestor", {LAYERS}),
    ("migrations", "api", {MIGRATIONS_ONLY_CORE}),
    ("migrations", "cli", {MIGRATIONS_ONLY_CORE}),
    ("gateway", "tests", {NO_TEST_CODE, LAYERS}),
    ("cli", "bench", {NO_TEST_CODE}),
    ("migrations", "tests", {NO_TEST_CODE, MIGRATIONS_ONLY_CORE}),
]


@pytest.mark.parametrize(("importer", "imported", "broken"), FORBIDDEN, ids=[f"{a}->{b}" for a, b, _ in FORBIDDEN])
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, importer: str, imported: str, broken: set[str]) -> None:
    _write_tree(tmp_path, extra=(importer, imported))
    result = _lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert _broken(output) == broken, output
    assert f"{importer}.mod -> {imported}.mod" in output, output
