"""Every exercise label that a book page names (the syllabus assigns them) exists in a chapter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABEL = re.compile(r"\bch\d\d-ex-[a-z0-9-]*[a-z0-9]")


def _defined() -> set[str]:
    found = set()
    for py in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"):
        found |= set(re.findall(r":label: (ch\d\d-ex-[a-z0-9-]+)", py.read_text()))
    return found


@pytest.mark.parametrize("page", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.name)
def test_pages_name_only_existing_exercises(page: Path):
    missing = sorted(set(LABEL.findall(page.read_text())) - _defined())
    assert not missing, f"{page.name} names exercises no chapter defines: {missing}"
