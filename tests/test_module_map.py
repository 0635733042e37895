"""The module map (dlbook/__init__.py and CONTRIBUTING.md) names every module of src/dlbook."""

from __future__ import annotations

import re
from pathlib import Path

import dlbook

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dlbook"


def modules() -> list[str]:
    """Every module and subpackage of dlbook, as ``dlbook.x`` or ``dlbook.nn.y`` (not their parts)."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem != "__init__":
            found.append(f"dlbook.{path.stem}")
    for sub in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        found.append(f"dlbook.{sub.name}")
        if sub.name == "nn":  # the network parts are listed one by one; exercises.chNN are not
            found += [f"dlbook.nn.{p.stem}" for p in sorted(sub.glob("*.py")) if p.stem != "__init__"]
    return found


def mapped(text: str) -> set[str]:
    """The modules a map's rows name: each row starts with ``dlbook.x`` (in a table or a list)."""
    return set(re.findall(r"^\|?\s*`?`?(dlbook(?:\.[a-z0-9_]+)+)`?`?\s", text, flags=re.MULTILINE))


def test_every_module_is_in_the_package_docstring_map():
    missing = sorted(set(modules()) - {"dlbook.nn"} - mapped(dlbook.__doc__))
    assert not missing, f"add these to the module map in src/dlbook/__init__.py: {missing}"


def test_every_module_is_in_the_contributing_map():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    missing = sorted(set(modules()) - {"dlbook.nn"} - mapped(text))
    assert not missing, f"add these to the module map in CONTRIBUTING.md: {missing}"


def test_the_map_check_can_fail():
    assert mapped("dlbook.env   1   every chapter\n") == {"dlbook.env"}
    assert "dlbook.env" not in mapped("see dlbook.env for details\n")
    assert "dlbook.nn.conv" in modules() and "dlbook.nn" in modules()
