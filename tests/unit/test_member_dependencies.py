"""What deptry cannot see: members share the `pago` namespace, and a watcher image carries one
chain family's libraries.

deptry (in `make lint`) checks each member's third-party imports against its pyproject.toml but
sees only top-level names, and every member's code is under `pago`. So here: each member declares
exactly the other members it imports; and the watcher starts for a family with the other
families' extras absent, as in that family's image (deploy/requirements/watcher-<family>.lock).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = sorted(
    p.parent for p in (*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml"))
)
WATCHER = ROOT / "services" / "watcher"


def _project(member: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    return project


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def _imported_members(member: Path) -> set[str]:
    """``pago-<x>`` for every ``pago.<x>`` the member's source imports (lazy imports included)."""
    found: set[str] = set()
    for path in (member / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = (
                    [f"pago.{alias.name}" for alias in node.names]
                    if node.module == "pago"
                    else [node.module]
                )
            else:
                continue
            found |= {f"pago-{m.split('.')[1]}" for m in modules if m.startswith("pago.")}
    return found


def test_the_members_are_the_makefiles() -> None:
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^MEMBERS\s*:=\s*(.+)$", makefile, re.MULTILINE)
    assert listed
    assert sorted(ROOT / m for m in listed.group(1).split()) == MEMBERS


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_each_member_declares_exactly_the_members_it_imports(member: Path) -> None:
    project = _project(member)
    declared = {_name(r) for r in project["dependencies"] if _name(r).startswith("pago-")}
    imported = _imported_members(member) - {project["name"]}
    assert declared == imported


# The top-level modules each chain family's extra brings: what a watcher of another family must
# run without.
FAMILY_MODULES = {
    "evm": {"web3", "eth_hash", "aiohttp"},
    "tron": {"aiohttp", "base58"},
    "solana": {"solana", "spl", "solders", "httpx"},
}
FAMILY_SOURCE = {
    "evm": "pago.watcher.chains.evm",
    "tron": "pago.watcher.chains.tron",
    "solana": "pago.watcher.chains.solana",
}

_WITHOUT = """
import importlib.abc, sys
absent = set(sys.argv[1].split(","))

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this image)", name=name)
        return None

sys.meta_path.insert(0, Absent())
import importlib
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def test_the_extras_are_the_families_the_factory_builds() -> None:
    extras = _project(WATCHER)["optional-dependencies"]
    assert set(extras) == set(FAMILY_MODULES)
    from pago.common.enums import ChainFamily
    from pago.watcher.chains.factory import BUILDERS

    assert {str(f) for f in BUILDERS} == set(extras) == {str(f) for f in ChainFamily}


@pytest.mark.parametrize("family", sorted(FAMILY_MODULES))
def test_a_watcher_starts_without_the_other_families_libraries(family: str) -> None:
    absent = set().union(*FAMILY_MODULES.values()) - FAMILY_MODULES[family]
    modules = ["pago.watcher.main", FAMILY_SOURCE[family]]
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT, ",".join(sorted(absent)), *modules],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_check_refuses_an_absent_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT, "web3", "pago.watcher.chains.evm"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "not in this image" in result.stderr
